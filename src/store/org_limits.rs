//! Per-organization limits, and the usage they are checked against.

use super::Db;
use crate::ids::now;
use crate::with_db;

/// An organization's limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct OrgLimits {
    /// Requests per second each of its keys may make (bursts up to one second's worth).
    pub requests_per_second: Option<f64>,
    /// Jobs validating, queued or running at once.
    pub max_running_jobs: Option<i64>,
    /// Bytes of its files (uploads and cleaned copies) kept at once.
    pub max_stored_bytes: Option<i64>,
}

/// The limits of `org_id` (none set: all `None`).
pub async fn get(db: &Db, org_id: &str) -> Result<OrgLimits, sqlx::Error> {
    let sql = "select requests_per_second, max_running_jobs, max_stored_bytes from org_limits where org_id = $1";
    let row = with_db!(db, p => sqlx::query_as::<_, OrgLimits>(sql).bind(org_id).fetch_optional(p).await)?;
    Ok(row.unwrap_or_default())
}

/// Replaces the limits of `org_id`.
pub async fn set(db: &Db, org_id: &str, limits: &OrgLimits) -> Result<(), sqlx::Error> {
    let sql = "insert into org_limits (org_id, requests_per_second, max_running_jobs, max_stored_bytes, updated_at)
               values ($1, $2, $3, $4, $5)
               on conflict (org_id) do update set requests_per_second = excluded.requests_per_second,
                 max_running_jobs = excluded.max_running_jobs, max_stored_bytes = excluded.max_stored_bytes,
                 updated_at = excluded.updated_at";
    with_db!(db, p => sqlx::query(sql).bind(org_id).bind(limits.requests_per_second)
        .bind(limits.max_running_jobs).bind(limits.max_stored_bytes).bind(now())
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Jobs of `org_id` validating, queued or running now.
pub async fn active_jobs(db: &Db, org_id: &str) -> Result<i64, sqlx::Error> {
    let sql = "select count(*) from jobs where org_id = $1 and status in ('validating_files', 'queued', 'running')";
    with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).bind(org_id).fetch_one(p).await)
}

/// Bytes of the files `org_id` keeps.
pub async fn stored_bytes(db: &Db, org_id: &str) -> Result<i64, sqlx::Error> {
    let sql = "select cast(coalesce(sum(bytes), 0) as bigint) from files where org_id = $1";
    let n = with_db!(db, p => sqlx::query_scalar::<_, Option<i64>>(sql).bind(org_id).fetch_one(p).await)?;
    Ok(n.unwrap_or(0))
}
