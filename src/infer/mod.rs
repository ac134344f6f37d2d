//! Inference: loading trained models, sampling from them, and keeping a few loaded.

pub mod engine;
pub mod registry;
pub mod sampler;
