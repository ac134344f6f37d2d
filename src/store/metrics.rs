//! Metric points of a job: one row per (step, kind), where kind is `train` (an optimiser step) or
//! `eval` (a validation pass). Written in batches; a point already stored (a step replayed after a
//! resume) is skipped, so each step appears exactly once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::Db;
use crate::ids::now;
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MetricRow {
    pub seq: i64,
    pub job_id: String,
    pub step: i64,
    pub kind: String,
    pub data: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// A point waiting to be written.
#[derive(Debug, Clone)]
pub struct NewPoint {
    pub step: i64,
    pub kind: &'static str,
    pub data: Value,
}

/// Writes `points` in one statement; returns how many were new.
pub async fn insert_points(db: &Db, job_id: &str, points: &[NewPoint]) -> Result<u64, sqlx::Error> {
    if points.is_empty() {
        return Ok(0);
    }
    let t = now();
    let mut sql =
        String::from("insert into job_metrics (job_id, step, kind, data, created_at) values ");
    for i in 0..points.len() {
        let b = i * 5;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql.push_str(" on conflict (job_id, step, kind) do nothing");
    with_db!(db, p => {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for pt in points {
            q = q.bind(job_id).bind(pt.step).bind(pt.kind).bind(Json(&pt.data)).bind(t);
        }
        q.execute(p).await.map(|r| r.rows_affected())
    })
}

/// Points of a job after sequence number `after_seq`, oldest first.
pub async fn list_points(
    db: &Db,
    job_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<MetricRow>, sqlx::Error> {
    let sql = "select seq, job_id, step, kind, data, created_at from job_metrics
               where job_id = $1 and seq > $2 order by seq limit $3";
    with_db!(db, p => sqlx::query_as::<_, MetricRow>(sql).bind(job_id).bind(after_seq).bind(limit).fetch_all(p).await)
}

/// The metrics recorded at `step` (train and eval merged), for a checkpoint's record.
pub async fn point_at(db: &Db, job_id: &str, step: i64) -> Result<Value, sqlx::Error> {
    let sql = "select seq, job_id, step, kind, data, created_at from job_metrics where job_id = $1 and step = $2";
    let rows = with_db!(db, p => sqlx::query_as::<_, MetricRow>(sql).bind(job_id).bind(step).fetch_all(p).await)?;
    let mut merged = serde_json::Map::new();
    for r in rows {
        if let Value::Object(o) = r.data.0 {
            merged.extend(o);
        }
    }
    Ok(Value::Object(merged))
}
