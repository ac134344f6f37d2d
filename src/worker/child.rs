//! The training child process (`wick run-job`): runs one job with the trainer and reports each
//! step, evaluation and checkpoint to its slot as JSON lines. Running each job in its own process
//! means an out-of-memory abort or a crash in the numeric code takes down only this process; the
//! slot sees it exit and fails the job with a clear error, and the server keeps serving.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::protocol::{ChildCommand, ChildJob, ChildMessage};
use crate::devices::DeviceId;
use crate::train::progress::SampleSet;
use crate::train::{EvalMetrics, Progress, StepMetrics, StopReason, TrainError, TrainJob, run_job};

const RUN: u8 = 0;
const CANCEL: u8 = 1;
const PAUSE: u8 = 2;

/// Test hook: abort the process at this step, as an out-of-memory abort would.
pub const FAULT_ABORT_ENV: &str = "WICK_FAULT_ABORT_AT_STEP";

/// Reports to stdout and reads the stop flag that the stdin reader sets.
struct LineProgress {
    stop: Arc<AtomicU8>,
    abort_at: Option<u64>,
}

fn emit(msg: &ChildMessage) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the slot is gone; the stdin reader stops us at the next step.
    let _ = serde_json::to_writer(&mut out, msg);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

impl Progress for LineProgress {
    fn on_phase(&mut self, phase: &str, done: u64, total: u64) {
        emit(&ChildMessage::Phase {
            phase: phase.to_string(),
            done,
            total,
        });
    }
    fn on_step(&mut self, m: &StepMetrics) {
        emit(&ChildMessage::Step(m.clone()));
        if self.abort_at == Some(m.step) {
            std::process::abort();
        }
    }
    fn on_eval(&mut self, m: &EvalMetrics) {
        emit(&ChildMessage::Eval(m.clone()));
    }
    fn on_samples(&mut self, s: &SampleSet) {
        emit(&ChildMessage::Samples(s.clone()));
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        emit(&ChildMessage::Checkpoint {
            step,
            path: path.to_path_buf(),
        });
    }
    /// The slot copies each checkpoint to the blob store and then deletes the local folder.
    fn takes_checkpoints(&self) -> bool {
        true
    }
    fn should_stop(&mut self) -> Option<StopReason> {
        match self.stop.load(Ordering::SeqCst) {
            CANCEL => Some(StopReason::Cancel),
            PAUSE => Some(StopReason::Pause),
            _ => None,
        }
    }
}

/// A stable code for each kind of training failure, for the job's `error.code`.
fn error_code(e: &TrainError) -> &'static str {
    match e {
        TrainError::Spec(_) => "invalid_job",
        TrainError::Unsupported(_) => "unsupported",
        TrainError::MissingFile(_) => "missing_file",
        TrainError::UnknownModel(_) => "unknown_model",
        TrainError::Diverged { .. } => "training_diverged",
        TrainError::Data(_) => "invalid_training_data",
        _ => "training_error",
    }
}

/// Runs the job described in `job_file`; the process's exit code is 0 whenever it could report.
pub fn run_child(job_file: &Path) -> anyhow::Result<()> {
    let job: ChildJob = serde_json::from_slice(&std::fs::read(job_file)?)?;
    // Every log line of the training carries its job and organisation.
    let _span = tracing::info_span!("training", job_id = %job.job_id, org = %job.org_id).entered();
    let stop = Arc::new(AtomicU8::new(RUN));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line
                    .ok()
                    .and_then(|l| serde_json::from_value::<ChildCommand>(l.trim().into()).ok())
                {
                    Some(ChildCommand::Cancel) => stop.store(CANCEL, Ordering::SeqCst),
                    Some(ChildCommand::Pause) => stop.store(PAUSE, Ordering::SeqCst),
                    None => {}
                }
            }
            // stdin closed: the slot is gone. Stop; the lease will lapse and the job resume elsewhere.
            let _ = stop.compare_exchange(RUN, CANCEL, Ordering::SeqCst, Ordering::SeqCst);
        });
    }
    let abort_at = std::env::var(FAULT_ABORT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut progress = LineProgress { stop, abort_at };
    let device = match job
        .device
        .parse::<DeviceId>()
        .map_err(anyhow::Error::from)
        .and_then(|d| Ok(d.open()?))
    {
        Ok(d) => d,
        Err(e) => {
            emit(&ChildMessage::Failed {
                code: "device_unavailable".into(),
                message: format!("device {}: {e:#}", job.device),
            });
            return Ok(());
        }
    };
    let train_job = TrainJob {
        spec: job.spec,
        training_file: job.training_file,
        validation_file: job.validation_file,
        output_dir: job.output_dir,
        resume_from: job.resume_from,
        device,
        base_model_name: job.base_model_name,
    };
    match run_job(&train_job, &mut progress) {
        Ok(outcome) => emit(&ChildMessage::Done(outcome)),
        Err(e) => emit(&ChildMessage::Failed {
            code: error_code(&e).into(),
            message: e.to_string(),
        }),
    }
    Ok(())
}

/// The child's job file inside a job's work folder.
pub fn job_file_path(work_dir: &Path) -> PathBuf {
    work_dir.join("job.json")
}
