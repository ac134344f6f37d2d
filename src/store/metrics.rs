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

/// The kind of the point that holds an evaluation's sample answers (not a metric: the series and
/// checkpoints' metrics leave it out; `GET .../samples` and SSE `sample` messages carry it).
pub const SAMPLE_KIND: &str = "sample";

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

/// Folds `points` into `summary`: the last step, the last train loss, the last and the best
/// validation loss (and its step). Folding the same points twice changes nothing.
pub fn fold_summary(summary: &mut serde_json::Map<String, Value>, points: &[NewPoint]) {
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let at = |s: &serde_json::Map<String, Value>, k: &str| s.get(k).and_then(Value::as_i64);
    for p in points {
        match p.kind {
            "train" => {
                if at(summary, "last_step").is_none_or(|s| p.step >= s) {
                    summary.insert("last_step".into(), p.step.into());
                    if let Some(l) = num(&p.data, "train_loss") {
                        summary.insert("final_train_loss".into(), l.into());
                    }
                }
            }
            "eval" => {
                let Some(l) = num(&p.data, "valid_loss") else {
                    continue;
                };
                if at(summary, "final_valid_step").is_none_or(|s| p.step >= s) {
                    summary.insert("final_valid_step".into(), p.step.into());
                    summary.insert("final_valid_loss".into(), l.into());
                }
                let best = summary.get("best_valid_loss").and_then(Value::as_f64);
                if best.is_none_or(|b| l < b) {
                    summary.insert("best_valid_loss".into(), l.into());
                    summary.insert("best_valid_step".into(), p.step.into());
                }
            }
            _ => {}
        }
    }
}

/// Keeps the job's `summary` ([`fold_summary`]) up to date with `points` just written.
pub async fn update_summary(db: &Db, job_id: &str, points: &[NewPoint]) -> Result<(), sqlx::Error> {
    let current = with_db!(db, p => sqlx::query_scalar::<_, Option<Json<Value>>>("select summary from jobs where id = $1")
        .bind(job_id).fetch_optional(p).await)?;
    let mut summary = match current.flatten() {
        Some(Json(Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    };
    fold_summary(&mut summary, points);
    with_db!(db, p => sqlx::query("update jobs set summary = $1 where id = $2")
        .bind(Json(Value::Object(summary))).bind(job_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The sample answers of a job's evaluations, oldest first (`data` is a `SampleSet`).
pub async fn list_samples(db: &Db, job_id: &str) -> Result<Vec<MetricRow>, sqlx::Error> {
    let sql = "select seq, job_id, step, kind, data, created_at from job_metrics
               where job_id = $1 and kind = 'sample' order by step";
    with_db!(db, p => sqlx::query_as::<_, MetricRow>(sql).bind(job_id).fetch_all(p).await)
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
    let sql = "select seq, job_id, step, kind, data, created_at from job_metrics
               where job_id = $1 and step = $2 and kind <> 'sample'";
    let rows = with_db!(db, p => sqlx::query_as::<_, MetricRow>(sql).bind(job_id).bind(step).fetch_all(p).await)?;
    let mut merged = serde_json::Map::new();
    for r in rows {
        if let Value::Object(o) = r.data.0 {
            merged.extend(o);
        }
    }
    Ok(Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_keeps_the_last_and_the_best_whatever_the_batches() {
        let point = |step, kind, data: Value| NewPoint { step, kind, data };
        let batches = [
            vec![
                point(1, "train", json!({"train_loss": 3.0})),
                point(2, "train", json!({"train_loss": 2.5})),
                point(2, "eval", json!({"valid_loss": 2.4})),
            ],
            vec![
                point(3, "train", json!({"train_loss": 2.0})),
                point(4, "eval", json!({"valid_loss": 2.6})),
            ],
            // A replayed point (a resumed run): nothing moves back.
            vec![point(2, "train", json!({"train_loss": 2.5}))],
        ];
        let mut s = serde_json::Map::new();
        for b in &batches {
            fold_summary(&mut s, b);
        }
        assert_eq!(
            Value::Object(s),
            json!({"last_step": 3, "final_train_loss": 2.0, "final_valid_step": 4,
                   "final_valid_loss": 2.6, "best_valid_loss": 2.4, "best_valid_step": 2})
        );
    }
}
