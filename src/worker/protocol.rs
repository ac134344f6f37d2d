//! What a worker slot and its training child process say to each other.
//!
//! The slot writes a [`ChildJob`] file and starts `wick run-job --job FILE`. The child answers with
//! one JSON [`ChildMessage`] per line on stdout and takes [`ChildCommand`] lines on stdin. When its
//! stdin closes (the slot died), the child stops at the next step: the job's lease expires and
//! another worker resumes it from the last checkpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::JobSpec;
use crate::train::progress::SampleSet;
use crate::train::{EvalMetrics, StepMetrics, TrainOutcome};

/// Everything the child needs to run a job: local paths only, no database, no blob store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildJob {
    pub job_id: String,
    /// The job's organization, for the child's log lines.
    #[serde(default)]
    pub org_id: String,
    pub spec: JobSpec,
    pub training_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub resume_from: Option<PathBuf>,
    /// The job's `model` as the user named it, when `spec.model` points at a staged copy.
    #[serde(default)]
    pub base_model_name: Option<String>,
    /// The slot's device, `cpu` or `cuda:N`: the child trains on it alone.
    #[serde(default = "cpu")]
    pub device: String,
}

fn cpu() -> String {
    "cpu".into()
}

/// One line from the child.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChildMessage {
    /// Work before the first step (DPO's reference log-probs): `done` of `total` items.
    Phase {
        phase: String,
        done: u64,
        total: u64,
    },
    Step(StepMetrics),
    Eval(EvalMetrics),
    /// The model's answers to the sample prompts at an evaluation.
    Samples(SampleSet),
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    Done(TrainOutcome),
    Failed {
        code: String,
        message: String,
    },
}

/// One line to the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildCommand {
    /// Stop now, without a final export.
    Cancel,
    /// Write a checkpoint, then stop (a user's pause, or the worker shutting down).
    Pause,
}

impl ChildCommand {
    pub fn line(self) -> &'static str {
        match self {
            ChildCommand::Cancel => "cancel\n",
            ChildCommand::Pause => "pause\n",
        }
    }
}
