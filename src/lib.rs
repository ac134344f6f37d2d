//! Wick: a training service for language models.
//!
//! # Layout
//! - [`app`]: builds the service (store, blobs, listener) and runs it; [`config`] its settings.
//! - [`api`]: the HTTP API, one module per resource; [`auth`] the bearer-key extractor;
//!   [`error`] the one error type that crosses HTTP.
//! - [`store`]: Postgres or SQLite through sqlx; [`blob`]: large bytes through object_store.
//! - [`datasets`]: streaming validation of uploaded JSONL.
//! - [`spec`]: the job specification; [`jobs`]: job states; [`catalog`]: the models jobs start from.
//! - [`model`]: the Llama-family model.
//! - [`cli`]: the `wick` command line; [`telemetry`]: logging.

pub mod api;
pub mod app;
pub mod auth;
pub mod blob;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod datasets;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod model;
pub mod spec;
pub mod store;
pub mod telemetry;
