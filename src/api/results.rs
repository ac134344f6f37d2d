//! What a job produces, read back: the whole metric series (JSON or CSV), the sample answers of
//! its evaluations, and its checkpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::ids::unix;
use crate::jobs::metrics::{metric_series, series_csv};
use crate::state::AppState;
use crate::store::checkpoints::{self, CheckpointRow};
use crate::store::jobs;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fine_tuning/jobs/{id}/metrics", get(job_metrics))
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(job_checkpoints),
        )
        .route("/v1/fine_tuning/jobs/{id}/samples", get(job_samples))
}

/// Every evaluation's sample answers, oldest first: `{"step", "samples": [{"prompt",
/// "reference"?, "completion", "tokens", "stopped"}], "seconds"}`.
async fn job_samples(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let job = super::jobs::find_job(&state, &caller.org_id, &id).await?;
    let data: Vec<Value> = crate::store::metrics::list_samples(&state.db, &job.id)
        .await?
        .into_iter()
        .map(|r| r.data.0)
        .collect();
    Ok(axum::Json(
        json!({"object": "list", "data": data, "has_more": false}),
    ))
}

async fn job_metrics(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = super::jobs::find_job(&state, &caller.org_id, &id).await?;
    let series = metric_series(&state.db, &job.id).await?;
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
/// The checkpoint's model name (`<fine-tuned model>:ckpt-step-N`, the job's model name as it
/// will be when the job has not finished): chat completions answer with it.
pub fn checkpoint_object(c: &CheckpointRow, job: &jobs::JobRow, org_name: &str) -> Value {
    let model = job
        .fine_tuned_model
        .clone()
        .unwrap_or_else(|| crate::jobs::results::fine_tuned_model_name(job, org_name));
    json!({
        "object": "fine_tuning.job.checkpoint",
        "id": c.id,
        "created_at": unix(c.created_at),
        "fine_tuned_model_checkpoint": format!("{model}:ckpt-step-{}", c.step),
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
    let job = super::jobs::find_job(&state, &caller.org_id, &id).await?;
    let rows = checkpoints::list_checkpoints(&state.db, &job.id).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|c| checkpoint_object(c, &job, &caller.org_name))
        .collect();
    let first_id = data.first().map(|d| d["id"].clone());
    let last_id = data.last().map(|d| d["id"].clone());
    Ok(axum::Json(
        json!({"object": "list", "data": data, "has_more": false, "first_id": first_id, "last_id": last_id}),
    ))
}
