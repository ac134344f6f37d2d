//! The `validating_files` step: before a job is queued, its files are checked again (they may
//! have been deleted or replaced since the request was checked) and their sizes recorded in an
//! event. A job left in `validating_files` by a crash is validated again at the next start.

use serde_json::json;
use tokio::sync::Notify;

use super::transition::move_job;
use crate::store::Db;
use crate::store::events::NewEvent;
use crate::store::files::{self, FileStatus};
use crate::store::job_status::JobStatus;
use crate::store::jobs::{self, JobRow, Transition};
use crate::stream::hub::Hub;

/// Checks `job`'s files and moves it to `queued` (waking idle worker slots through
/// `queue_wake`), or to `failed` with the reason; live watchers hear of it through `hub`.
pub async fn validate_and_queue(
    db: &Db,
    hub: &Hub,
    queue_wake: &Notify,
    job: &JobRow,
) -> Result<JobStatus, sqlx::Error> {
    let mut summary = Vec::new();
    let mut problem = None;
    // Every file the spec names (several with `training_files`); a spec that no longer parses
    // (it was checked when the job was created) falls back to the row's two columns.
    let spec = serde_json::from_value::<crate::spec::JobSpec>(job.spec.0.clone()).ok();
    let refs: Vec<(&str, String)> = match &spec {
        Some(spec) => spec
            .training_file_refs()
            .into_iter()
            .map(|f| ("training", f.to_string()))
            .chain(
                spec.validation_file_refs()
                    .into_iter()
                    .map(|f| ("validation", f.to_string())),
            )
            .collect(),
        None => std::iter::once(("training", job.training_file.clone()))
            .chain(
                job.validation_file
                    .iter()
                    .map(|v| ("validation", v.clone())),
            )
            .collect(),
    };
    for (label, id) in &refs {
        match files::get_file(db, &job.org_id, id).await? {
            Some(f) if f.status == FileStatus::Processed => {
                let examples = f
                    .report
                    .as_ref()
                    .and_then(|r| r.0.get("valid_examples"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                summary.push(format!(
                    "{label} file {id}: {examples} examples, {} bytes",
                    f.bytes
                ));
            }
            Some(f) => problem = Some(format!("{label} file {id} is {}", f.status)),
            None => problem = Some(format!("{label} file {id} no longer exists")),
        }
    }
    let (to, event) = match problem {
        None => (
            JobStatus::Queued,
            NewEvent::info(
                "status",
                format!("Files validated ({}); job queued", summary.join("; ")),
            )
            .with_data(json!({"status": "queued"})),
        ),
        Some(p) => (
            JobStatus::Failed,
            NewEvent {
                level: "error",
                ..NewEvent::info("status", format!("File validation failed: {p}"))
            }
            .with_data(json!({"status": "failed"})),
        ),
    };
    if to == JobStatus::Failed {
        jobs::set_error(db, &job.id, "invalid_file", &event.message).await?;
    }
    match move_job(db, hub, queue_wake, &job.org_id, &job.id, to, &event).await? {
        Transition::Moved(..) => Ok(to),
        Transition::NotAllowed(now) => Ok(now),
        Transition::NotFound => Ok(JobStatus::Cancelled),
    }
}

/// Validates every job a previous run left in `validating_files`.
pub async fn resume_pending(db: &Db, hub: &Hub, queue_wake: &Notify) -> Result<(), sqlx::Error> {
    for job in jobs::jobs_in_status(db, JobStatus::ValidatingFiles).await? {
        validate_and_queue(db, hub, queue_wake, &job).await?;
    }
    Ok(())
}
