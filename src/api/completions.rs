//! `POST /v1/completions`: OpenAI's (legacy) text completions: the model continues a raw prompt,
//! with no chat template, which is what a pretrained model with no template is for. The same
//! models as chat (a checkpoint's too) and the same sampling; `stream: true` answers
//! `text_completion` chunks and `data: [DONE]`.

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::generation::{Sampling, infer_error, load_model};
use super::json::ApiJson;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now, unix};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/completions", post(completions))
}

/// The request; OpenAI's other fields (n, echo, best_of, logprobs, penalties) are ignored.
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: String,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: Sampling,
}

async fn completions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> ApiResult<Response> {
    if req.prompt.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "prompt must not be empty",
        ));
    }
    let params = req.sampling.params()?;
    let model = load_model(&state, &caller, &req.model).await?;
    let prompt = {
        let (model, text) = (model.clone(), req.prompt.clone());
        tokio::task::spawn_blocking(move || model.text_prompt(&text))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| infer_error(e, "prompt"))?
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "the prompt has no tokens",
        ));
    }
    let (id, created, name) = (new_id("cmpl"), unix(now()), req.model.clone());
    if !req.stream {
        let g = tokio::task::spawn_blocking(move || model.generate(&prompt, &params, |_| true))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| infer_error(e, "prompt"))?;
        return Ok(axum::Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": name,
            "choices": [{"index": 0, "text": g.text, "finish_reason": g.finish_reason.as_str(),
                         "logprobs": null}],
            "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                      "total_tokens": g.prompt_tokens + g.completion_tokens},
        }))
        .into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let chunk = move |text: &str, finish: Option<&str>| {
        Event::default().data(
            json!({"id": id, "object": "text_completion", "created": created, "model": name,
                   "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
            .to_string(),
        )
    };
    tokio::task::spawn_blocking(move || {
        let result = model.generate(&prompt, &params, |piece| {
            tx.blocking_send(Ok(chunk(piece, None))).is_ok()
        });
        match result {
            Ok(g) => {
                let _ = tx.blocking_send(Ok(chunk("", Some(g.finish_reason.as_str()))));
            }
            Err(e) => {
                tracing::error!(error = %e, "generation failed mid-stream");
                let _ = tx.blocking_send(Ok(Event::default().data(
                    json!({"error": {"code": "generation_failed", "message": e.to_string(), "param": null}})
                        .to_string(),
                )));
            }
        }
        let _ = tx.blocking_send(Ok(Event::default().data("[DONE]")));
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}
