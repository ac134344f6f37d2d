//! Operator routes, for the admin key only (a key of the `default` organization, the one the
//! first start creates): `POST /v1/admin/models/import` copies a folder of the server's models
//! folder into the blob store, so workers without that folder can train from it, as
//! `wick models import` does from a shell; `GET`/`PUT /v1/admin/organizations/{name}/limits` read
//! and set an organization's limits ([`crate::tenants`] applies them).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::json::ApiJson;
use crate::auth::Auth;
use crate::catalog::imported::{self, ImportError};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::keys::Caller;
use crate::store::org_limits::{self, OrgLimits};
use crate::store::orgs;

/// The organization whose keys are the operator's.
pub const ADMIN_ORG: &str = "default";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/models/import", post(import_model))
        .route(
            "/v1/admin/organizations/{name}/limits",
            get(get_limits).put(put_limits),
        )
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

/// The organization named `name`, or 404 naming it.
async fn org_named(state: &AppState, name: &str) -> ApiResult<orgs::Org> {
    orgs::find_org(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::Client {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "no organization named {name:?} (wick keys create --org NAME creates one)"
            ),
            param: Some("name".into()),
        })
}

/// The limits object: the limits, and the usage they are checked against now.
async fn limits_object(state: &AppState, org: &orgs::Org, l: &OrgLimits) -> ApiResult<Value> {
    Ok(json!({
        "object": "organization.limits",
        "organization": org.name,
        "requests_per_second": l.requests_per_second,
        "max_running_jobs": l.max_running_jobs,
        "max_stored_bytes": l.max_stored_bytes,
        "usage": {
            "running_jobs": org_limits::active_jobs(&state.db, &org.id).await?,
            "stored_bytes": org_limits::stored_bytes(&state.db, &org.id).await?,
        },
    }))
}

async fn get_limits(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&caller, "organization limits are")?;
    let org = org_named(&state, &name).await?;
    let l = org_limits::get(&state.db, &org.id).await?;
    Ok(axum::Json(limits_object(&state, &org, &l).await?))
}

/// A `PUT` body: every limit, `null` or absent for none.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsRequest {
    #[serde(default)]
    requests_per_second: Option<f64>,
    #[serde(default)]
    max_running_jobs: Option<i64>,
    #[serde(default)]
    max_stored_bytes: Option<i64>,
}

async fn put_limits(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<LimitsRequest>,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&caller, "organization limits are")?;
    if let Some(r) = req.requests_per_second
        && !(r > 0.0 && r <= 1e6)
    {
        return Err(ApiError::invalid_param(
            "requests_per_second",
            "requests_per_second must be more than 0 and at most 1000000 (null: no limit)",
        ));
    }
    for (param, v) in [
        ("max_running_jobs", req.max_running_jobs),
        ("max_stored_bytes", req.max_stored_bytes),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(ApiError::invalid_param(
                param,
                format!("{param} must be 0 or more (null: no limit)"),
            ));
        }
    }
    let org = org_named(&state, &name).await?;
    let l = OrgLimits {
        requests_per_second: req.requests_per_second,
        max_running_jobs: req.max_running_jobs,
        max_stored_bytes: req.max_stored_bytes,
    };
    org_limits::set(&state.db, &org.id, &l).await?;
    state.tenants.forget(&org.id);
    tracing::info!(org = %org.name, ?l, "organization limits set");
    Ok(axum::Json(limits_object(&state, &org, &l).await?))
}
