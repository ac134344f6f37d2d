//! Models that jobs produced, per organization (presets and local folders are not stored here).

use chrono::{DateTime, Utc};

use super::Db;
use crate::ids::now;
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelRow {
    pub id: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub base_model: Option<String>,
    pub job_id: Option<String>,
    pub blob_path: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, org_id, kind, base_model, job_id, blob_path, created_at";

pub async fn insert_model(
    db: &Db,
    id: &str,
    org_id: &str,
    kind: &str,
    base_model: &str,
    job_id: &str,
    blob_path: &str,
) -> Result<(), sqlx::Error> {
    let sql = "insert into models (id, org_id, kind, base_model, job_id, blob_path, created_at)
               values ($1, $2, $3, $4, $5, $6, $7) on conflict (id) do nothing";
    with_db!(db, p => sqlx::query(sql).bind(id).bind(org_id).bind(kind).bind(base_model).bind(job_id).bind(blob_path)
        .bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Models of an organization, newest first.
pub async fn list_models(db: &Db, org_id: &str) -> Result<Vec<ModelRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from models where org_id = $1 order by created_at desc");
    with_db!(db, p => sqlx::query_as::<_, ModelRow>(sqlx::AssertSqlSafe(sql)).bind(org_id).fetch_all(p).await)
}

pub async fn get_model(db: &Db, org_id: &str, id: &str) -> Result<Option<ModelRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from models where org_id = $1 and id = $2");
    with_db!(db, p => sqlx::query_as::<_, ModelRow>(sqlx::AssertSqlSafe(sql)).bind(org_id).bind(id).fetch_optional(p).await)
}

/// Deletes model `id` of `org_id`; true when there was one.
pub async fn delete_model(db: &Db, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "delete from models where org_id = $1 and id = $2";
    let n = with_db!(db, p => sqlx::query(sql).bind(org_id).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Jobs of `org_id` that start from model `id` and have not ended.
pub async fn active_jobs_using(
    db: &Db,
    org_id: &str,
    id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = "select id from jobs where org_id = $1 and model = $2
               and status in ('validating_files', 'queued', 'running', 'paused') order by id";
    with_db!(db, p => sqlx::query_scalar::<_, String>(sql).bind(org_id).bind(id).fetch_all(p).await)
}
