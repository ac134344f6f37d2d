//! The training engine: synchronous, no async runtime inside, so it runs on a server worker's
//! blocking thread and from the command line alike.
//!
//! Entry point: [`run_job`]. Each job's setup is in [`trainer`] (pretraining)
//! and [`sft`]; the step loop they share is in `step_loop`, what trains in `trainee`; each
//! ingredient has its own file.

pub mod chat_tokens;
pub mod checkpoint;
pub mod data;
pub mod estimate;
pub mod hparams;
pub mod loss;
pub mod optim;
pub mod progress;
pub mod schedule;
pub mod sft;
pub mod sft_pack;
mod step_loop;
mod trainee;
pub mod trainer;

pub use progress::{EvalMetrics, NoProgress, Progress, RecordingProgress, StepMetrics, StopReason};
pub use trainer::{Stopped, TrainError, TrainJob, TrainOutcome, run_job};
