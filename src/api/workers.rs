//! `GET /v1/workers` (admin key only): the worker slots alive now, each with its device (`cpu` or
//! `cuda:N`, its name and memory) and the job it runs.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::admin::require_admin;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::workers::{self, WorkerRow};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/workers", get(list_workers))
}

async fn list_workers(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&caller, "the workers listing is")?;
    let rows = workers::list_live(&state.db).await?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": rows.iter().map(worker_json).collect::<Vec<_>>(),
    })))
}

fn worker_json(w: &WorkerRow) -> Value {
    json!({
        "object": "worker",
        "id": w.id,
        "host": w.host,
        "device": {
            "id": w.device,
            "kind": w.device_kind,
            "name": w.device_name,
            "memory_bytes": w.device_memory_bytes,
        },
        "job_id": w.job_id,
        "status": if w.job_id.is_some() { "busy" } else { "idle" },
        "started_at": w.started_at.timestamp(),
        "last_seen_at": w.last_seen_at.timestamp(),
    })
}
