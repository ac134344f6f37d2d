//! Job events: the human-readable log of everything that happened to a job.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::Db;
use crate::ids::{new_id, now};
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
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
    let sql = "select id, job_id, level, kind, message, data, created_at from job_events
               where job_id = $1 and ($2 is null or seq < (select seq from job_events where id = $2))
               order by seq desc limit $3";
    with_db!(db, p => sqlx::query_as::<_, EventRow>(sql).bind(job_id).bind(after).bind(limit).fetch_all(p).await)
}
