//! `POST /v1/chat/completions`: OpenAI's chat API over the models jobs produced and the server's
//! local base models, with streaming (`stream: true` answers OpenAI's `chat.completion.chunk`
//! events and `data: [DONE]`).
//! Generation runs on a blocking thread, so it never stalls the async runtime; training runs in
//! its own processes and is not slowed by the API's threads.

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::generation::{Sampling, infer_error, load_model};
use super::json::ApiJson;
use crate::auth::Auth;
use crate::chat::template::ChatMessage;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now, unix};
use crate::infer::engine::GenerateParams;
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

/// The request; fields OpenAI has and we do not use (n, penalties, logprobs...) are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: Sampling,
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
    Ok((messages, req.sampling.params()?))
}

async fn chat_completions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<ChatRequest>,
) -> ApiResult<Response> {
    let (messages, params) = check(&req)?;
    let model = load_model(&state, &caller, &req.model).await?;
    let prompt = {
        let (model, messages) = (model.clone(), messages.clone());
        tokio::task::spawn_blocking(move || model.chat_prompt(&messages))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| infer_error(e, "messages"))?
    };
    let id = new_id("chatcmpl");
    let created = unix(now());
    let name = req.model.clone();
    if !req.stream {
        let generation =
            tokio::task::spawn_blocking(move || model.generate(&prompt, &params, |_| true))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(|e| infer_error(e, "messages"))?;
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
