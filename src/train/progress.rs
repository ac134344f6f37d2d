//! The interface through which a training run reports to its caller (the server's worker, the
//! CLI's progress bar, a test) and learns that it should stop.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What one optimiser update did. `train_loss` is the loss of the batch this update used,
/// computed before the update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Counted from 1.
    pub step: u64,
    pub total_steps: u64,
    /// Fractional epochs of training data consumed after this step.
    pub epoch: f64,
    pub train_loss: f64,
    pub train_mean_token_accuracy: f64,
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    /// Counted (loss-bearing) tokens trained on so far.
    pub trained_tokens: u64,
    pub eta_seconds: f64,
    /// The method's own metrics under their reported names (DPO: `rewards/chosen`, ...).
    #[serde(flatten, default)]
    pub extra: BTreeMap<String, f64>,
}

/// One evaluation on the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub valid_loss: f64,
    pub valid_perplexity: f64,
    pub valid_mean_token_accuracy: f64,
    /// The method's own metrics under their reported names (DPO: `valid_rewards/chosen`, ...).
    #[serde(flatten, default)]
    pub extra: BTreeMap<String, f64>,
}

/// The model's greedy answer to one sample prompt at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The prompt as a person reads it (the last user message, or a document's beginning).
    pub prompt: String,
    /// What the data has there (the example's assistant reply, the preferred output, the
    /// document's continuation), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub completion: String,
    /// Tokens generated, and whether the model ended its turn itself (else it hit the limit).
    pub tokens: usize,
    pub stopped: bool,
}

/// Every sample prompt's answer at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSet {
    pub step: u64,
    pub samples: Vec<Sample>,
    /// Seconds the generation took.
    pub seconds: f64,
}

/// Why the caller wants the run to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// Stop now; no final export.
    Cancel,
    /// Write a checkpoint so the job can resume later, then stop.
    Pause,
}

/// Implemented by whoever runs a job. Every method has a do-nothing default.
pub trait Progress {
    /// A phase before the steps (DPO's reference log-probs): `done` of `total` items.
    fn on_phase(&mut self, _phase: &str, _done: u64, _total: u64) {}
    fn on_step(&mut self, _metrics: &StepMetrics) {}
    fn on_eval(&mut self, _metrics: &EvalMetrics) {}
    /// The model's answers to the job's sample prompts at an evaluation.
    fn on_samples(&mut self, _samples: &SampleSet) {}
    fn on_checkpoint(&mut self, _step: u64, _path: &Path) {}
    /// Whether the receiver of [`Progress::on_checkpoint`] takes each checkpoint folder over
    /// (a worker slot stores it and then deletes it), so the trainer must not prune its local
    /// folders: pruning would race the slot's copy of a folder the slot has not reached yet.
    fn takes_checkpoints(&self) -> bool {
        false
    }
    /// Polled once per step, before the step starts.
    fn should_stop(&mut self) -> Option<StopReason> {
        None
    }
}

/// Ignores everything (tests, benchmarks).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Records everything it is told, for tests and for callers that report after the fact.
#[derive(Debug, Default, Clone)]
pub struct RecordingProgress {
    /// `(phase, done, total)` of every phase report.
    pub phases: Vec<(String, u64, u64)>,
    pub steps: Vec<StepMetrics>,
    pub evals: Vec<EvalMetrics>,
    pub samples: Vec<SampleSet>,
    pub checkpoints: Vec<(u64, std::path::PathBuf)>,
    /// Answer `should_stop` with this once `steps.len()` reaches the given count.
    pub stop_after: Option<(usize, StopReason)>,
}

impl Progress for RecordingProgress {
    fn on_phase(&mut self, phase: &str, done: u64, total: u64) {
        self.phases.push((phase.to_string(), done, total));
    }
    fn on_step(&mut self, m: &StepMetrics) {
        self.steps.push(m.clone());
    }
    fn on_eval(&mut self, m: &EvalMetrics) {
        self.evals.push(m.clone());
    }
    fn on_samples(&mut self, s: &SampleSet) {
        self.samples.push(s.clone());
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        self.checkpoints.push((step, path.to_path_buf()));
    }
    fn should_stop(&mut self) -> Option<StopReason> {
        match self.stop_after {
            Some((n, why)) if self.steps.len() >= n => Some(why),
            _ => None,
        }
    }
}
