//! `POST /v1/estimate`: what a job would cost before it runs: parameters, memory (weights,
//! gradients, AdamW state, activations), FLOPs (6·N·D) and the expected time at this machine's
//! measured matmul speed. The body is the job-creation body; the model may be a preset, a trained
//! model of the caller's or a local base model.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use super::json::ApiJson;
use crate::auth::Auth;
use crate::catalog::{self, BaseModel};
use crate::error::{ApiError, ApiResult};
use crate::model::ModelConfig;
use crate::spec::JobSpec;
use crate::state::AppState;
use crate::store::files;
use crate::train::estimate::{BYTES_PER_TOKEN, estimate_for_spec, machine_peak_gflops};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/estimate", post(estimate_job))
}

/// The config of the model a job starts from, and whether it starts from scratch (a preset).
async fn base_config(state: &AppState, org_id: &str, id: &str) -> ApiResult<(ModelConfig, bool)> {
    match catalog::resolve(&state.db, &state.local_models, org_id, id).await? {
        BaseModel::Preset(_) => {
            let cfg = crate::model::preset(id)
                .ok_or_else(|| anyhow::anyhow!("preset {id} has no config"))?;
            Ok((cfg, true))
        }
        BaseModel::Local { info, .. } => Ok((info.config, false)),
        // Only config.json is fetched from the blob store, not the weights.
        BaseModel::Trained(m) => {
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
    }
}

async fn estimate_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(spec): ApiJson<JobSpec>,
) -> ApiResult<axum::Json<Value>> {
    spec.validate()
        .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
    let base =
        catalog::resolve(&state.db, &state.local_models, &caller.org_id, &spec.model).await?;
    catalog::check_method_base(&base, spec.method.kind)
        .map_err(|message| ApiError::invalid_param("model", message))?;
    let (cfg, from_scratch) = base_config(&state, &caller.org_id, &spec.model).await?;
    let mut bytes = 0i64;
    let refs = spec.training_file_refs();
    for (i, id) in refs.iter().enumerate() {
        let param = if spec.training_files.is_some() {
            format!("training_files[{i}].file")
        } else {
            "training_file".to_string()
        };
        let file = files::get_file(&state.db, &caller.org_id, id)
            .await?
            .ok_or_else(|| ApiError::invalid_param(param, format!("no file with id {id:?}")))?;
        bytes += file.bytes;
    }
    let tokens = (bytes as f64 / BYTES_PER_TOKEN) as u64;
    let peak = tokio::task::spawn_blocking(machine_peak_gflops)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let e = estimate_for_spec(&spec, cfg, from_scratch, Some(tokens), peak);
    Ok(axum::Json(
        serde_json::to_value(e).map_err(anyhow::Error::from)?,
    ))
}
