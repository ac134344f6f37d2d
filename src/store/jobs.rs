//! Job rows and their status changes; every change writes its event in the same transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::Db;
use super::events::{EventRow, NewEvent};
use super::job_status::JobStatus;
use crate::ids::now;
use crate::with_db;

/// A row of `jobs`, its status typed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub org_id: String,
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub suffix: Option<String>,
    pub seed: i64,
    pub method_type: String,
    pub spec: Json<Value>,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub error: Option<Json<Value>>,
    pub fine_tuned_model: Option<String>,
    pub trained_tokens: Option<i64>,
    pub estimated_finish: Option<DateTime<Utc>>,
    pub result_files: Json<Value>,
    pub metadata: Option<Json<Value>>,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every hyperparameter as the trainer will resolve it (defaults filled in, the learning rate
    /// for the base model's size), written when the job is created.
    pub resolved: Option<Json<Value>>,
    /// The run so far in a few figures (last and best losses, the last step), kept up to date as
    /// metric points are written.
    pub summary: Option<Json<Value>>,
}

/// Every column of a job row, in [`JobRow`]'s order.
pub(crate) const COLUMNS: &str = "id, org_id, model, training_file, validation_file, suffix, seed, method_type, spec, \
    status, error, fine_tuned_model, trained_tokens, estimated_finish, result_files, metadata, priority, \
    attempts, max_attempts, created_at, started_at, finished_at, resolved, summary";

/// Writes one event row; binds id, job_id, level, kind, message, data, created_at.
pub(crate) const INSERT_EVENT: &str = "insert into job_events (id, job_id, level, kind, message, data, created_at) values ($1, $2, $3, $4, $5, $6, $7)";

/// One file of a job, as `job_files` keeps it: its role (`training` or `validation`), the name
/// its metrics carry and, for a training file, its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    pub file_id: String,
    pub role: &'static str,
    pub name: String,
    pub weight: Option<f64>,
}

impl JobFile {
    pub fn new(file_id: &str, role: &'static str, name: &str, weight: Option<f64>) -> Self {
        JobFile {
            file_id: file_id.to_string(),
            role,
            name: name.to_string(),
            weight,
        }
    }
}

/// Writes a new job with its `created` event and its files, in one transaction.
/// Inserts a job, its `created` event and its files atomically.
pub async fn insert_job(
    db: &Db,
    j: &JobRow,
    created: &NewEvent,
    files: &[JobFile],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "insert into jobs ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22, $23, $24)"
    );
    let ev = created.to_row(&j.id);
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&j.id).bind(&j.org_id).bind(&j.model).bind(&j.training_file).bind(&j.validation_file)
            .bind(&j.suffix).bind(j.seed).bind(&j.method_type).bind(&j.spec).bind(j.status.as_str()).bind(&j.error)
            .bind(&j.fine_tuned_model).bind(j.trained_tokens).bind(j.estimated_finish).bind(&j.result_files)
            .bind(&j.metadata).bind(j.priority).bind(j.attempts).bind(j.max_attempts).bind(j.created_at)
            .bind(j.started_at).bind(j.finished_at).bind(&j.resolved).bind(&j.summary)
            .execute(&mut *tx).await?;
        sqlx::query(INSERT_EVENT)
            .bind(&ev.id).bind(&ev.job_id).bind(&ev.level).bind(&ev.kind).bind(&ev.message).bind(&ev.data)
            .bind(ev.created_at)
            .execute(&mut *tx).await?;
        for f in files {
            sqlx::query("insert into job_files (job_id, file_id, role, name, weight, created_at)
                         values ($1, $2, $3, $4, $5, $6)")
                .bind(&j.id).bind(&f.file_id).bind(f.role).bind(&f.name).bind(f.weight).bind(j.created_at)
                .execute(&mut *tx).await?;
        }
        tx.commit().await
    })
}

/// The job `id` if it belongs to `org_id`.
pub async fn get_job(db: &Db, org_id: &str, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from jobs where id = $1 and org_id = $2");
    with_db!(db, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql)).bind(id).bind(org_id).fetch_optional(p).await)
}

/// Newest first; `after` is the id of the last job of the previous page.
pub async fn list_jobs(
    db: &Db,
    org_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from jobs where org_id = $1 and ($2 is null or id < $2) order by id desc limit $3"
    );
    with_db!(db, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
        .bind(org_id).bind(after).bind(limit).fetch_all(p).await)
}

/// The outcome of asking for a status change.
#[derive(Debug)]
pub enum Transition {
    /// Done; the job as it is now, and the event written.
    Moved(Box<JobRow>, EventRow),
    /// The job is in a state from which that change is not allowed.
    NotAllowed(JobStatus),
    /// No such job in this organization.
    NotFound,
}

/// Moves a job to `to` if its current state allows it, writing `event` in the same transaction.
/// The update is conditional on the state read, so two racing changes cannot both win.
pub async fn transition(
    db: &Db,
    org_id: &str,
    id: &str,
    to: JobStatus,
    event: &NewEvent,
) -> Result<Transition, sqlx::Error> {
    for _ in 0..3 {
        let Some(job) = get_job(db, org_id, id).await? else {
            return Ok(Transition::NotFound);
        };
        let from = job.status;
        if !from.can_become(to) {
            return Ok(Transition::NotAllowed(from));
        }
        let finished_at = to.is_terminal().then(now);
        let ev = event.to_row(id);
        let sql = format!(
            "update jobs set status = $1, finished_at = coalesce($2, finished_at) \
             where id = $3 and status = $4 returning {COLUMNS}"
        );
        let moved = with_db!(db, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql))
                .bind(to.as_str()).bind(finished_at).bind(id).bind(from.as_str())
                .fetch_optional(&mut *tx).await?;
            if row.is_some() {
                sqlx::query(INSERT_EVENT)
                    .bind(&ev.id).bind(&ev.job_id).bind(&ev.level).bind(&ev.kind).bind(&ev.message)
                    .bind(&ev.data).bind(ev.created_at)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            row
        });
        if let Some(row) = moved {
            return Ok(Transition::Moved(Box::new(row), ev));
        }
        // Someone else changed the status between our read and write: look again.
    }
    Err(sqlx::Error::Protocol(
        "job status kept changing under a transition".into(),
    ))
}

/// The job `id` whatever its organization: for workers and internal readers, never for requests.
pub async fn get_job_any_org(db: &Db, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from jobs where id = $1");
    with_db!(db, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await)
}

/// The job's status now, whatever its organization.
pub async fn status_of(db: &Db, id: &str) -> Result<Option<JobStatus>, sqlx::Error> {
    let text = with_db!(db, p => sqlx::query_scalar::<_, String>("select status from jobs where id = $1").bind(id).fetch_optional(p).await)?;
    text.map(JobStatus::try_from)
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Every job in `status`, oldest first, whatever its organization.
pub async fn jobs_in_status(db: &Db, status: JobStatus) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from jobs where status = $1 order by id");
    with_db!(db, p => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql)).bind(status.as_str()).fetch_all(p).await)
}

/// Records why a job is failing, before the transition that fails it.
pub async fn set_error(db: &Db, id: &str, code: &str, message: &str) -> Result<(), sqlx::Error> {
    let error = Json(serde_json::json!({"code": code, "message": message, "param": null}));
    with_db!(db, p => sqlx::query("update jobs set error = $1 where id = $2").bind(&error).bind(id)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
