//! What chat completions and text completions share: the sampling parameters OpenAI's APIs take
//! (checked into [`GenerateParams`]), the model a request names loaded through the registry (a
//! model of the caller's, a local model, or a checkpoint of one of the caller's jobs), and the
//! errors of generation.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::catalog::{self, BaseModel, ResolveError};
use crate::error::{ApiError, ApiResult};
use crate::infer::engine::{GenerateParams, InferError, LoadedModel};
use crate::state::AppState;
use crate::store::keys::Caller;
use crate::store::{checkpoints, jobs};

/// The sampling fields of a request, as OpenAI names them. They sit flattened into the chat and
/// completion requests, where serde cannot say which field failed, so each is taken as JSON and
/// checked here by name: every error names its field.
#[derive(Debug, Deserialize)]
pub struct Sampling {
    temperature: Option<Value>,
    top_p: Option<Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
    stop: Option<Value>,
    seed: Option<Value>,
}

/// A number field, or a 400 naming it.
fn number(value: &Option<Value>, name: &str) -> ApiResult<Option<f64>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid_param(name, format!("{name} must be a number"))),
    }
}

/// An integer field (an integral float such as `8080.0` counts, as JSON Schema's `integer`
/// allows), or a 400 naming it.
fn integer(value: &Option<Value>, name: &str) -> ApiResult<Option<i64>> {
    let Some(x) = number(value, name)? else {
        return Ok(None);
    };
    if x.fract() != 0.0 || x.abs() > 2f64.powi(63) {
        return Err(ApiError::invalid_param(
            name,
            format!("{name} must be an integer"),
        ));
    }
    Ok(value.as_ref().and_then(Value::as_i64).or(Some(x as i64)))
}

impl Sampling {
    /// The checked parameters, or a 400 naming the bad one.
    pub fn params(&self) -> ApiResult<GenerateParams> {
        let temperature = number(&self.temperature, "temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        let top_p = number(&self.top_p, "top_p")?.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid_param(
                "top_p",
                "top_p must be greater than 0 and at most 1",
            ));
        }
        let (name, max_tokens) =
            match integer(&self.max_completion_tokens, "max_completion_tokens")? {
                Some(n) => ("max_completion_tokens", Some(n)),
                None => ("max_tokens", integer(&self.max_tokens, "max_tokens")?),
            };
        let max_tokens = max_tokens.unwrap_or(256);
        if !(1..=8192).contains(&max_tokens) {
            return Err(ApiError::invalid_param(
                name,
                format!("{name} must be between 1 and 8192"),
            ));
        }
        let strings = |v: &Value| -> Option<Vec<String>> {
            match v {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            }
        };
        let stop = match &self.stop {
            None | Some(Value::Null) => vec![],
            Some(v) => match strings(v) {
                Some(list) if list.len() <= 4 => list,
                Some(_) => return Err(ApiError::invalid_param("stop", "at most 4 stop sequences")),
                None => {
                    return Err(ApiError::invalid_param(
                        "stop",
                        "stop must be a string or an array of up to 4 strings",
                    ));
                }
            },
        };
        // Any integer seeds the sampler, negative ones too (their bits, as a u64).
        let seed = match self.seed.as_ref().and_then(Value::as_u64) {
            Some(s) => Some(s),
            None => integer(&self.seed, "seed")?.map(|s| s as u64),
        };
        Ok(GenerateParams {
            max_tokens: max_tokens as usize,
            temperature,
            top_p,
            seed,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        })
    }
}

