//! `POST /v1/chat/completions`: OpenAI's chat API over the models jobs produced and the server's
//! local base models, with streaming (`stream: true` answers OpenAI's `chat.completion.chunk`
//! events and `data: [DONE]`).
//! Generation runs on a blocking thread, so it never stalls the async runtime; training runs in
//! its own processes and is not slowed by the API's threads.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::json::ApiJson;
use crate::auth::Auth;
use crate::catalog::{self, BaseModel, ResolveError};
use crate::chat::template::ChatMessage;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now, unix};
use crate::infer::engine::{GenerateParams, InferError, LoadedModel};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions))
}

/// A message's content: a string, or OpenAI's list of parts (text parts are joined).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The request; fields OpenAI has and we do not use (n, penalties, logprobs...) are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    seed: Option<u64>,
}

fn check(req: &ChatRequest) -> ApiResult<(Vec<ChatMessage>, GenerateParams)> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !["system", "user", "assistant", "tool", "developer"].contains(&m.role.as_str()) {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].role"),
                format!("unknown role {:?}", m.role),
            ));
        }
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        };
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role.clone()
        };
        messages.push(ChatMessage::new(role, content));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid_param(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid_param(
            "top_p",
            "top_p must be greater than 0 and at most 1",
        ));
    }
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(256);
    if !(1..=8192).contains(&max_tokens) {
        return Err(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be between 1 and 8192",
        ));
    }
    let stop = match &req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) if v.len() <= 4 => v.clone(),
        Some(Stop::Many(_)) => {
            return Err(ApiError::invalid_param("stop", "at most 4 stop sequences"));
        }
    };
    let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
    Ok((
        messages,
        GenerateParams {
            max_tokens: max_tokens as usize,
            temperature,
            top_p,
            seed: req.seed,
            stop,
        },
    ))
}

fn infer_error(e: InferError) -> ApiError {
    match e {
        InferError::PromptTooLong(..) => ApiError::invalid_param("messages", e.to_string()),
        other => ApiError::Internal(other.into()),
    }
}

/// The model `id` to chat with: one of the organization's trained models or a local folder.
async fn load_model(state: &AppState, org_id: &str, id: &str) -> ApiResult<Arc<LoadedModel>> {
    let not_found = || ApiError::Client {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "model_not_found",
        message: format!(
            "no model {id:?} to chat with; GET /v1/models lists them (presets are untrained and cannot chat)"
        ),
        param: Some("model".into()),
    };
    let (local, info) = match catalog::resolve(&state.db, &state.local_models, org_id, id).await {
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
        Ok(BaseModel::Preset(_)) | Err(ResolveError::Unknown(_)) => return Err(not_found()),
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

async fn chat_completions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<ChatRequest>,
) -> ApiResult<Response> {
    let (messages, params) = check(&req)?;
    let model = load_model(&state, &caller.org_id, &req.model).await?;
    let prompt = {
        let (model, messages) = (model.clone(), messages.clone());
        tokio::task::spawn_blocking(move || model.chat_prompt(&messages))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(infer_error)?
    };
    let id = new_id("chatcmpl");
    let created = unix(now());
    let name = req.model.clone();
    if !req.stream {
        let generation =
            tokio::task::spawn_blocking(move || model.generate(&prompt, &params, |_| true))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(infer_error)?;
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                         "finish_reason": generation.finish_reason.as_str(), "logprobs": null}],
            "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
                      "total_tokens": generation.prompt_tokens + generation.completion_tokens},
        }))
        .into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let chunk = {
        let (id, name) = (id.clone(), name.clone());
        move |delta: Value, finish: Option<&str>| {
            Event::default().data(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]}).to_string())
        }
    };
    let _ = tx.try_send(Ok(chunk(json!({"role": "assistant", "content": ""}), None)));
    tokio::task::spawn_blocking(move || {
        let result = model.generate(&prompt, &params, |piece| {
            tx.blocking_send(Ok(chunk(json!({"content": piece}), None)))
                .is_ok()
        });
        match result {
            Ok(g) => {
                let _ = tx.blocking_send(Ok(chunk(json!({}), Some(g.finish_reason.as_str()))));
            }
            Err(e) => {
                tracing::error!(error = %e, "generation failed mid-stream");
                let _ = tx.blocking_send(Ok(Event::default().data(json!({"error": {"code": "generation_failed", "message": e.to_string(), "param": null}}).to_string())));
            }
        }
        let _ = tx.blocking_send(Ok(Event::default().data("[DONE]")));
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}
