//! One worker slot: claims a job, stages its files, runs it in a child process, and relays what
//! the child reports (metrics in batches, checkpoints to the blob store) while renewing the lease.
//! Cancel and pause reach the child within one training step; shutdown checkpoints and requeues.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::child::job_file_path;
use super::protocol::{ChildCommand, ChildJob, ChildMessage};
use crate::catalog::{BaseModel, ResolveError};
use crate::devices::{DeviceId, DeviceInfo};
use crate::spec::JobSpec;
use crate::state::AppState;
use crate::store::checkpoints;
use crate::store::events::NewEvent;
use crate::store::job_status::JobStatus;
use crate::store::jobs::JobRow;
use crate::store::metrics::{self, NewPoint};
use crate::store::queue::{self, LeaseState};
use crate::store::workers;
use crate::train::{Stopped, TrainOutcome};

/// The job event for a child's phase report: one when the phase starts and one when it ends
/// (the reports between are not stored).
fn phase_event(phase: &str, done: u64, total: u64) -> Option<NewEvent> {
    if phase == crate::train::BF16_UNAVAILABLE {
        return Some(
            NewEvent::info(
                "message",
                "bf16 was requested, but this processor has no bf16 dot products (AVX512-BF16): the job runs in f32".to_string(),
            )
            .with_data(json!({"phase": phase})),
        );
    }
    let (starts, ends) = match phase {
        "reference_logps" => ("Computing reference log-probs", "Reference log-probs ready"),
        _ => ("Starting", "Finished"),
    };
    let message = match done {
        0 => format!("{starts} for {total} pairs"),
        d if d >= total => format!("{ends} ({total} pairs)"),
        _ => return None,
    };
    Some(
        NewEvent::info("message", message)
            .with_data(json!({"phase": phase, "done": done, "total": total})),
    )
}

/// Metric points are written at least this often while a job trains.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// ...or as soon as this many are waiting.
const FLUSH_AT: usize = 64;

/// The device a slot trains on, and what it reports of it.
#[derive(Debug, Clone)]
pub struct SlotDevice {
    pub id: DeviceId,
    pub info: DeviceInfo,
    /// Slots in this process (one per GPU, or `--worker-slots` on the CPU): they share its cores.
    pub slots: usize,
}

/// Records slot `worker_id` in the workers listing, then keeps its row fresh, with the job it
/// runs, until aborted (recording it again if the row is missing: the store was down at the
/// start, or the row was pruned).
fn spawn_worker_beat(
    state: &AppState,
    worker_id: &str,
    info: DeviceInfo,
    current: Arc<Mutex<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    let (db, id, host) = (state.db.clone(), worker_id.to_string(), super::host_name());
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(workers::BEAT);
        let mut registered = false;
        loop {
            beat.tick().await;
            let job = current.lock().expect("worker beat lock").clone();
            if !registered && let Err(e) = workers::register(&db, &id, &host, &info).await {
                tracing::warn!(error = %e, "recording the worker in the workers listing failed");
                continue;
            }
            let done = workers::touch(&db, &id, job.as_deref()).await;
            match done {
                Ok(present) => registered = present,
                Err(e) => tracing::warn!(error = %e, "renewing the worker's row failed"),
            }
        }
    })
}

