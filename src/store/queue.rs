//! The job queue: claiming work with a lease, renewing it by heartbeat, and giving it back.
//!
//! A worker claims the most urgent queued job (priority, then age), or a running job whose lease
//! has expired (its worker died), in one statement that also takes the lease, records the first
//! heartbeat and counts the attempt. On Postgres the candidate row is locked with
//! `for update skip locked`, so concurrent claimers never wait on each other or take the same job;
//! SQLite has a single writer, so the same `update ... where id = (select ...)` is already atomic.

use chrono::{DateTime, Duration, Utc};

use super::Db;
use super::events::NewEvent;
use super::job_status::JobStatus;
use super::jobs::{COLUMNS, INSERT_EVENT, JobRow};
use crate::devices::DeviceKind;
use crate::ids::now;
use crate::with_db;

/// Claims the next job for `worker_id`, a slot on a device of `kind`, holding it for `lease`:
/// only jobs whose `"device"` is absent, `any` or `kind`. The claimed job is `running`.
pub async fn claim_next_job(
    db: &Db,
    worker_id: &str,
    lease: Duration,
    kind: DeviceKind,
) -> Result<Option<JobRow>, sqlx::Error> {
    fail_exhausted_jobs(db).await?;
    let t = now();
    // A queued job still leased is one resumed while its worker was stopping it: that worker
    // lets go when its training process has stopped (or its lease runs out), not before.
    let candidates = |device: &str| {
        format!(
            "select id from jobs
        where ((status = 'queued' and (lease_owner is null or lease_expires_at < $3))
           or (status = 'running' and lease_expires_at < $3))
          and coalesce({device}, 'any') in ('any', $4)
        order by priority desc, id limit 1"
        )
    };
    let job = match db {
        Db::Pg(p) => {
            let sql = format!(
                "update jobs set status = 'running', lease_owner = $1, lease_expires_at = $2, heartbeat_at = $3,
                 attempts = attempts + 1, started_at = coalesce(started_at, $3)
                 where id = ({} for update skip locked) returning {COLUMNS}",
                candidates("spec->>'device'")
            );
            sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
                .bind(worker_id)
                .bind(t + lease)
                .bind(t)
                .bind(kind.as_str())
                .fetch_optional(p)
                .await?
        }
        Db::Sqlite(p) => {
            let sql = format!(
                "update jobs set status = 'running', lease_owner = $1, lease_expires_at = $2, heartbeat_at = $3,
                 attempts = attempts + 1, started_at = coalesce(started_at, $3)
                 where id = ({}) returning {COLUMNS}",
                candidates("json_extract(spec, '$.device')")
            );
            sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
                .bind(worker_id)
                .bind(t + lease)
                .bind(t)
                .bind(kind.as_str())
                .fetch_optional(p)
                .await?
        }
    };
    if let Some(j) = &job {
        let msg = if j.attempts > 1 {
            format!(
                "Job resumed by worker {worker_id} (attempt {} of {})",
                j.attempts, j.max_attempts
            )
        } else {
            format!("Job started by worker {worker_id}")
        };
        let ev = NewEvent::info("status", msg)
            .with_data(serde_json::json!({"status": "running", "attempt": j.attempts}));
        insert_event(db, &j.id, &ev).await?;
    }
    Ok(job)
}

/// Jobs whose lease expired after their last allowed attempt fail with the last error they had.
async fn fail_exhausted_jobs(db: &Db) -> Result<(), sqlx::Error> {
    let t = now();
    let sql = "update jobs set status = 'failed', finished_at = $1, lease_owner = null,
               error = coalesce(error, $2)
               where status = 'running' and lease_expires_at < $1 and attempts >= max_attempts
               returning id";
    let err = sqlx::types::Json(serde_json::json!({
        "code": "worker_lost",
        "message": "the job's worker stopped answering on its last allowed attempt",
        "param": null
    }));
    let ids: Vec<String> =
        with_db!(db, p => sqlx::query_scalar(sql).bind(t).bind(&err).fetch_all(p).await)?;
    for id in ids {
        let ev = NewEvent::info(
            "status",
            "Job failed: its worker stopped answering on the last allowed attempt",
        )
        .with_data(serde_json::json!({"status": "failed"}));
        insert_event(
            db,
            &id,
            &NewEvent {
                level: "error",
                ..ev
            },
        )
        .await?;
    }
    Ok(())
}

