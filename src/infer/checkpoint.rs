//! Chatting with a checkpoint: a checkpoint folder turned into a model folder inference can load.
//! A full fine-tuning or pretraining checkpoint already is one (config, weights and tokenizer); a
//! LoRA checkpoint holds only its adapter, which is merged here into the job's base model, with
//! the checkpoint's tokenizer files (the job's, ChatML tokens included).

use std::path::Path;

use candle_core::{DType, Device};

use crate::model::{hf, peft};

/// The checkpoint's folder name for its PEFT adapter (`train::checkpoint::ADAPTER_DIR`).
const ADAPTER_DIR: &str = "adapter";

/// Whether the downloaded checkpoint `ckpt` is a complete model folder (else a LoRA adapter).
pub fn is_model_folder(ckpt: &Path) -> bool {
    ckpt.join("config.json").is_file()
}

/// Writes into `out` the model of the LoRA checkpoint `ckpt`: the model folder `base` with the
/// checkpoint's adapter merged in, and the checkpoint's tokenizer files.
pub fn merge_lora_checkpoint(ckpt: &Path, base: &Path, out: &Path) -> anyhow::Result<()> {
    let mut cfg = hf::read_config(base)?;
    let weights = hf::load_weights(base, &cfg, DType::F32, &Device::Cpu)?;
    let merged = peft::merge_adapter_folder(&weights, &ckpt.join(ADAPTER_DIR))?;
    // A job that added tokens saved the grown embeddings with its adapter.
    if let Some(embed) = merged.get("model.embed_tokens.weight") {
        cfg.vocab_size = embed.dims()[0];
    }
    hf::save_model_folder(out, &cfg, &merged)?;
    crate::tokenizer::copy_files(ckpt, out)?;
    Ok(())
}
