//! Wick: a training service for language models.
//!
//! # Layout
//! The modules form layers; each uses only layers below it (`tests/layering.rs` keeps it so).
//! From the top:
//! - [`cli`] (the `wick` command line), [`cli_train`] (`wick train`, `wick estimate`),
//!   [`cli_clean`] (`wick clean`) and [`cli_export`] (`wick export`);
//! - [`app`]: the composition root: builds the [`state`], serves the API beside the worker slots;
//! - [`api`] (the HTTP API, one module per resource, with [`auth`] and [`error`], the one error
//!   type that crosses HTTP) and [`worker`] (slots that claim jobs and run each in a child
//!   process), the two front doors;
//! - [`state`]: what handlers and slots share (store, blobs, settings, hub, loaded models);
//! - [`jobs`] (validation before queueing, the metric series, publishing results), [`catalog`]
//!   (the models a job may start from, one `resolve`), [`retention`] (deleting models' blobs, the
//!   garbage collector), [`tenants`] (per-organization limits as
//!   the API applies them), [`cleaning`] (cleaned files written in
//!   the background), [`stream`] (live updates to watchers), [`infer`] (loaded models and
//!   sampling for chat completions);
//! - [`train`] (the synchronous training engine), [`store`] (Postgres or SQLite through sqlx,
//!   statuses typed at the row), [`blob`] (large bytes through object_store, with its keys);
//! - [`model`] (the Llama-family network, LoRA, Hugging Face and PEFT I/O), [`chat`] (templates
//!   and loss masks), [`datasets`] (streaming validation of uploaded JSONL, other chat formats,
//!   cleaning);
//! - [`tokenizer`];
//! - [`spec`] (the job specification), [`ids`], [`config`] (with [`blob_location`], where the
//!   blob store lives), [`telemetry`], [`machine`] (what
//!   this machine has to give), [`allocator`] and [`threads`] (process settings for training).

pub mod allocator;
pub mod api;
pub mod app;
pub mod auth;
pub mod blob;
pub mod blob_location;
pub mod catalog;
pub mod chat;
pub mod cleaning;
pub mod cli;
pub mod cli_clean;
pub mod cli_export;
pub mod cli_train;
pub mod config;
pub mod datasets;
pub mod devices;
pub mod error;
pub mod http_server;
pub mod ids;
pub mod infer;
pub mod jobs;
pub mod machine;
pub mod model;
pub mod private_files;
pub mod retention;
pub mod spec;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tenants;
#[cfg(test)]
mod testing;
pub mod threads;
pub mod tokenizer;
pub mod train;
pub mod worker;
