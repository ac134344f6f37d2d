//! Wick: a training service for language models.
//!
//! # Layout
//! - [`spec`]: the job specification shared by the API, the scheduler and the trainer.
//! - [`model`]: the Llama-family network (Llama, Qwen2, Mistral), its config and presets, and
//!   Hugging Face safetensors I/O.
//! - [`tokenizer`]: loading a `tokenizer.json`, training a byte-level BPE from scratch.
//! - [`train`]: the synchronous training engine: data, loss, AdamW, schedule, checkpoints,
//!   progress reporting, the training loop (`train::run_job`) and the cost estimate.
//! - [`cli_train`]: `wick train` and `wick estimate`.
pub mod cli_train;
pub mod model;
pub mod spec;
pub mod tokenizer;
pub mod train;
