//! The fan-out of a job's new events and metric points to every watcher of it.
//!
//! The database is the source of truth: each job with watchers has one pump task that, when
//! woken, reads what was written after its cursor and broadcasts it. Writers wake it through
//! [`Hub::publish`]: in this process directly, and in every other process through Postgres
//! `NOTIFY` (a worker on another machine, an API process beside it). A watcher that falls behind
//! the broadcast buffer is told so and catches up from the database, so a slow watcher never slows
//! training or other watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::store::Db;
use crate::store::events::{self, EventRow};
use crate::store::metrics::{self, MetricRow};

/// Postgres channel that carries the ids of jobs with something new.
pub const NOTIFY_CHANNEL: &str = "wick_job_updates";
/// Items a watcher may fall behind by before it catches up from the database.
const BROADCAST_CAPACITY: usize = 1024;
/// Pumps look anyway this often, in case a wake-up was lost.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Rows read per query.
const PAGE: i64 = 500;

/// How far a watcher has seen: the last event and metric sequence numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub event: i64,
    pub metric: i64,
}

impl Cursor {
    /// The SSE id form, `"<event>_<metric>"`.
    pub fn to_id(self) -> String {
        format!("{}_{}", self.event, self.metric)
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let (e, m) = s.trim().split_once('_')?;
        Some(Cursor {
            event: e.parse().ok()?,
            metric: m.parse().ok()?,
        })
    }
}

/// One thing that happened to a job.
#[derive(Debug, Clone)]
pub enum Item {
    Event(EventRow),
    Metric(MetricRow),
}

impl Item {
    /// Whether the watcher at `c` has not seen this yet.
    pub fn is_after(&self, c: Cursor) -> bool {
        match self {
            Item::Event(e) => e.seq > c.event,
            Item::Metric(m) => m.seq > c.metric,
        }
    }

    /// The cursor once this item is seen.
    pub fn advance(&self, c: Cursor) -> Cursor {
        match self {
            Item::Event(e) => Cursor {
                event: e.seq.max(c.event),
                ..c
            },
            Item::Metric(m) => Cursor {
                metric: m.seq.max(c.metric),
                ..c
            },
        }
    }
}

/// Everything written for `job_id` after `c`, up to a page of each kind, in write order per kind
/// (events and metrics interleaved by time).
pub async fn read_after(db: &Db, job_id: &str, c: Cursor) -> Result<Vec<Item>, sqlx::Error> {
    let evs = events::events_after(db, job_id, c.event, PAGE).await?;
    let pts = metrics::list_points(db, job_id, c.metric, PAGE).await?;
    let mut items: Vec<Item> = evs
        .into_iter()
        .map(Item::Event)
        .chain(pts.into_iter().map(Item::Metric))
        .collect();
    items.sort_by_key(|i| match i {
        Item::Event(e) => (e.created_at, 1),
        Item::Metric(m) => (m.created_at, 0),
    });
    Ok(items)
}

struct Channel {
    tx: broadcast::Sender<Arc<Item>>,
    wake: Arc<Notify>,
}

/// The registry of jobs being watched in this process.
#[derive(Clone)]
pub struct Hub {
    db: Db,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(db: Db) -> Self {
        Hub {
            db,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts watching `job_id`: items written from now on arrive on the receiver. The caller
    /// replays history from the database itself and skips anything it has already seen.
    pub async fn subscribe(
        &self,
        job_id: &str,
    ) -> Result<broadcast::Receiver<Arc<Item>>, sqlx::Error> {
        if let Some(c) = self.channels.lock().expect("hub lock").get(job_id) {
            return Ok(c.tx.subscribe());
        }
        let (ev, m) = events::stream_heads(&self.db, job_id).await?;
        let mut map = self.channels.lock().expect("hub lock");
        if let Some(c) = map.get(job_id) {
            return Ok(c.tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BROADCAST_CAPACITY);
        let wake = Arc::new(Notify::new());
        map.insert(
            job_id.to_string(),
            Channel {
                tx: tx.clone(),
                wake: wake.clone(),
            },
        );
        drop(map);
        tokio::spawn(self.clone().pump(
            job_id.to_string(),
            tx,
            wake,
            Cursor {
                event: ev,
                metric: m,
            },
        ));
        Ok(rx)
    }

    /// Tells watchers of `job_id` in this process that something was written.
    pub fn wake(&self, job_id: &str) {
        if let Some(c) = self.channels.lock().expect("hub lock").get(job_id) {
            c.wake.notify_one();
        }
    }

    /// Announces new rows for `job_id` here and, on Postgres, to every other process.
    pub async fn publish(&self, job_id: &str) {
        self.wake(job_id);
        if let Db::Pg(p) = &self.db
            && let Err(e) = sqlx::query("select pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(job_id)
                .execute(p)
                .await
        {
            tracing::warn!(error = %e, "pg_notify failed; watchers elsewhere will poll");
        }
    }

    /// Reads and broadcasts what is new for one job until nobody watches it.
    async fn pump(
        self,
        job_id: String,
        tx: broadcast::Sender<Arc<Item>>,
        wake: Arc<Notify>,
        mut cursor: Cursor,
    ) {
        loop {
            let _ = tokio::time::timeout(SAFETY_POLL, wake.notified()).await;
            {
                let mut map = self.channels.lock().expect("hub lock");
                if tx.receiver_count() == 0 {
                    map.remove(&job_id);
                    return;
                }
            }
            loop {
                match read_after(&self.db, &job_id, cursor).await {
                    Ok(items) if items.is_empty() => break,
                    Ok(items) => {
                        for item in items {
                            cursor = item.advance(cursor);
                            let _ = tx.send(Arc::new(item));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %job_id, error = %e, "stream pump read failed");
                        break;
                    }
                }
            }
        }
    }

    /// Wakes local pumps on every Postgres notification, so rows written by other processes
    /// stream as promptly as local ones. Runs until the process ends.
    pub fn listen_for_other_processes(&self) {
        let Db::Pg(pool) = &self.db else { return };
        let pool = pool.clone();
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut l) => {
                        if l.listen(NOTIFY_CHANNEL).await.is_ok() {
                            while let Ok(n) = l.recv().await {
                                hub.wake(n.payload());
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot LISTEN for job updates; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursor_ids_round_trip() {
        let c = Cursor {
            event: 12,
            metric: 345,
        };
        assert_eq!(Cursor::parse(&c.to_id()), Some(c));
        assert_eq!(Cursor::parse("nonsense"), None);
        assert_eq!(Cursor::parse("1_x"), None);
    }
}
