//! The HTTP API: one module per resource, each exporting its `router()`; [`router`] merges them.

pub mod chat;
pub mod downloads;
pub mod estimate;
pub mod files;
pub mod health;
pub mod jobs;
pub mod json;
pub mod models;
pub mod pagination;
pub mod query;
pub mod results;
pub mod stream;
pub mod web;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::route_not_found;
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
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    Router::new()
        .merge(timed)
        .merge(files::upload_router(state.settings.max_upload_bytes))
        .merge(stream::router())
        .merge(chat::router())
        .merge(downloads::router())
        .fallback(route_not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
