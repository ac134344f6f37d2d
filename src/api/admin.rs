//! Operator routes, for the admin key only (a key of the `default` organization, the one the
//! first start creates): `POST /v1/admin/models/import` copies a folder of the server's models
//! folder into the blob store, so workers without that folder can train from it, as
//! `wick models import` does from a shell.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

use super::json::ApiJson;
use crate::auth::Auth;
use crate::catalog::imported::{self, ImportError};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::keys::Caller;

/// The organization whose keys are the operator's.
pub const ADMIN_ORG: &str = "default";

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/models/import", post(import_model))
}

/// Refuses any key but the admin's, with 403 `admin_only` naming `what`.
pub fn require_admin(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.org_name == ADMIN_ORG {
        return Ok(());
    }
    Err(ApiError::Client {
        status: StatusCode::FORBIDDEN,
        code: "admin_only",
        message: format!("{what} for the admin key (a key of the '{ADMIN_ORG}' organization)"),
        param: None,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// A folder of the server's models folder (`GET /v1/models` lists them as `kind: local`).
    local_model: String,
    /// The id jobs will name; default: `local_model`.
    name: Option<String>,
}

async fn import_model(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<ImportRequest>,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&caller, "importing models is")?;
    let local = state
        .local_models
        .get(&req.local_model)
        .await
        .ok_or_else(|| ApiError::Client {
            status: StatusCode::NOT_FOUND,
            code: "model_not_found",
            message: format!(
                "the models folder has no folder {:?} (GET /v1/models lists local models)",
                req.local_model
            ),
            param: Some("local_model".into()),
        })?;
    let name = req.name.unwrap_or_else(|| local.id.clone());
    if !crate::catalog::local::is_valid_id(&name) || crate::model::preset(&name).is_some() {
        return Err(ApiError::invalid_param(
            "name",
            format!(
                "{name:?} cannot be a model id: use letters, digits, '.', '_' and '-', and not a preset's name"
            ),
        ));
    }
    let bar = indicatif::ProgressBar::hidden();
    let m = imported::import_folder(&state.db, &state.blobs, &local.path, &name, &bar)
        .await
        .map_err(|e| match e {
            ImportError::Refused(message) => ApiError::Client {
                status: StatusCode::BAD_REQUEST,
                code: "model_not_loadable",
                message,
                param: Some("local_model".into()),
            },
            ImportError::Store(e) => e.into(),
            ImportError::Other(e) => ApiError::Internal(e),
        })?;
    Ok(axum::Json(super::models::imported_object(&m)))
}
