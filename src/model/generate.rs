//! Greedy generation from a saved model folder, the simplest proof that an exported model loads
//! and produces text. (The serving path with a KV cache and sampling lives with inference.)

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::hf::{self, HfError};
use super::llama::{Llama, sequential_positions};

/// What can go wrong loading a folder or running it.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Loads the Hugging Face folder `dir` and continues `prompt` greedily for `max_new` tokens,
/// returning the new token ids.
pub fn generate_greedy(
    dir: &Path,
    prompt: &str,
    max_new: usize,
) -> Result<Vec<u32>, GenerateError> {
    let device = Device::Cpu;
    let cfg = hf::read_config(dir)?;
    let weights = hf::load_weights(dir, &cfg, DType::F32, &device)?;
    let model = Llama::load(VarBuilder::from_tensors(weights, DType::F32, &device), &cfg)?;
    let tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
    let mut ids = crate::tokenizer::encode(&tokenizer, prompt)?;
    let mut new = Vec::with_capacity(max_new);
    for _ in 0..max_new {
        let start = ids.len().saturating_sub(cfg.max_position_embeddings);
        let window = &ids[start..];
        let input = Tensor::new(window, &device)?.unsqueeze(0)?; // (1, T)
        let positions = sequential_positions(1, window.len(), &device)?;
        let logits = model.forward(&input, &positions, None)?; // (1, T, V)
        let next = logits
            .narrow(1, window.len() - 1, 1)?
            .squeeze(1)?
            .argmax(D::Minus1)?
            .squeeze(0)?;
        let next = next.to_scalar::<u32>()?;
        ids.push(next);
        new.push(next);
    }
    Ok(new)
}
