//! What a job produces, read back: the whole metric series (JSON or CSV) and its checkpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::ids::unix;
use crate::store::checkpoints::{self, CheckpointRow};
use crate::store::{jobs, metrics};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fine_tuning/jobs/{id}/metrics", get(job_metrics))
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(job_checkpoints),
        )
}

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
pub async fn metric_series(state: &AppState, job_id: &str) -> ApiResult<Vec<Map<String, Value>>> {
    let mut by_step: std::collections::BTreeMap<i64, Map<String, Value>> = Default::default();
    let mut after = 0;
    loop {
        let rows = metrics::list_points(&state.db, job_id, after, 5000).await?;
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

async fn job_metrics(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = jobs::get_job(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("fine-tuning job", &id))?;
    let series = metric_series(&state, &job.id).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            series_csv(&series),
        )
            .into_response());
    }
    Ok(axum::Json(json!({"object": "list", "data": series, "has_more": false})).into_response())
}

/// OpenAI's checkpoint object, with `metrics` holding every figure recorded at that step.
pub fn checkpoint_object(c: &CheckpointRow, job: &jobs::JobRow) -> Value {
    json!({
        "object": "fine_tuning.job.checkpoint",
        "id": c.id,
        "created_at": unix(c.created_at),
        "fine_tuned_model_checkpoint": format!("{}:ckpt-step-{}", job.fine_tuned_model.clone().unwrap_or_else(|| format!("ft:{}:{}", job.model, job.id)), c.step),
        "fine_tuning_job_id": c.job_id,
        "step_number": c.step,
        "metrics": c.metrics.as_ref().map(|m| &m.0),
    })
}

async fn job_checkpoints(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let job = jobs::get_job(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("fine-tuning job", &id))?;
    let rows = checkpoints::list_checkpoints(&state.db, &job.id).await?;
    let data: Vec<Value> = rows.iter().map(|c| checkpoint_object(c, &job)).collect();
    let first_id = data.first().map(|d| d["id"].clone());
    let last_id = data.last().map(|d| d["id"].clone());
    Ok(axum::Json(
        json!({"object": "list", "data": data, "has_more": false, "first_id": first_id, "last_id": last_id}),
    ))
}
