//! Wick: a training service for language models.
//!
//! # Layout
//! - [`app`]: builds the service (store, blobs, listener) and runs it; [`config`] its settings.
//! - [`api`]: the HTTP API, one module per resource; [`auth`] the bearer-key extractor;
//!   [`error`] the one error type that crosses HTTP.
//! - [`store`]: Postgres or SQLite through sqlx; [`blob`]: large bytes through object_store.
//! - [`datasets`]: streaming validation of uploaded JSONL.
//! - [`spec`]: the job specification shared by the API, the scheduler and the trainer;
//!   [`jobs`]: job states; [`catalog`]: the models jobs start from.
//! - [`model`]: the Llama-family network (Llama, Qwen2, Mistral), its config and presets, and
//!   Hugging Face safetensors I/O.
//! - [`tokenizer`]: loading a `tokenizer.json`, training a byte-level BPE from scratch.
//! - [`train`]: the synchronous training engine: data, loss, AdamW, schedule, checkpoints,
//!   progress reporting, the training loop (`train::run_job`) and the cost estimate.
//! - [`chat`]: chat templates; [`infer`]: loaded models and sampling for `/v1/chat/completions`.
//! - [`worker`]: slots that claim jobs and run each in a child process; [`stream`]: live updates
//!   to watchers.
//! - [`cli`]: the `wick` command line; [`cli_train`]: `wick train` and `wick estimate`;
//!   [`telemetry`]: logging.

pub mod api;
pub mod app;
pub mod auth;
pub mod blob;
pub mod catalog;
pub mod chat;
pub mod cli;
pub mod cli_train;
pub mod config;
pub mod datasets;
pub mod error;
pub mod ids;
pub mod infer;
pub mod jobs;
pub mod model;
pub mod spec;
pub mod store;
pub mod stream;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod tokenizer;
pub mod train;
pub mod worker;