/// What a heartbeat learns about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; `status` is the job's status now (`cancelled` or `paused` tell the worker to stop).
    Held { status: JobStatus },
    /// Another worker holds it now, or the job is gone: stop without writing anything more.
    Lost,
}

/// Renews the lease of `job_id` held by `worker_id`.
pub async fn heartbeat(
    db: &Db,
    job_id: &str,
    worker_id: &str,
    lease: Duration,
) -> Result<LeaseState, sqlx::Error> {
    let t = now();
    let sql = "update jobs set heartbeat_at = $1, lease_expires_at = $2
               where id = $3 and lease_owner = $4 returning status";
    let status: Option<String> = with_db!(db, p => sqlx::query_scalar(sql).bind(t).bind(t + lease).bind(job_id).bind(worker_id).fetch_optional(p).await)?;
    Ok(match status {
        Some(status) => LeaseState::Held {
            status: JobStatus::try_from(status).map_err(|e| sqlx::Error::Decode(e.into()))?,
        },
        None => LeaseState::Lost,
    })
}

/// Marks a job `succeeded` with its results; false if `worker_id` no longer holds it. A pause (or
/// a pause and a resume) that reached the job after its training had ended does not undo the
/// finished work: the job succeeds. A cancel does win.
pub async fn complete_job(
    db: &Db,
    job_id: &str,
    worker_id: &str,
    fine_tuned_model: &str,
    trained_tokens: i64,
    result_files: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let sql = "update jobs set status = 'succeeded', finished_at = $1, lease_owner = null, lease_expires_at = null,
               fine_tuned_model = $2, trained_tokens = $3, result_files = $4, estimated_finish = null
               where id = $5 and lease_owner = $6 and status in ('running', 'paused', 'queued')";
    let files = sqlx::types::Json(result_files.clone());
    let n = with_db!(db, p => sqlx::query(sql).bind(now()).bind(fine_tuned_model).bind(trained_tokens).bind(&files)
        .bind(job_id).bind(worker_id).execute(p).await?.rows_affected());
    if n > 0 {
        let ev = NewEvent::info("status", "The job has successfully completed")
            .with_data(serde_json::json!({"status": "succeeded"}));
        insert_event(db, job_id, &ev).await?;
    }
    Ok(n > 0)
}

/// Marks a job `failed` with a clear error; false if `worker_id` no longer holds it.
pub async fn fail_job(
    db: &Db,
    job_id: &str,
    worker_id: &str,
    code: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "update jobs set status = 'failed', finished_at = $1, lease_owner = null, lease_expires_at = null,
               error = $2, estimated_finish = null
               where id = $3 and lease_owner = $4 and status in ('running', 'paused', 'queued')";
    let error =
        sqlx::types::Json(serde_json::json!({"code": code, "message": message, "param": null}));
    let n = with_db!(db, p => sqlx::query(sql).bind(now()).bind(&error).bind(job_id).bind(worker_id)
        .execute(p).await?.rows_affected());
    if n > 0 {
        let ev = NewEvent {
            level: "error",
            ..NewEvent::info("status", format!("Job failed: {message}"))
                .with_data(serde_json::json!({"status": "failed"}))
        };
        insert_event(db, job_id, &ev).await?;
    }
    Ok(n > 0)
}

/// Gives a running job back to the queue (the worker is shutting down); the attempt is not
/// counted against the job, and the next worker resumes from the last checkpoint.
pub async fn requeue_job(db: &Db, job_id: &str, worker_id: &str) -> Result<bool, sqlx::Error> {
    let sql = "update jobs set status = 'queued', lease_owner = null, lease_expires_at = null,
               attempts = attempts - 1, estimated_finish = null
               where id = $1 and lease_owner = $2 and status = 'running'";
    let n = with_db!(db, p => sqlx::query(sql).bind(job_id).bind(worker_id).execute(p).await?.rows_affected());
    if n > 0 {
        let ev = NewEvent::info(
            "status",
            "Worker shut down; the job is queued to resume from its last checkpoint",
        )
        .with_data(serde_json::json!({"status": "queued"}));
        insert_event(db, job_id, &ev).await?;
    }
    Ok(n > 0)
}