/// Runs slot `worker_id` on `device` until `shutdown` fires.
#[tracing::instrument(name = "worker_slot", skip_all, fields(worker = %worker_id, device = %device.id))]
pub async fn run_slot(
    state: AppState,
    worker_id: String,
    device: SlotDevice,
    shutdown: CancellationToken,
) {
    let lease = chrono::Duration::seconds(state.settings.lease_secs as i64);
    let _slot = crate::telemetry::metrics::worker_slot();
    let current = Arc::new(Mutex::new(None::<String>));
    let beat = spawn_worker_beat(&state, &worker_id, device.info.clone(), current.clone());
    tracing::info!(name = %device.info.name, "worker slot ready");
    while !shutdown.is_cancelled() {
        match queue::claim_next_job(&state.db, &worker_id, lease, device.id.kind()).await {
            Ok(Some(job)) => {
                state.hub.publish(&job.id).await;
                let id = job.id.clone();
                *current.lock().expect("worker beat lock") = Some(id.clone());
                let _ = workers::touch(&state.db, &worker_id, Some(&id)).await;
                let ran = run_claimed(&state, &worker_id, &device, job, &shutdown).await;
                *current.lock().expect("worker beat lock") = None;
                if let Err(e) = ran {
                    tracing::error!(job = %id, error = ?e, "worker failed to run the job");
                    let _ = queue::fail_job(
                        &state.db,
                        &id,
                        &worker_id,
                        "worker_error",
                        &format!("{e:#}"),
                    )
                    .await;
                    state.hub.publish(&id).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = state.queue_wake.notified() => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    beat.abort();
    let _ = workers::remove(&state.db, &worker_id).await;
    tracing::info!("worker slot stopped");
}

/// Where the job's files live on this machine while it trains.
fn work_dir(state: &AppState, job_id: &str) -> PathBuf {
    state.settings.work_dir().join(job_id)
}

/// Copies the training files and the latest checkpoint (if any) to the work folder.
async fn stage(
    state: &AppState,
    job: &JobRow,
    spec: &JobSpec,
    dir: &Path,
    device: DeviceId,
) -> anyhow::Result<ChildJob> {
    let _ = tokio::fs::remove_dir_all(dir).await;
    tokio::fs::create_dir_all(dir).await?;
    let fetch = |id: String, name: String| async move {
        let f = crate::store::files::get_file_any_org(&state.db, &id)
            .await?
            .with_context(|| format!("file {id} no longer exists"))?;
        let local = dir.join(name);
        state.blobs.get_file(&f.blob_path, &local).await?;
        anyhow::Ok(local)
    };
    // Every file the spec names, once each, under a local name; the spec then names the copies.
    let mut local = std::collections::BTreeMap::new();
    let refs: Vec<(String, &'static str)> = spec
        .training_file_refs()
        .into_iter()
        .map(|f| (f.to_string(), "train"))
        .chain(
            spec.validation_file_refs()
                .into_iter()
                .map(|f| (f.to_string(), "valid")),
        )
        .collect();
    for (i, (id, role)) in refs.into_iter().enumerate() {
        if !local.contains_key(&id) {
            let path = fetch(id.clone(), format!("{role}-{i}.jsonl")).await?;
            local.insert(id, path);
        }
    }
    let mut spec = spec.clone();
    spec.localise_files(|f| local[f].display().to_string());
    let training_file = PathBuf::from(spec.training_file_refs()[0]);
    let validation_file = spec.validation_file.as_deref().map(PathBuf::from);
    let output_dir = dir.join("out");
    let mut resume_from = None;
    if let Some(latest) = checkpoints::list_checkpoints(&state.db, &job.id)
        .await?
        .first()
    {
        let local = output_dir
            .join("checkpoints")
            .join(crate::train::checkpoint::folder_name(latest.step as u64));
        state.blobs.get_dir(&latest.blob_path, &local).await?;
        resume_from = Some(local);
    }
    spec.seed = Some(job.seed as u64);
    let base = crate::catalog::resolve(&state.db, &state.local_models, &job.org_id, &job.model)
        .await
        .map_err(|e| match e {
            ResolveError::Unknown(_) => anyhow::anyhow!(
                "{e} (this worker reads local models from its models folder, {})",
                state.local_models.dir().display()
            ),
            other => anyhow::anyhow!("on this worker: {other}"),
        })?;
    match base {
        BaseModel::Preset(_) => {}
        // A trained model as the base: copy its folder here and train from that path.
        BaseModel::Trained(m) => {
            let base = dir.join("base");
            state
                .blobs
                .get_dir(m.blob_path.as_deref().unwrap_or_default(), &base)
                .await?;
            spec.model = base.display().to_string();
        }
        // A local model: train from this worker's own copy of the folder, in place.
        BaseModel::Local { model, .. } => spec.model = model.path.display().to_string(),
        // An imported model: this machine's cached copy, fetched from the blob store once.
        BaseModel::Imported(m) => {
            let folder = crate::catalog::imported::materialise(
                &state.blobs,
                &m,
                &state.settings.model_cache_dir(),
            )
            .await?;
            spec.model = folder.display().to_string();
        }
    }
    Ok(ChildJob {
        job_id: job.id.clone(),
        org_id: job.org_id.clone(),
        spec,
        training_file,
        validation_file,
        output_dir,
        resume_from,
        base_model_name: Some(job.model.clone()),
        device: device.to_string(),
    })
}

fn spawn_child(state: &AppState, job_file: &Path, slots: usize) -> anyhow::Result<Child> {
    let exe = match &state.settings.trainer_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let threads = match state.settings.threads_per_job {
        0 => (std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            / slots.max(1))
        .max(1),
        n => n,
    };
    let child = Command::new(exe)
        .arg("run-job")
        .arg("--job")
        .arg(job_file)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the training process")?;
    bound_report_pipe(&child);
    Ok(child)
}

/// Bytes the pipe of a child's reports holds (Linux's smallest, one page; the default is 64 KiB).
/// A step report is ~300 bytes, so a child whose worker falls behind (a starved machine) blocks
/// about a dozen steps ahead instead of some two hundred: a cancel or pause reaches it, and its
/// progress reaches watchers, within those steps.
const REPORT_PIPE_BYTES: libc::c_int = 4096;

fn bound_report_pipe(child: &Child) {
    #[cfg(target_os = "linux")]
    if let Some(out) = child.stdout.as_ref() {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a pipe descriptor this process owns; failure only leaves the default.
        let r = unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, REPORT_PIPE_BYTES) };
        if r < 0 {
            tracing::debug!("could not shrink the child's report pipe; keeping the default");
        }
    }
}

/// How the slot's watch over a child ended.
enum Ending {
    Reported(TrainOutcome),
    /// The blob store failed to take the checkpoint of `step`: the job is paused, keeping its
    /// last stored checkpoint, to be resumed once the store answers again.
    StoreFailed {
        step: u64,
        error: String,
        /// The store's disk was full (rather than the store failing).
        full: bool,
    },
    Failed {
        code: String,
        message: String,
    },
    Crashed(String),
    LeaseLost,
}

#[tracing::instrument(name = "job", skip_all, fields(job_id = %job.id, org = %job.org_id))]
async fn run_claimed(
    state: &AppState,
    worker_id: &str,
    device: &SlotDevice,
    job: JobRow,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let running = crate::telemetry::metrics::RunningJob::start(&job.id);
    let spec: JobSpec =
        serde_json::from_value(job.spec.0.clone()).context("reading the stored job spec")?;
    let dir = work_dir(state, &job.id);
    let child_job = stage(state, &job, &spec, &dir, device.id).await?;
    if let Some(refusal) = memory_refusal(&child_job.spec, device) {
        queue::fail_job(
            &state.db,
            &job.id,
            worker_id,
            "insufficient_memory",
            &refusal,
        )
        .await?;
        state.hub.publish(&job.id).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Ok(());
    }
    let job_file = job_file_path(&dir);
    tokio::fs::write(&job_file, serde_json::to_vec(&child_job)?).await?;
    let mut child = spawn_child(state, &job_file, device.slots)?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();

    let lease = chrono::Duration::seconds(state.settings.lease_secs as i64);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(
        (state.settings.lease_secs * 1000 / 3).max(200),
    ));
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut pending: Vec<NewPoint> = Vec::new();
    let mut sent_command: Option<ChildCommand> = None;
    let mut shutting_down = false;
    let mut last_tokens: i64 = 0;
    let mut eta: Option<chrono::DateTime<chrono::Utc>> = None;
    let keep = spec.hyperparameters().n_checkpoints.unwrap_or(3).max(1) as usize;

    let ending = loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else {
                    // stdout closed: the child is exiting without a report.
                    let status = child.wait().await?;
                    break Ending::Crashed(describe_exit(status));
                };
                let msg: ChildMessage = match serde_json::from_str(&line) {
                    Ok(m) => m,
                    Err(_) => { tracing::debug!(line, "child said something that is not a message"); continue; }
                };
                match msg {
                    ChildMessage::Phase { phase, done, total } => {
                        if let Some(ev) = phase_event(&phase, done, total) {
                            queue::insert_event(&state.db, &job.id, &ev).await?;
                        }
                    }
                    ChildMessage::Step(m) => {
                        running.step(m.step, m.tokens_per_second);
                        last_tokens = m.trained_tokens as i64;
                        eta = Some(crate::ids::now() + chrono::Duration::milliseconds((m.eta_seconds * 1000.0) as i64));
                        let mut data = serde_json::to_value(&m)?;
                        // When the step reached the service: the start of its delivery lag.
                        data["reported_at"] = json!(chrono::Utc::now().timestamp_micros() as f64 / 1e6);
                        pending.push(NewPoint { step: m.step as i64, kind: "train", data });
                        if pending.len() >= FLUSH_AT { flush_points(state, &job.id, &mut pending).await?; }
                    }
                    ChildMessage::Eval(m) => {
                        pending.push(NewPoint { step: m.step as i64, kind: "eval", data: serde_json::to_value(&m)? });
                        flush_points(state, &job.id, &mut pending).await?;
                    }
                    ChildMessage::Samples(s) => {
                        pending.push(NewPoint { step: s.step as i64, kind: metrics::SAMPLE_KIND, data: serde_json::to_value(&s)? });
                        flush_points(state, &job.id, &mut pending).await?;
                    }
                    ChildMessage::Checkpoint { step, path } => {
                        flush_points(state, &job.id, &mut pending).await?;
                        if let Err(e) = save_checkpoint(state, &job.id, step, &path, keep).await {
                            let _ = child.kill().await;
                            let full = e.chain().any(crate::blob::is_storage_full);
                            break Ending::StoreFailed { step, error: format!("{e:#}"), full };
                        }
                    }
                    ChildMessage::Done(outcome) => {
                        let _ = child.wait().await;
                        break Ending::Reported(outcome);
                    }
                    ChildMessage::Failed { code, message } => {
                        let _ = child.wait().await;
                        break Ending::Failed { code, message };
                    }
                }
            }
            _ = flush.tick() => {
                flush_points(state, &job.id, &mut pending).await?;
                // Cancel and pause are user actions on the job row: look every tick, so the
                // child hears of them within a step or two.
                if let Some(status) = crate::store::jobs::status_of(&state.db, &job.id).await? {
                    follow_status(state, &job.id, worker_id, &status, &mut stdin, &mut sent_command).await?;
                }
            }
            _ = heartbeat.tick() => {
                match queue::heartbeat(&state.db, &job.id, worker_id, lease).await? {
                    LeaseState::Lost => {
                        let _ = child.kill().await;
                        break Ending::LeaseLost;
                    }
                    LeaseState::Held { status } => {
                        let _ = queue::record_progress(&state.db, &job.id, worker_id, last_tokens, eta).await;
                        follow_status(state, &job.id, worker_id, &status, &mut stdin, &mut sent_command).await?;
                    }
                }
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                if sent_command.is_none() {
                    let _ = stdin.write_all(ChildCommand::Pause.line().as_bytes()).await;
                    let _ = stdin.flush().await;
                    sent_command = Some(ChildCommand::Pause);
                }
            }
        }
    };
    flush_points(state, &job.id, &mut pending).await?;
    let terminal = match ending {
        Ending::LeaseLost => {
            tracing::warn!(job = %job.id, "lease lost; another worker has the job");
            false
        }
        Ending::StoreFailed { step, error, full } => {
            let kept = checkpoints::list_checkpoints(&state.db, &job.id)
                .await?
                .first()
                .map_or(
                    "none yet: it restarts from the beginning".to_string(),
                    |c| format!("step {}", c.step),
                );
            let (what, code, when) = if full {
                (
                    "is full and could not take",
                    "insufficient_storage",
                    "there is space",
                )
            } else {
                (
                    "failed to save",
                    "storage_unavailable",
                    "the store answers again",
                )
            };
            let message = format!(
                "the blob store {what} the checkpoint of step {step} ({error}); the job is \
                 paused and keeps its last stored checkpoint ({kept}). Resume it once {when}"
            );
            tracing::error!(job = %job.id, %message, "blob store failure during training");
            queue::pause_for_store_failure(&state.db, &job.id, worker_id, &message, code).await?;
            false
        }
        Ending::Crashed(how) => {
            let msg = format!(
                "the training process exited unexpectedly ({how}); the server is unaffected"
            );
            queue::fail_job(
                &state.db,
                &job.id,
                worker_id,
                "training_process_crashed",
                &msg,
            )
            .await?;
            true
        }
        Ending::Failed { code, message } => {
            queue::fail_job(&state.db, &job.id, worker_id, &code, &message).await?;
            true
        }
        Ending::Reported(outcome) => match outcome.stopped {
            Some(Stopped::Cancelled) => {
                queue::drop_lease(&state.db, &job.id, worker_id).await?;
                true
            }
            Some(Stopped::Paused) if shutting_down && sent_command == Some(ChildCommand::Pause) => {
                queue::requeue_job(&state.db, &job.id, worker_id).await?;
                false
            }
            Some(Stopped::Paused) => {
                // A pause is the user's choice, not a failure: the attempt is given back.
                queue::release_paused(&state.db, &job.id, worker_id).await?;
                false
            }
            None | Some(Stopped::EarlyStopped) => {
                if outcome.stopped == Some(Stopped::EarlyStopped) {
                    queue::insert_event(
                        &state.db,
                        &job.id,
                        &NewEvent::info(
                            "message",
                            format!(
                                "Early stopping at step {}: validation loss stopped improving",
                                outcome.steps_completed
                            ),
                        ),
                    )
                    .await?;
                }
                crate::jobs::results::publish_results(
                    &state.db,
                    &state.blobs,
                    &job,
                    &spec,
                    worker_id,
                    &outcome,
                )
                .await?;
                true
            }
        },
    };
    state.hub.publish(&job.id).await;
    if terminal {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    Ok(())
}

