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

/// Preference tuning's columns (TRL's names), after [`METRIC_COLUMNS`] when a series has them.
pub const PREFERENCE_COLUMNS: [&str; 14] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "nll_loss",
    "valid_rewards/chosen",
    "valid_rewards/rejected",
    "valid_rewards/accuracies",
    "valid_rewards/margins",
    "valid_logps/chosen",
    "valid_logps/rejected",
    "valid_nll_loss",
];

/// Every point of a job, train and eval merged per step, oldest first.
pub async fn metric_series(db: &Db, job_id: &str) -> Result<Vec<Map<String, Value>>, sqlx::Error> {
    let mut by_step: std::collections::BTreeMap<i64, Map<String, Value>> = Default::default();
    let mut after = 0;
    loop {
        let rows = metrics::list_points(db, job_id, after, 5000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows.into_iter().filter(|r| r.kind != metrics::SAMPLE_KIND) {
            let point = by_step.entry(r.step).or_default();
            point.insert("step".into(), json!(r.step));
            if r.kind == "train" {
                // When the step was recorded (unix seconds), for a wall-clock axis.
                point.insert(
                    "created_at".into(),
                    json!(r.created_at.timestamp_millis() as f64 / 1000.0),
                );
            }
            if let Value::Object(o) = r.data.0 {
                point.extend(o);
            }
        }
    }
    Ok(by_step.into_values().collect())
}

/// The training process's resources, on train points (after the metric and preference columns).
pub const PROCESS_COLUMNS: [&str; 2] = ["process_rss_mib", "process_cpu_percent"];

/// Per-domain metrics of jobs on several files, by prefix (`tokens_seen/web`,
/// `valid_loss/code`, ...), in the order their columns come.
pub const DOMAIN_PREFIXES: [&str; 4] = [
    "tokens_seen/",
    "valid_loss/",
    "valid_perplexity/",
    "valid_mean_token_accuracy/",
];

/// The series as CSV with [`METRIC_COLUMNS`], then those of [`PREFERENCE_COLUMNS`] that some
/// point has, then the per-domain columns some point has ([`DOMAIN_PREFIXES`], names sorted);
/// absent values are empty.
pub fn series_csv(series: &[Map<String, Value>]) -> String {
    let domain: Vec<&str> = DOMAIN_PREFIXES
        .iter()
        .flat_map(|prefix| {
            series
                .iter()
                .flat_map(|p| p.keys())
                .filter(|k| k.starts_with(prefix))
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>()
        })
        .collect();
    let columns: Vec<&str> = METRIC_COLUMNS
        .iter()
        .chain(
            PREFERENCE_COLUMNS
                .iter()
                .filter(|c| series.iter().any(|p| p.contains_key(**c))),
        )
        .copied()
        .chain(
            PROCESS_COLUMNS
                .iter()
                .copied()
                .filter(|c| series.iter().any(|p| p.contains_key(*c))),
        )
        .chain(domain)
        .collect();
    let mut out = columns.join(",");
    out.push('\n');
    for p in series {
        let cells: Vec<String> = columns
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_columns_follow_in_prefix_then_name_order() {
        let series: Vec<Map<String, Value>> = vec![
            json!({"step": 1, "tokens_seen/web": 10, "tokens_seen/code": 4})
                .as_object()
                .unwrap()
                .clone(),
            json!({"step": 2, "valid_loss/web": 1.5, "valid_loss/code": 2.5})
                .as_object()
                .unwrap()
                .clone(),
        ];
        let csv = series_csv(&series);
        let header = csv.lines().next().unwrap();
        assert!(
            header.ends_with(",tokens_seen/code,tokens_seen/web,valid_loss/code,valid_loss/web")
        );
        assert!(csv.lines().nth(1).unwrap().ends_with(",4,10,,"));
    }

    #[test]
    fn preference_columns_appear_only_when_a_point_has_them() {
        let point = |v: Value| v.as_object().unwrap().clone();
        let sft = [point(json!({"step": 1, "train_loss": 2.5}))];
        let csv = series_csv(&sft);
        assert_eq!(csv.lines().next().unwrap(), METRIC_COLUMNS.join(","));
        let dpo = [
            point(json!({"step": 1, "train_loss": 0.69, "rewards/margins": 0.0})),
            point(json!({"step": 2, "valid_loss": 0.5, "valid_rewards/accuracies": 1.0})),
        ];
        let csv = series_csv(&dpo);
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert!(
            header.ends_with(",rewards/margins,valid_rewards/accuracies"),
            "{header}"
        );
        assert!(lines.next().unwrap().ends_with(",0.0,"));
        assert!(lines.next().unwrap().ends_with(",,1.0"));
    }
}
