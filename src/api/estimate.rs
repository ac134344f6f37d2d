//! `POST /v1/estimate`: what a job would cost before it runs: parameters, memory (weights,
//! gradients, AdamW state, activations), FLOPs (6·N·D) and the expected time at this machine's
//! measured matmul speed. The body is the job-creation body; the model may be a preset, a trained
//! model of the caller's or a local base model.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Auth;
use crate::catalog::{self, BaseModel};
use crate::error::{ApiError, ApiResult};
use crate::model::ModelConfig;
use crate::spec::JobSpec;
use crate::store::files;
use crate::train::estimate::{BYTES_PER_TOKEN, estimate, machine_peak_gflops};
use crate::train::hparams::Resolved;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/estimate", post(estimate_job))
}

/// The config of the model a job starts from, and whether it starts from scratch (a preset).
async fn base_config(state: &AppState, org_id: &str, id: &str) -> ApiResult<(ModelConfig, bool)> {
    match catalog::resolve(state, org_id, id).await? {
        Some(BaseModel::Preset(_)) => {
            let cfg = crate::model::preset(id)
                .ok_or_else(|| anyhow::anyhow!("preset {id} has no config"))?;
            Ok((cfg, true))
        }
        Some(BaseModel::Local(m)) => match m.info() {
            Some(info) => Ok((info.config.clone(), false)),
            None => Err(ApiError::invalid_param(
                "model",
                format!(
                    "local model {id} cannot be trained from: {}",
                    m.unloadable_reason().unwrap_or_default()
                ),
            )),
        },
        // Only config.json is fetched from the blob store, not the weights.
        Some(BaseModel::Trained(m)) => {
            let path = format!("{}/config.json", m.blob_path.as_deref().unwrap_or_default());
            let bytes = state
                .blobs
                .read_all(&path)
                .await
                .map_err(anyhow::Error::from)?;
            let text = String::from_utf8_lossy(&bytes);
            let cfg = ModelConfig::from_hf_json(&text).map_err(anyhow::Error::from)?;
            Ok((cfg, false))
        }
        None => Err(ApiError::invalid_param(
            "model",
            format!("unknown model {id:?}; GET /v1/models lists them"),
        )),
    }
}

async fn estimate_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(spec): ApiJson<JobSpec>,
) -> ApiResult<axum::Json<Value>> {
    spec.validate()
        .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
    let (mut cfg, from_scratch) = base_config(&state, &caller.org_id, &spec.model).await?;
    let file = files::get_file(&state.db, &caller.org_id, &spec.training_file)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_param(
                "training_file",
                format!("no file with id {:?}", spec.training_file),
            )
        })?;
    let hp = Resolved::from_spec(&spec, from_scratch);
    if let (true, Some(v)) = (from_scratch, hp.vocab_size) {
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
