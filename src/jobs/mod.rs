//! Fine-tuning jobs beyond their rows: the `validating_files` step, the metric series, and what
//! a finished job publishes. The API and the worker both build on these.

pub mod metrics;
pub mod results;
pub mod transition;
pub mod validation;
