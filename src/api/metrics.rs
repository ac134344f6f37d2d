//! `GET /metrics`: Prometheus's text exposition format (version 0.0.4), for the admin key only.
//!
//! What this process counts comes from [`crate::telemetry::metrics`] (HTTP requests and latency
//! by route template, worker slots, running jobs' step and tokens/s, SSE watchers, uploads); the
//! job and queue gauges are read from the store at each scrape, so every API process reports the
//! whole service's jobs. [`track_requests`] is the layer that counts requests.
//!
//! Access: the API's own port, with the admin key as a Bearer token (Prometheus's
//! `authorization` scrape setting). A running job's gauges are labelled with its id, which is an
//! organization's data, so tenant keys are refused (403 `admin_only`) and no key is a 401 as
//! everywhere else. The admin key is a key of the `default` organization: the one the first start
//! creates with the admin key, which `wick keys create --org default` adds to.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use prometheus::{Gauge, IntGauge, IntGaugeVec, Opts};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::Db;
use crate::store::job_status::JobStatus;
use crate::telemetry::metrics::{UNMATCHED_ROUTE, record_request, render};
use crate::with_db;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<Response> {
    super::admin::require_admin(&caller, "the metrics are")?;
    let families = store_gauges(&state.db)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        render(families),
    )
        .into_response())
}

/// Jobs by status, the queue's depth and its oldest job's wait, as the store has them now.
async fn store_gauges(db: &Db) -> Result<Vec<prometheus::proto::MetricFamily>, sqlx::Error> {
    let by_status: Vec<(String, i64)> = with_db!(db, p => sqlx::query_as(
        "select status, count(*) from jobs group by status").fetch_all(p).await)?;
    // A queued job waits since its latest status change (it was queued then: created, resumed,
    // or given back by a worker), or since it was created if it has none.
    let oldest: Option<DateTime<Utc>> = with_db!(db, p => sqlx::query_scalar(
        "select min(coalesce(
             (select max(e.created_at) from job_events e where e.job_id = j.id and e.kind = 'status'),
             j.created_at))
         from jobs j where j.status = 'queued'").fetch_one(p).await)?;

    let jobs = IntGaugeVec::new(
        Opts::new("wick_jobs", "Jobs in the store, by status"),
        &["status"],
    )
    .expect("valid metric");
    for s in JobStatus::ALL {
        jobs.with_label_values(&[s.as_str()]).set(0);
    }
    let mut queued = 0;
    for (status, n) in &by_status {
        jobs.with_label_values(&[status.as_str()]).set(*n);
        if status == JobStatus::Queued.as_str() {
            queued = *n;
        }
    }
    let depth = IntGauge::new("wick_queue_depth", "Jobs queued, waiting for a worker slot")
        .expect("valid metric");
    depth.set(queued);
    let age = Gauge::new(
        "wick_queue_oldest_age_seconds",
        "How long the longest-waiting queued job has waited (0 when none waits)",
    )
    .expect("valid metric");
    if let Some(t) = oldest {
        age.set(((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0));
    }
    Ok([jobs.collect(), depth.collect(), age.collect()]
        .into_iter()
        .flatten()
        .collect())
}

/// Counts every request by method, route template (`/v1/files/{id}`; [`UNMATCHED_ROUTE`] when no
/// route matched, so raw paths never become labels) and status, with its latency.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let res = next.run(req).await;
    record_request(
        method.as_str(),
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        res.status().as_u16(),
        start.elapsed(),
    );
    res
}
