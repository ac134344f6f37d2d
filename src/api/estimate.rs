//! `POST /v1/estimate`: what a job would cost before it runs: parameters, memory (weights,
//! gradients, AdamW state, activations), FLOPs (6·N·D) and the expected time at this machine's
//! measured matmul speed. The body is the job-creation body.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::spec::JobSpec;
use crate::store::files;
use crate::train::estimate::{BYTES_PER_TOKEN, estimate, machine_peak_gflops};
use crate::train::hparams::Resolved;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/estimate", post(estimate_job))
}

async fn estimate_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(spec): ApiJson<JobSpec>,
) -> ApiResult<axum::Json<Value>> {
    spec.validate()
        .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
    let Some(mut cfg) = crate::model::preset(&spec.model) else {
        return Err(ApiError::invalid_param(
            "model",
            format!("unknown model {:?}; GET /v1/models lists them", spec.model),
        ));
    };
    let file = files::get_file(&state.db, &caller.org_id, &spec.training_file)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_param(
                "training_file",
                format!("no file with id {:?}", spec.training_file),
            )
        })?;
    let hp = Resolved::from_spec(&spec, true);
    if let Some(v) = hp.vocab_size {
        cfg.vocab_size = v;
    }
    let tokens = (file.bytes as f64 / BYTES_PER_TOKEN) as u64;
    let peak = tokio::task::spawn_blocking(machine_peak_gflops)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let e = estimate(&cfg, &hp, tokens, peak);
    Ok(axum::Json(
        serde_json::to_value(e).map_err(anyhow::Error::from)?,
    ))
}