/// A generation error: a prompt too long for the model is the client's (`param` names the
/// field that holds it), anything else the server's.
pub fn infer_error(e: InferError, prompt_param: &str) -> ApiError {
    match e {
        InferError::PromptTooLong(..) => ApiError::invalid_param(prompt_param, e.to_string()),
        other => ApiError::Internal(other.into()),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::Client {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "model_not_found",
        message: format!(
            "no model {id:?} to generate with; GET /v1/models lists them (presets are untrained), \
             GET /v1/fine_tuning/jobs/{{id}}/checkpoints names each checkpoint's model"
        ),
        param: Some("model".into()),
    }
}

/// The model `id` a request names: one of the caller's trained models, a local folder, or a
/// checkpoint (`<fine-tuned model>:ckpt-step-N`, as `GET .../checkpoints` names it).
pub async fn load_model(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Arc<LoadedModel>> {
    if let Some((model, step)) = id
        .rsplit_once(":ckpt-step-")
        .and_then(|(m, s)| Some((m, s.parse::<u64>().ok()?)))
    {
        return load_checkpoint(state, caller, id, model, step).await;
    }
    let (local, info) =
        match catalog::resolve(&state.db, &state.local_models, &caller.org_id, id).await {
            Ok(BaseModel::Trained(row)) => {
                let prefix = row.blob_path.clone().unwrap_or_default();
                let cache = state.settings.data_dir.join("cache").join("models").join(
                    row.job_id
                        .clone()
                        .unwrap_or_else(|| row.id.replace(':', "_")),
                );
                return Ok(state
                    .models
                    .get(&row.id, &state.blobs, &prefix, cache)
                    .await?);
            }
            Ok(BaseModel::Local { model, info }) => (model, info),
            // An imported model loads from this server's cached copy, as a local folder would.
            Ok(BaseModel::Imported(m)) => {
                let path = crate::catalog::imported::materialise(
                    &state.blobs,
                    &m,
                    &state.settings.model_cache_dir(),
                )
                .await?;
                let local = crate::catalog::local::LocalModel {
                    id: m.row.id.clone(),
                    path,
                    created: m.row.created_at.timestamp(),
                    status: crate::catalog::local::LocalStatus::Loadable(Box::new(m.info.clone())),
                    version: m.version(),
                };
                (local, m.info)
            }
            Ok(BaseModel::Preset(_)) | Err(ResolveError::Unknown(_)) => return Err(not_found(id)),
            Err(e) => return Err(e.into()),
        };
    let key = format!("local:{id}:{:x}", local.version);
    // Weights load as f32; running out of memory would abort the whole server.
    let need = info.parameters * 4;
    if !state.models.is_loaded(&key)
        && let Some(available) = crate::machine::available_memory_bytes()
        && need > available
    {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(ApiError::Client {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "insufficient_memory",
            message: format!(
                "local model {id} needs about {:.1} GiB to load and this server has {:.1} GiB available",
                gib(need),
                gib(available)
            ),
            param: Some("model".into()),
        });
    }
    state
        .models
        .get_local(&key, &local.path)
        .await
        .map_err(|e| match e.downcast_ref::<InferError>() {
            // The folder changed since it was checked, or fails in a way the check cannot see.
            Some(e) => ApiError::Client {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "model_not_loadable",
                message: format!(
                    "local model {id} failed to load: {}",
                    e.to_string().replace(&local.path.display().to_string(), id)
                ),
                param: Some("model".into()),
            },
            None => ApiError::Internal(e),
        })
}

/// Checkpoint `step` of the job whose model is named `model` (its name as it will be when the
/// job has not finished): its folder as a model (a LoRA checkpoint merged into the job's base),
/// prepared once into the cache.
async fn load_checkpoint(
    state: &AppState,
    caller: &Caller,
    id: &str,
    model: &str,
    step: u64,
) -> ApiResult<Arc<LoadedModel>> {
    let job_id = model.rsplit(':').next().unwrap_or_default();
    let job = jobs::get_job(&state.db, &caller.org_id, job_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let name = job
        .fine_tuned_model
        .clone()
        .unwrap_or_else(|| crate::jobs::results::fine_tuned_model_name(&job, &caller.org_name));
    if name != model {
        return Err(not_found(id));
    }
    let all = checkpoints::list_checkpoints(&state.db, &job.id).await?;
    let Some(ckpt) = all.iter().find(|c| c.step as u64 == step) else {
        let steps: Vec<String> = all.iter().map(|c| c.step.to_string()).collect();
        return Err(ApiError::Client {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "model_not_found",
            message: format!(
                "job {} has no checkpoint at step {step} (it has: {})",
                job.id,
                if steps.is_empty() {
                    "none".into()
                } else {
                    steps.join(", ")
                }
            ),
            param: Some("model".into()),
        });
    };
    let cache = state
        .settings
        .data_dir
        .join("cache")
        .join("checkpoints")
        .join(format!("{}-step-{step}", job.id));
    if !cache.join("config.json").is_file() {
        // Each request prepares in its own folder; the first to finish wins.
        let staging = cache.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        let downloaded = staging.join("checkpoint");
        state.blobs.get_dir(&ckpt.blob_path, &downloaded).await?;
        let ready = if crate::infer::checkpoint::is_model_folder(&downloaded) {
            downloaded
        } else {
            // A LoRA checkpoint: its adapter merges into the job's base model.
            let base =
                match catalog::resolve(&state.db, &state.local_models, &caller.org_id, &job.model)
                    .await?
                {
                    BaseModel::Local { model, .. } => model.path.clone(),
                    BaseModel::Imported(m) => {
                        crate::catalog::imported::materialise(
                            &state.blobs,
                            &m,
                            &state.settings.model_cache_dir(),
                        )
                        .await?
                    }
                    BaseModel::Trained(row) => {
                        let dir = staging.join("base");
                        state
                            .blobs
                            .get_dir(row.blob_path.as_deref().unwrap_or_default(), &dir)
                            .await?;
                        dir
                    }
                    BaseModel::Preset(_) => return Err(not_found(id)),
                };
            let out = staging.join("model");
            let ckpt_dir = downloaded.clone();
            let merged_to = out.clone();
            tokio::task::spawn_blocking(move || {
                crate::infer::checkpoint::merge_lora_checkpoint(&ckpt_dir, &base, &merged_to)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))??;
            out
        };
        if let Some(parent) = cache.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
        }
        let moved = tokio::fs::rename(&ready, &cache).await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        if let Err(e) = moved
            && !cache.join("config.json").is_file()
        {
            return Err(ApiError::Internal(e.into()));
        }
    }
    Ok(state.models.get_local(id, &cache).await?)
}
