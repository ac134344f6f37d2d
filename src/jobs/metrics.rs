//! A job's metric series: every train and eval point merged per step, as `/metrics` answers it
//! and as the results file a finished job leaves behind (CSV).

use serde_json::{Map, Value, json};

use crate::store::Db;
use crate::store::metrics;

/// Columns of the metrics CSV (and of the results file), in order.
pub const METRIC_COLUMNS: [&str; 12] = [
    "step",
    "epoch",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_perplexity",
    "valid_mean_token_accuracy",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "trained_tokens",
    "eta_seconds",
];

/// Every point of a job, train and eval merged per step, oldest first.
pub async fn metric_series(db: &Db, job_id: &str) -> Result<Vec<Map<String, Value>>, sqlx::Error> {
    let mut by_step: std::collections::BTreeMap<i64, Map<String, Value>> = Default::default();
    let mut after = 0;
    loop {
        let rows = metrics::list_points(db, job_id, after, 5000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows {
            let point = by_step.entry(r.step).or_default();
            point.insert("step".into(), json!(r.step));
            if let Value::Object(o) = r.data.0 {
                point.extend(o);
            }
        }
    }
    Ok(by_step.into_values().collect())
}

/// The series as CSV with [`METRIC_COLUMNS`]; absent values are empty.
pub fn series_csv(series: &[Map<String, Value>]) -> String {
    let mut out = METRIC_COLUMNS.join(",");
    out.push('\n');
    for p in series {
        let cells: Vec<String> = METRIC_COLUMNS
            .iter()
            .map(|c| match p.get(*c) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
