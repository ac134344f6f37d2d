//! Checkpoints: everything needed to continue a run as if it had never stopped.
//!
//! A checkpoint is a folder `checkpoint-{step:08}` holding the trained weights, the tokenizer
//! files, `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (step, data position,
//! seed, early-stopping state). The weights are either a whole Hugging Face model folder
//! (config.json, model.safetensors: pretraining and full fine-tuning) or, for LoRA, the PEFT
//! adapter in `adapter/` (the frozen base is the job's base model and is not copied). The data
//! order and every other random choice are pure functions of the seed, the data position and the
//! step, so those numbers are the whole RNG state. Folders are written under a temporary name and
//! renamed, so a crash never leaves a half-written checkpoint behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use crate::model::hf::{self, HfError};
use crate::train::optim::AdamW;

/// The loop's own state at the end of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Updates completed.
    pub step: u64,
    pub total_steps: u64,
    /// Rows handed out by the sampler so far.
    pub data_position: u64,
    pub seed: u64,
    pub trained_tokens: u64,
    pub best_valid_loss: Option<f64>,
    pub evals_without_improvement: u32,
}

impl TrainerState {
    /// The state before the first step of a fresh run.
    pub fn new(total_steps: u64, seed: u64) -> Self {
        TrainerState {
            step: 0,
            total_steps,
            data_position: 0,
            seed,
            trained_tokens: 0,
            best_valid_loss: None,
            evals_without_improvement: 0,
        }
    }

    /// Records an evaluation for early stopping. True when the last `patience` evaluations in a
    /// row failed to beat the best validation loss so far.
    pub fn record_eval(&mut self, valid_loss: f64, patience: Option<u32>) -> bool {
        if self.best_valid_loss.is_none_or(|best| valid_loss < best) {
            self.best_valid_loss = Some(valid_loss);
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
        }
        patience.is_some_and(|p| self.evals_without_improvement >= p)
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Peft(#[from] crate::model::peft::PeftError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder name of the checkpoint after `step`.
pub fn folder_name(step: u64) -> String {
    format!("checkpoint-{step:08}")
}

/// The sub-folder of a LoRA checkpoint that holds its PEFT adapter.
pub const ADAPTER_DIR: &str = "adapter";

/// What a checkpoint keeps of the model.
pub enum Weights<'a> {
    /// Every weight, as a Hugging Face model folder.
    Full {
        cfg: &'a ModelConfig,
        weights: HashMap<String, Tensor>,
    },
    /// Only the LoRA adapters, as a PEFT folder in [`ADAPTER_DIR`].
    Adapter {
        adapters: &'a crate::model::lora::LoraAdapters,
        base_model: &'a str,
    },
}

/// Files of the job's folder that a checkpoint carries when they are there: what a resumed run
/// needs besides the weights (DPO's reference log-probs).
pub const CARRIED_FILES: [&str; 1] = [REFERENCE_LOGPS_FILE];

/// DPO's reference log-probs (written by `train::dpo::reference`).
pub const REFERENCE_LOGPS_FILE: &str = "reference_logps.safetensors";

/// Writes a checkpoint under `root`, copying tokenizer files (and [`CARRIED_FILES`]) from
/// `tokenizer_dir`. Returns its path.
pub fn save(
    root: &Path,
    weights: Weights<'_>,
    optimizer: &AdamW,
    state: &TrainerState,
    tokenizer_dir: &Path,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(folder_name(state.step));
    let tmp = root.join(format!(".tmp-{}", folder_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    match weights {
        Weights::Full { cfg, weights } => hf::save_model_folder(&tmp, cfg, &weights)?,
        Weights::Adapter {
            adapters,
            base_model,
        } => crate::model::peft::save_adapter(&tmp.join(ADAPTER_DIR), adapters, Some(base_model))?,
    }
    crate::tokenizer::copy_files(tokenizer_dir, &tmp).map_err(|e| CheckpointError::Invalid {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    for name in CARRIED_FILES {
        let from = tokenizer_dir.join(name);
        if from.is_file() {
            let to = tmp.join(name);
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    let state_path = tmp.join("trainer_state.json");
    std::fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(io(&state_path))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    Ok(final_dir)
}

/// Checkpoint folders under `root`, oldest first.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The newest checkpoint under `root`, if any (what a worker resumes a job from).
pub fn latest(root: &Path) -> Option<PathBuf> {
    list(root).pop()
}

/// Deletes all but the newest `keep` checkpoints under `root`.
pub fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(root);
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(())
}

/// The weights a checkpoint holds, read back.
pub enum LoadedWeights {
    Full {
        config: ModelConfig,
        weights: HashMap<String, Tensor>,
    },
    /// Adapter tensors under their PEFT names (`base_model.model.{module}.lora_A.weight`).
    Adapter(HashMap<String, Tensor>),
}

/// A checkpoint read back.
pub struct Loaded {
    pub weights: LoadedWeights,
    pub optimizer: HashMap<String, Tensor>,
    pub state: TrainerState,
}

/// Reads a checkpoint folder written by [`save`].
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Loaded, CheckpointError> {
    let adapter = dir.join(ADAPTER_DIR).join("adapter_model.safetensors");
    let weights = if adapter.is_file() {
        let tensors = candle_core::safetensors::load(&adapter, device)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
            .collect::<candle_core::Result<_>>()?;
        LoadedWeights::Adapter(tensors)
    } else {
        let config = hf::read_config(dir)?;
        let weights = hf::load_weights(dir, &config, dtype, device)?;
        LoadedWeights::Full { config, weights }
    };
    let opt_path = dir.join("optimizer.safetensors");
    if !opt_path.exists() {
        return Err(CheckpointError::Invalid {
            path: dir.to_path_buf(),
            message: "not a checkpoint: optimizer.safetensors is missing".into(),
        });
    }
    let optimizer = candle_core::safetensors::load(&opt_path, device)?;
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state = serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    Ok(Loaded {
        weights,
        optimizer,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_counts_evaluations_without_improvement() {
        let mut s = TrainerState {
            step: 0,
            total_steps: 10,
            data_position: 0,
            seed: 1,
            trained_tokens: 0,
            best_valid_loss: None,
            evals_without_improvement: 0,
        };
        assert!(!s.record_eval(3.0, Some(2)));
        assert!(!s.record_eval(3.1, Some(2))); // 1 without improvement
        assert!(!s.record_eval(2.9, Some(2))); // improved: reset
        assert!(!s.record_eval(2.95, Some(2)));
        assert!(s.record_eval(2.9, Some(2))); // equal is not better: 2 in a row
        assert_eq!(s.best_valid_loss, Some(2.9));
        assert!(!s.record_eval(5.0, None), "no patience, no stopping");
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for step in [3, 12, 6, 9] {
            std::fs::create_dir_all(dir.path().join(folder_name(step))).unwrap();
        }
        std::fs::create_dir_all(dir.path().join(".tmp-checkpoint-00000015")).unwrap();
        prune(dir.path(), 2).unwrap();
        let left: Vec<_> = list(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![folder_name(9), folder_name(12)]);
        assert_eq!(latest(dir.path()), Some(dir.path().join(folder_name(12))));
    }
}
