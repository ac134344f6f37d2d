//! A training job as the trainer sees it, how it ends, and every error that can end it. Shared by
//! every method ([`super::pretrain`], [`super::sft`]) and by the callers of [`super::run_job`].

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint::CheckpointError;
use super::data::DataError;
use crate::model::hf::HfError;
use crate::spec::{JobSpec, SpecError};
use crate::tokenizer::TokenizerError;

/// One job as the trainer runs it: the spec plus everything the caller has resolved.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub spec: JobSpec,
    /// Absolute path of the training file (JSONL, one `{"text": ...}` per line for pretraining).
    pub training_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    /// Where the finished model (a Hugging Face folder) goes; checkpoints go to its `checkpoints/`.
    pub output_dir: PathBuf,
    /// A checkpoint folder to continue from.
    pub resume_from: Option<PathBuf>,
    pub device: Device,
    /// The model's name as the user gave it (`spec.model` may be a local copy's path); written
    /// into LoRA adapters as `base_model_name_or_path`.
    pub base_model_name: Option<String>,
}

impl TrainJob {
    /// Where checkpoints are written.
    pub fn checkpoint_root(&self) -> PathBuf {
        self.output_dir.join("checkpoints")
    }
}

/// Why a run ended before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    Cancelled,
    Paused,
    EarlyStopped,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub steps_completed: u64,
    pub total_steps: u64,
    pub final_train_loss: Option<f64>,
    pub final_valid_loss: Option<f64>,
    pub trained_tokens: u64,
    pub num_parameters: u64,
    pub stopped: Option<Stopped>,
    /// The exported model folder (absent when cancelled or paused).
    pub model_dir: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
}

/// Everything that can end a job with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The spec asks for something impossible; `param` names the field.
    #[error("invalid job: {0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Unsupported(String),
    #[error("file not found: {}", .0.display())]
    MissingFile(PathBuf),
    #[error(
        "unknown model {0:?}: expected a preset ({presets}) or a folder with config.json",
        presets = crate::model::PRESETS.join(", ")
    )]
    UnknownModel(String),
    /// The job would not fit in memory; running it would abort the whole process.
    #[error(
        "the job needs about {needed_mib} MiB but only {available_mib} MiB are available; lower batch_size or max_seq_len, or pick a smaller model"
    )]
    TooLarge { needed_mib: u64, available_mib: u64 },
    #[error("training diverged at step {step}: {reason}; lower the learning rate or raise warmup")]
    Diverged { step: u64, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Peft(#[from] crate::model::peft::PeftError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// A spec error on hyperparameter `field` of `spec`, with the field's full dotted path.
pub(super) fn spec_error(spec: &JobSpec, field: &str, message: String) -> TrainError {
    TrainError::Spec(SpecError {
        param: format!("{}.{field}", spec.hyperparameters_path()),
        message,
    })
}
