//! Downloads of what a job produced: the final model folder (or the model as one GGUF file with an
//! Ollama `Modelfile`, `?format=gguf&quant=`), any checkpoint, or the PEFT adapter of either (LoRA
//! jobs), as one tar file whose SHA-256 is sent in `X-Checksum-Sha256`, so a client can verify it.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::query::ApiQuery;
use crate::auth::Auth;
use crate::blob::keys;
use crate::error::{ApiError, ApiResult};
use crate::model::gguf::Quant;
use crate::state::AppState;
use crate::store::checkpoints;
use crate::store::job_status::JobStatus;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/fine_tuning/jobs/{id}/download", get(download))
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    /// A checkpoint id from `GET .../checkpoints`; absent means the final model.
    checkpoint: Option<String>,
    /// `model` (default: the final Hugging Face folder, merged for LoRA jobs; for a checkpoint, the
    /// whole checkpoint folder) or `adapter` (the PEFT adapter of a LoRA job or checkpoint).
    artifact: Option<String>,
    /// `hf` (default: the Hugging Face folder) or `gguf` (the final model as one GGUF file).
    format: Option<String>,
    /// With `gguf`: `f16` (default), `q8_0` or `q4_k_m`.
    quant: Option<String>,
}

/// Packs the local folder `dir` into `tar_path` as `root/...`; returns the tar's SHA-256.
fn pack(dir: &std::path::Path, root: &str, tar_path: &std::path::Path) -> std::io::Result<String> {
    let file = std::fs::File::create(tar_path)?;
    let mut builder = tar::Builder::new(file);
    builder.append_dir_all(root, dir)?;
    builder.into_inner()?.sync_all()?;
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(tar_path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn download(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    let job = super::jobs::find_job(&state, &caller.org_id, &id).await?;
    let (prefix, name) = match &q.checkpoint {
        Some(ck) => {
            let all = checkpoints::list_checkpoints(&state.db, &job.id).await?;
            let c = all
                .iter()
                .find(|c| &c.id == ck)
                .ok_or_else(|| ApiError::Client {
                    status: axum::http::StatusCode::NOT_FOUND,
                    code: "not_found",
                    message: format!("job {id} has no checkpoint {ck:?}"),
                    param: Some("checkpoint".into()),
                })?;
            (c.blob_path.clone(), format!("{}-step-{}", job.id, c.step))
        }
        None => {
            if job.status != JobStatus::Succeeded {
                return Err(ApiError::conflict(
                    "model_not_ready",
                    format!(
                        "job {id} is {}; its model exists once it has succeeded",
                        job.status
                    ),
                ));
            }
            (keys::model(&job.id), job.id.clone())
        }
    };
    let (prefix, name) = match q.artifact.as_deref().unwrap_or("model") {
        "model" if q.checkpoint.is_none() => (prefix, format!("{name}-model")),
        "model" => (prefix, name),
        "adapter" => {
            let adapter = format!("{prefix}/{}", crate::train::checkpoint::ADAPTER_DIR);
            if state.blobs.list(&adapter).await?.is_empty() {
                return Err(ApiError::Client {
                    status: axum::http::StatusCode::NOT_FOUND,
                    code: "not_found",
                    message: format!("job {id} trained no LoRA adapter"),
                    param: Some("artifact".into()),
                });
            }
            (adapter, format!("{name}-adapter"))
        }
        other => {
            return Err(ApiError::invalid_param(
                "artifact",
                format!("artifact must be 'model' or 'adapter', got {other:?}"),
            ));
        }
    };
    let gguf = match q.format.as_deref().unwrap_or("hf") {
        "hf" => None,
        "gguf" => {
            if q.checkpoint.is_some() || q.artifact.as_deref().is_some_and(|a| a != "model") {
                return Err(ApiError::invalid_param(
                    "format",
                    "format=gguf exports the final model (no checkpoint, no adapter)",
                ));
            }
            let quant: Quant = q.quant.as_deref().unwrap_or("f16").parse().map_err(|_| {
                ApiError::invalid_param(
                    "quant",
                    format!(
                        "quant must be f16, q8_0 or q4_k_m, got {:?}",
                        q.quant.as_deref().unwrap_or_default()
                    ),
                )
            })?;
            Some(quant)
        }
        other => {
            return Err(ApiError::invalid_param(
                "format",
                format!("format must be 'hf' or 'gguf', got {other:?}"),
            ));
        }
    };
    if gguf.is_none() && q.quant.is_some() {
        return Err(ApiError::invalid_param(
            "quant",
            "quant applies with format=gguf",
        ));
    }
    let tmp = tempfile::tempdir_in(state.settings.data_dir.as_path())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut folder = tmp.path().join("files");
    state.blobs.get_dir(&prefix, &folder).await?;
    let mut name = name;
    if let Some(quant) = gguf {
        // The model as one GGUF file and a Modelfile naming it, in a folder of their own.
        let (from, out) = (folder.clone(), tmp.path().join("gguf"));
        let file = format!("{}-{}.gguf", job.id, quant.as_str());
        let title = job
            .fine_tuned_model
            .clone()
            .unwrap_or_else(|| job.id.clone());
        tokio::task::spawn_blocking(move || {
            crate::model::gguf_export::export_folder(&from, &out, &file, quant, &title)
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::bad_request("unsupported_model", e.to_string(), Some("format")))?;
        folder = tmp.path().join("gguf");
        name = format!("{}-gguf-{}", job.id, quant.as_str());
    }
    let tar_path = tmp.path().join("out.tar");
    let (root, tar_for_pack) = (name.clone(), tar_path.clone());
    let sha = tokio::task::spawn_blocking(move || pack(&folder, &root, &tar_for_pack))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(e.into()))?;
    let file = tokio::fs::File::open(&tar_path)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .len();
    // The temp folder lives until the body has been streamed.
    let stream = futures::StreamExt::map(tokio_util::io::ReaderStream::new(file), move |chunk| {
        let _keep = &tmp;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.tar\""),
            ),
            (header::HeaderName::from_static("x-checksum-sha256"), sha),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
