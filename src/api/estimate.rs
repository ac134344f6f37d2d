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
use crate::spec::JobSpec;
use crate::state::AppState;
use crate::store::files;
use crate::train::estimate::{BYTES_PER_TOKEN, DataSize, estimate_for_spec, machine_peak_gflops};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/estimate", post(estimate_job))
}

/// Data up to this size is read to count its rows as the trainer makes them (a few seconds);
/// beyond it the estimate goes by the bytes.
const COUNT_ROWS_UP_TO_BYTES: u64 = 64 << 20;

/// The training rows of `spec`'s data as the trainer would make them: the files and the model's
/// tokenizer files copied to a scratch folder, then [`crate::train::row_count`].
async fn counted_rows(
    state: &AppState,
    org_id: &str,
    spec: &JobSpec,
    files: &[files::FileRow],
    base: &BaseModel,
) -> anyhow::Result<Option<usize>> {
    let scratch = tempfile::tempdir()?;
    let model_dir = match base {
        BaseModel::Preset(_) => return Ok(None),
        BaseModel::Local { model, .. } => model.path.clone(),
        // Kept in the blob store: the config and tokenizer files are all the count needs.
        BaseModel::Trained(_) | BaseModel::Imported(_) => {
            let dir = scratch.path().join("model");
            tokio::fs::create_dir_all(&dir).await?;
            let prefix = base.blob_prefix().unwrap_or_default();
            for name in std::iter::once("config.json").chain(crate::tokenizer::FILES) {
                let path = format!("{prefix}/{name}");
                if state.blobs.exists(&path).await? {
                    state.blobs.get_file(&path, &dir.join(name)).await?;
                }
            }
            dir
        }
    };
    let mut local = std::collections::BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let path = scratch.path().join(format!("train-{i}.jsonl"));
        state.blobs.get_file(&f.blob_path, &path).await?;
        local.insert(f.id.clone(), path);
    }
    for v in spec.validation_file_refs() {
        if !local.contains_key(v)
            && let Some(f) = files::get_file(&state.db, org_id, v).await?
        {
            let path = scratch.path().join(format!("valid-{}.jsonl", local.len()));
            state.blobs.get_file(&f.blob_path, &path).await?;
            local.insert(f.id.clone(), path);
        }
    }
    let mut spec = spec.clone();
    spec.model = model_dir.display().to_string();
    spec.localise_files(|id| {
        local
            .get(id)
            .map_or(id.to_string(), |p| p.display().to_string())
    });
    let job = crate::train::TrainJob {
        training_file: spec.training_file_refs()[0].into(),
        validation_file: spec.validation_file.as_deref().map(Into::into),
        spec,
        output_dir: scratch.path().join("out"),
        resume_from: None,
        device: candle_core::Device::Cpu,
        base_model_name: None,
    };
    let rows = tokio::task::spawn_blocking(move || {
        let _keep = scratch;
        crate::train::row_count::training_rows(&job)
    })
    .await??;
    Ok(rows)
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
    let from_scratch = matches!(base, BaseModel::Preset(_));
    let cfg = catalog::model_config(&state.blobs, &base).await?;
    let mut bytes = 0i64;
    let mut rows = Vec::new();
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
        rows.push(file);
    }
    let mut data = DataSize::Tokens((bytes as f64 / BYTES_PER_TOKEN) as u64);
    if !from_scratch && bytes as u64 <= COUNT_ROWS_UP_TO_BYTES {
        match counted_rows(&state, &caller.org_id, &spec, &rows, &base).await {
            Ok(Some(n)) => data = DataSize::Rows(n),
            Ok(None) => {}
            // The estimate still answers, from the bytes; the job itself will say what is wrong.
            Err(e) => tracing::warn!(error = %e, "counting the estimate's rows failed"),
        }
    }
    let peak = tokio::task::spawn_blocking(machine_peak_gflops)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let e = estimate_for_spec(&spec, cfg, from_scratch, Some(data), peak);
    Ok(axum::Json(
        serde_json::to_value(e).map_err(anyhow::Error::from)?,
    ))
}
