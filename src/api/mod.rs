//! The HTTP API: one module per resource, each exporting its `router()`; [`router`] merges them.

pub mod admin;
pub mod chat;
pub mod completions;
pub mod downloads;
pub mod estimate;
pub mod files;
pub mod generation;
pub mod headers;
pub mod health;
pub mod jobs;
pub mod json;
pub mod metrics;
pub mod models;
pub mod nul;
pub mod pagination;
pub mod query;
pub mod results;
pub mod stream;
pub mod web;
pub mod workers;

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{framework_error, route_not_found};
use crate::state::AppState;

/// The whole API. Ordinary routes get a request timeout; uploads (long bodies) do not.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.settings.request_timeout_secs);
    let timed = Router::new()
        .merge(health::router())
        .merge(web::router())
        .merge(files::router())
        .merge(jobs::router())
        .merge(models::router())
        .merge(results::router())
        .merge(estimate::router())
        .merge(metrics::router())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    Router::new()
        .merge(timed)
        .merge(files::upload_router(state.settings.max_upload_bytes))
        .merge(stream::router())
        .merge(chat::router())
        .merge(completions::router())
        .merge(downloads::router())
        // Importing hashes and copies a whole model: longer than the request timeout allows.
        .merge(admin::router())
        .merge(workers::router())
        .fallback(route_not_found)
        .layer(middleware::from_fn(nul::refuse_nul_in_uri))
        .layer(middleware::from_fn_with_state(timeout, json_errors))
        .layer(middleware::from_fn(headers::security_headers))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(middleware::from_fn(metrics::track_requests))
        .with_state(state)
}

/// Gives every error answer our `{"error": {...}}` shape. Handlers and our extractors already
/// answer [`crate::error::ApiError`]s; what reaches here without a JSON body comes from the
/// framework: axum's empty 405, tower-http's empty 408, a plain-text rejection of an axum
/// extractor. One pass over the answers catches all of them, present and future, where
/// per-case handlers (a 405 fallback, `tower::timeout` behind a `HandleErrorLayer`) would each
/// cover one. Status and headers are kept (axum adds `Allow` to a 405 after this layer).
async fn json_errors(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    // Framework errors are a line of text at most; a longer body is dropped, not buffered.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .unwrap_or_default();
    let mut shaped = framework_error(status, &method, &path, text.trim(), timeout).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().append(name, value.clone());
        }
    }
    shaped
}

/// The span a request's logs are recorded in: its method, its route (`/v1/files/{id}`, not the
/// id, so spans group by route; the raw path when no route matched), the `X-Request-Id` a proxy
/// sent if any, and the organization, which [`crate::auth::Auth`] records once it resolves the
/// key.
fn request_span(req: &Request) -> tracing::Span {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or_else(|| req.uri().path());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    tracing::info_span!(
        "http_request",
        method = %req.method(),
        path,
        request_id,
        org = tracing::field::Empty,
    )
}
