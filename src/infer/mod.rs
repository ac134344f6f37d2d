//! Inference: loading trained models (and checkpoints), sampling from them, and keeping a few
//! loaded.

pub mod checkpoint;
pub mod engine;
pub mod registry;
pub mod sampler;