/// Why a job must not start here: candle aborts the whole process on out-of-memory, so a job
/// whose estimated peak exceeds what the slot's device has (the machine's available memory for
/// the CPU, the GPU's own memory for a GPU, which the slot has to itself) is refused before it
/// starts.
fn memory_refusal(spec: &JobSpec, device: &SlotDevice) -> Option<String> {
    let files: Vec<&Path> = spec
        .training_file_refs()
        .into_iter()
        .map(Path::new)
        .collect();
    let estimate = crate::train::job_estimate::estimate_job(spec, &files, false).ok()?;
    let (available, what) = match device.id {
        DeviceId::Cpu => (crate::machine::available_memory_bytes()?, "this worker has"),
        DeviceId::Cuda(_) => (device.info.memory_bytes?, "its GPU has"),
    };
    let need = estimate.memory.total;
    (need > available).then(|| {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        format!(
            "the job needs about {:.1} GiB (weights, gradients, AdamW state and activations) but {what} {:.1} GiB available; use a smaller model, batch size or sequence length",
            gib(need),
            gib(available)
        )
    })
}

/// Acts on the job's status while its training process runs: a cancel or pause goes to the
/// process (once); a job found `queued` was paused and resumed before this worker acted on the
/// pause, so, unless the process was already told to stop, it simply keeps running (the status
/// goes back to `running`; the queue leaves a leased job alone, so no other worker starts it).
async fn follow_status(
    state: &AppState,
    job_id: &str,
    worker_id: &str,
    status: &JobStatus,
    stdin: &mut tokio::process::ChildStdin,
    sent: &mut Option<ChildCommand>,
) -> anyhow::Result<()> {
    if *status == JobStatus::Queued && sent.is_none() {
        if queue::keep_running_resumed(&state.db, job_id, worker_id).await? {
            state.hub.publish(job_id).await;
        }
        return Ok(());
    }
    send_for_status(stdin, status, sent).await;
    Ok(())
}

