//! Wick: a training service for language models.
//!
//! # Layout
//! - [`spec`]: the job specification shared by the API, the scheduler and the trainer.
pub mod spec;
