//! Checkpoints of a job: where each one's folder lives in the blob store, and its metrics.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::Db;
use crate::ids::{new_id, now};
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointRow {
    pub id: String,
    pub job_id: String,
    pub step: i64,
    pub blob_path: String,
    pub metrics: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, job_id, step, blob_path, metrics, created_at";

/// Records a checkpoint whose files are already in the blob store under `blob_path`. A step
/// recorded before (a replay after resume) keeps its first record.
pub async fn insert_checkpoint(
    db: &Db,
    job_id: &str,
    step: i64,
    blob_path: &str,
    metrics: &Value,
) -> Result<(), sqlx::Error> {
    let sql = "insert into checkpoints (id, job_id, step, blob_path, metrics, created_at) values ($1, $2, $3, $4, $5, $6)
               on conflict (job_id, step) do nothing";
    with_db!(db, p => sqlx::query(sql).bind(new_id("ftckpt")).bind(job_id).bind(step).bind(blob_path)
        .bind(Json(metrics)).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Newest first.
pub async fn list_checkpoints(db: &Db, job_id: &str) -> Result<Vec<CheckpointRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from checkpoints where job_id = $1 order by step desc");
    with_db!(db, p => sqlx::query_as::<_, CheckpointRow>(sqlx::AssertSqlSafe(sql)).bind(job_id).fetch_all(p).await)
}

pub async fn delete_checkpoint(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, p => sqlx::query("delete from checkpoints where id = $1").bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