/// Tells the child to stop when the job's status asks for it, once.
async fn send_for_status(
    stdin: &mut tokio::process::ChildStdin,
    status: &JobStatus,
    sent: &mut Option<ChildCommand>,
) {
    let wanted = match status {
        JobStatus::Cancelled => ChildCommand::Cancel,
        JobStatus::Paused => ChildCommand::Pause,
        _ => return,
    };
    if *sent != Some(wanted) {
        let _ = stdin.write_all(wanted.line().as_bytes()).await;
        let _ = stdin.flush().await;
        *sent = Some(wanted);
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(6)) => "aborted (signal 6), as on running out of memory".to_string(),
        (_, Some(9)) => "killed (signal 9), possibly by the out-of-memory killer".to_string(),
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exit code {c} without a report"),
        (None, None) => "unknown exit".to_string(),
    }
}

async fn flush_points(
    state: &AppState,
    job_id: &str,
    pending: &mut Vec<NewPoint>,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    metrics::insert_points(&state.db, job_id, pending).await?;
    metrics::update_summary(&state.db, job_id, pending).await?;
    pending.clear();
    state.hub.publish(job_id).await;
    Ok(())
}

/// Copies a checkpoint folder to the blob store, records it, and keeps only the newest `keep`.
async fn save_checkpoint(
    state: &AppState,
    job_id: &str,
    step: u64,
    path: &Path,
    keep: usize,
) -> anyhow::Result<()> {
    let prefix =
        crate::blob::keys::checkpoint(job_id, &crate::train::checkpoint::folder_name(step));
    state.blobs.put_dir(path, &prefix).await?;
    let m = metrics::point_at(&state.db, job_id, step as i64).await?;
    checkpoints::insert_checkpoint(&state.db, job_id, step as i64, &prefix, &m).await?;
    // Stored: the local copy is no longer needed (the child leaves its folders to the slot, so
    // none disappears before it is copied; a resume downloads from the blob store).
    if let Err(e) = tokio::fs::remove_dir_all(path).await {
        tracing::debug!(error = %e, path = %path.display(), "could not remove a stored checkpoint's folder");
    }
    queue::insert_event(
        &state.db,
        job_id,
        &NewEvent::info("message", format!("Checkpoint saved at step {step}"))
            .with_data(json!({"step": step})),
    )
    .await?;
    for old in checkpoints::list_checkpoints(&state.db, job_id)
        .await?
        .into_iter()
        .skip(keep)
    {
        state.blobs.delete_dir(&old.blob_path).await?;
        checkpoints::delete_checkpoint(&state.db, &old.id).await?;
    }
    Ok(())
}
