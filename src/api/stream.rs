//! `GET /v1/fine_tuning/jobs/{id}/stream`: Server-Sent Events with every metric point, event and
//! status change of a job. Each message's id is a [`Cursor`]; a client that reconnects with
//! `Last-Event-ID` (or `?after=`) gets exactly what it missed, then the live feed. The stream ends
//! with a `done` message once the job has ended and everything was sent.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::jobs::event_object;
use super::query::ApiQuery;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::ids::unix;
use crate::state::AppState;
use crate::store::job_status::JobStatus;
use crate::store::jobs;
use crate::stream::hub::{Cursor, Item, read_after};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/fine_tuning/jobs/{id}/stream", get(stream_job))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    after: Option<String>,
}

/// The SSE message for one item.
pub fn sse_message(item: &Item, cursor: Cursor) -> Event {
    let (name, data) = match item {
        Item::Metric(m) => {
            let mut d = m.data.0.clone();
            if let Value::Object(o) = &mut d {
                o.insert("kind".into(), json!(m.kind));
                o.insert("step".into(), json!(m.step));
                o.insert(
                    "created_at".into(),
                    json!(m.created_at.timestamp_millis() as f64 / 1000.0),
                );
            }
            let name = if m.kind == crate::store::metrics::SAMPLE_KIND {
                "sample"
            } else {
                "metrics"
            };
            (name, d)
        }
        Item::Event(e) if e.kind == "status" => ("status", event_object(e)),
        Item::Event(e) => ("event", event_object(e)),
    };
    Event::default()
        .id(cursor.to_id())
        .event(name)
        .data(data.to_string())
}

/// The status an event announces, if it is a status change.
fn announced_status(item: &Item) -> Option<JobStatus> {
    match item {
        Item::Event(e) if e.kind == "status" => e
            .data
            .as_ref()
            .and_then(|d| d.0.get("status"))
            .and_then(Value::as_str)
            .and_then(JobStatus::parse),
        _ => None,
    }
}

async fn stream_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>> {
    let job = super::jobs::find_job(&state, &caller.org_id, &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.after);
    let cursor = match resume {
        None => Cursor::default(),
        Some(s) => Cursor::parse(&s).ok_or_else(|| {
            ApiError::invalid_param("Last-Event-ID", format!("{s:?} is not a stream position"))
        })?,
    };
    // Subscribe before replaying, so nothing written in between is missed.
    let live = state.hub.subscribe(&job.id).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(feed_watcher(state, job.id, cursor, live, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Sends one watcher everything after `cursor`, then the live feed, until the job ends or the
/// watcher leaves. Falling behind the live feed means catching up from the database.
#[allow(unused_assignments)] // `send!` marks the end wherever it is used, even where the end is known
async fn feed_watcher(
    state: AppState,
    job_id: String,
    mut cursor: Cursor,
    mut live: broadcast::Receiver<Arc<Item>>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let _watching = crate::telemetry::metrics::sse_watcher();
    let mut ended = false;
    macro_rules! send {
        ($item:expr) => {{
            let item: &Item = $item;
            if item.is_after(cursor) {
                cursor = item.advance(cursor);
                if announced_status(item).is_some_and(JobStatus::is_terminal) {
                    ended = true;
                }
                if tx.send(Ok(sse_message(item, cursor))).await.is_err() {
                    return;
                }
            }
        }};
    }
    // Catch up from the database.
    loop {
        match read_after(&state.db, &job_id, cursor).await {
            Ok(items) if items.is_empty() => break,
            Ok(items) => {
                for item in &items {
                    send!(item)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream replay failed");
                return;
            }
        }
    }
    // A job that ended before this watcher came still gets a clean end.
    if !ended
        && let Ok(Some(j)) = jobs::get_job_any_org(&state.db, &job_id).await
        && j.status.is_terminal()
    {
        // It may have ended after the replay above read: send whatever came since.
        while let Ok(items) = read_after(&state.db, &job_id, cursor).await {
            if items.is_empty() {
                break;
            }
            for item in &items {
                send!(item)
            }
        }
        ended = true;
    }
    while !ended {
        tokio::select! {
            r = live.recv() => match r {
                Ok(item) => send!(&item),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live feed: read what was missed from the database.
                    loop {
                        match read_after(&state.db, &job_id, cursor).await {
                            Ok(items) if items.is_empty() => break,
                            Ok(items) => for item in &items { send!(item) },
                            Err(_) => return,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tx.closed() => return,
        }
    }
    let status = jobs::get_job_any_org(&state.db, &job_id)
        .await
        .ok()
        .flatten()
        .map(|j| j.status);
    let done = json!({"status": status, "at": unix(crate::ids::now())});
    let _ = tx
        .send(Ok(Event::default()
            .id(cursor.to_id())
            .event("done")
            .data(done.to_string())))
        .await;
}
