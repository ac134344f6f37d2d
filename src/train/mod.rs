//! The training engine: synchronous, no async runtime inside, so it runs on a server worker's
//! blocking thread and from the command line alike.
//!
//! Read it top to bottom, as nanoGPT's `train.py`:
//! - [`run_job`] (here) checks the spec and dispatches by method;
//! - [`job`]: the job as the trainer takes it, how it ends, its errors;
//! - [`pretrain`] and [`sft`]: what differs per method (data, what trains, the export), each
//!   beginning with the shared [`start`] (files, hyperparameters, starting point, resume; then
//!   the plan and the optimiser) and handing the rest to `step_loop` (the accumulation window,
//!   AdamW, evaluation, checkpoints), which drives a `trainee` (full model or LoRA adapters);
//! - the ingredients, one file each: [`data`] and [`sft_pack`] (rows), [`loss`], [`optim`],
//!   [`schedule`], [`hparams`], [`checkpoint`], [`chat_tokens`], [`progress`], and the
//!   [`estimate`] of a job's cost ([`job_estimate`] from its spec and files).
//!
//! A new method is one file beside `pretrain.rs` and `sft.rs` plus one arm in [`run_job`].

mod chat_model;
pub mod chat_tokens;
pub mod checkpoint;
pub mod data;
pub mod device_parity;
pub mod domains;
pub mod dpo;
pub mod estimate;
pub mod hparams;
pub mod job;
pub mod job_estimate;
pub mod loss;
pub mod mixture;
mod objective;
pub mod optim;
pub mod pretrain;
pub mod progress;
pub mod row_count;
pub mod samples;
pub mod schedule;
pub mod sft;
pub mod sft_pack;
mod start;
mod step_loop;
pub mod token_stats;
mod trainee;

pub use job::{Stopped, TrainError, TrainJob, TrainOutcome};
pub use progress::{EvalMetrics, NoProgress, Progress, RecordingProgress, StepMetrics, StopReason};
pub use step_loop::BF16_UNAVAILABLE;

use crate::spec::MethodType;

/// Runs one job to the end (or until `progress` asks it to stop) and writes its model.
pub fn run_job(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    job.spec.validate()?;
    match job.spec.method.kind {
        MethodType::Pretrain => pretrain::run(job, progress),
        MethodType::Supervised => sft::run(job, progress),
        MethodType::Dpo => dpo::run(job, progress),
    }
}
