//! Fine-tuning jobs: their states and the rules for moving between them.

pub mod status;
pub mod validation;
