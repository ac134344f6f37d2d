//! The Llama-family model: configuration, layers, weights in Hugging Face form.

pub mod config;