/// A job paused and resumed again before its worker acted on the pause: its training process
/// never stopped, so the job is running again on this worker (true when it was put back).
pub async fn keep_running_resumed(
    db: &Db,
    job_id: &str,
    worker_id: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "update jobs set status = 'running' where id = $1 and lease_owner = $2 and status = 'queued'";
    let n = with_db!(db, p => sqlx::query(sql).bind(job_id).bind(worker_id).execute(p).await?.rows_affected());
    if n > 0 {
        let ev = NewEvent::info(
            "status",
            format!("Job resumed before worker {worker_id} had paused it; it keeps running there"),
        )
        .with_data(serde_json::json!({"status": "running"}));
        insert_event(db, job_id, &ev).await?;
    }
    Ok(n > 0)
}

/// Pauses a job whose worker could not store its work (the blob store failed or is full),
/// giving back the attempt: the store's outage is not the job's failure. The event says why,
/// with `code` (`storage_unavailable` or `insufficient_storage`).
pub async fn pause_for_store_failure(
    db: &Db,
    job_id: &str,
    worker_id: &str,
    message: &str,
    code: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "update jobs set status = 'paused', lease_owner = null, lease_expires_at = null,
               estimated_finish = null, attempts = case when attempts > 0 then attempts - 1 else 0 end
               where id = $1 and lease_owner = $2 and status in ('running', 'paused', 'queued')";
    let n = with_db!(db, p => sqlx::query(sql).bind(job_id).bind(worker_id).execute(p).await?.rows_affected());
    if n > 0 {
        let ev = NewEvent::info("status", format!("Job paused: {message}"))
            .with_data(serde_json::json!({"status": "paused", "code": code}));
        insert_event(
            db,
            job_id,
            &NewEvent {
                level: "error",
                ..ev
            },
        )
        .await?;
    }
    Ok(n > 0)
}

/// Lets go of a job its user paused, giving back the attempt its run counted: pausing and
/// resuming never uses up the job's attempts (only failures and lost workers do).
pub async fn release_paused(db: &Db, job_id: &str, worker_id: &str) -> Result<(), sqlx::Error> {
    let sql =
        "update jobs set lease_owner = null, lease_expires_at = null, estimated_finish = null,
               attempts = case when attempts > 0 then attempts - 1 else 0 end
               where id = $1 and lease_owner = $2";
    with_db!(db, p => sqlx::query(sql).bind(job_id).bind(worker_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Lets go of a job whose status a user already changed (cancelled, paused).
pub async fn drop_lease(db: &Db, job_id: &str, worker_id: &str) -> Result<(), sqlx::Error> {
    let sql = "update jobs set lease_owner = null, lease_expires_at = null, estimated_finish = null
               where id = $1 and lease_owner = $2";
    with_db!(db, p => sqlx::query(sql).bind(job_id).bind(worker_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records the progress figures shown on the job object while it runs.
pub async fn record_progress(
    db: &Db,
    job_id: &str,
    worker_id: &str,
    trained_tokens: i64,
    estimated_finish: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let sql = "update jobs set trained_tokens = $1, estimated_finish = $2 where id = $3 and lease_owner = $4";
    with_db!(db, p => sqlx::query(sql).bind(trained_tokens).bind(estimated_finish).bind(job_id).bind(worker_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn insert_event(db: &Db, job_id: &str, ev: &NewEvent) -> Result<(), sqlx::Error> {
    let row = ev.to_row(job_id);
    with_db!(db, p => sqlx::query(INSERT_EVENT)
        .bind(&row.id).bind(&row.job_id).bind(&row.level).bind(&row.kind).bind(&row.message).bind(&row.data)
        .bind(row.created_at)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
