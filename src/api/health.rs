//! Liveness and readiness probes, outside `/v1` and without auth.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the store answers.
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(axum::Json(
        json!({"status": "ready", "store": state.db.backend()}),
    ))
}
