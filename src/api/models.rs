//! `/v1/models`: the models jobs can start from, in OpenAI's list shape.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Auth;
use crate::catalog;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
}

async fn list_models(Auth(_): Auth) -> axum::Json<Value> {
    axum::Json(json!({"object": "list", "data": catalog::models()}))
}

async fn get_model(Auth(_): Auth, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let m = catalog::find_model(&id).ok_or_else(|| ApiError::not_found("model", &id))?;
    Ok(axum::Json(json!(m)))
}
