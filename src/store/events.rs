//! Job events: the human-readable log of everything that happened to a job.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::Db;
use crate::ids::{new_id, now};
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Position in the job's event log; 0 for an event not yet written.
    #[sqlx(default)]
    pub seq: i64,
    pub id: String,
    pub job_id: String,
    pub level: String,
    pub kind: String,
    pub message: String,
    pub data: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
}

/// An event about to be written; the id and time are assigned when it is.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub level: &'static str,
    /// `message` for free text, `status` for a status change, `metrics` and so on.
    pub kind: &'static str,
    pub message: String,
    pub data: Option<Value>,
}

impl NewEvent {
    pub fn info(kind: &'static str, message: impl Into<String>) -> Self {
        NewEvent {
            level: "info",
            kind,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn to_row(&self, job_id: &str) -> EventRow {
        EventRow {
            seq: 0,
            id: new_id("ftevent"),
            job_id: job_id.to_string(),
            level: self.level.to_string(),
            kind: self.kind.to_string(),
            message: self.message.clone(),
            data: self.data.clone().map(Json),
            created_at: now(),
        }
    }
}

/// Newest first, as OpenAI lists them; `after` is the id of the last event of the previous page.
pub async fn list_events(
    db: &Db,
    job_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let sql = "select seq, id, job_id, level, kind, message, data, created_at from job_events
               where job_id = $1 and ($2 is null or seq < (select seq from job_events where id = $2))
               order by seq desc limit $3";
    with_db!(db, p => sqlx::query_as::<_, EventRow>(sql).bind(job_id).bind(after).bind(limit).fetch_all(p).await)
}

/// Events of a job after sequence number `after_seq`, oldest first (for streaming).
pub async fn events_after(
    db: &Db,
    job_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let sql = "select seq, id, job_id, level, kind, message, data, created_at from job_events
               where job_id = $1 and seq > $2 order by seq limit $3";
    with_db!(db, p => sqlx::query_as::<_, EventRow>(sql).bind(job_id).bind(after_seq).bind(limit).fetch_all(p).await)
}

/// The newest event and metric sequence numbers of a job: where a live stream starts.
pub async fn stream_heads(db: &Db, job_id: &str) -> Result<(i64, i64), sqlx::Error> {
    let sql = "select coalesce((select max(seq) from job_events where job_id = $1), 0),
                      coalesce((select max(seq) from job_metrics where job_id = $1), 0)";
    with_db!(db, p => sqlx::query_as::<_, (i64, i64)>(sql).bind(job_id).fetch_one(p).await)
}
