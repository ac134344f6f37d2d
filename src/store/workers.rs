//! Worker slots and their devices: each slot keeps a row fresh while it runs, for
//! `GET /v1/workers`.

use chrono::{DateTime, Duration, Utc};

use super::Db;
use crate::devices::DeviceInfo;
use crate::ids::now;
use crate::with_db;

/// How often a slot renews its row.
pub const BEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// A slot is live while it renewed its row within this many beats.
const LIVE_BEATS: u32 = 3;

/// One slot as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub device: String,
    pub device_kind: String,
    pub device_name: String,
    pub device_memory_bytes: Option<i64>,
    pub job_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// Records slot `id` on `host` with its device, as started now.
pub async fn register(
    db: &Db,
    id: &str,
    host: &str,
    device: &DeviceInfo,
) -> Result<(), sqlx::Error> {
    let t = now();
    let sql = "insert into workers (id, host, device, device_kind, device_name, device_memory_bytes, job_id, started_at, last_seen_at)
               values ($1, $2, $3, $4, $5, $6, null, $7, $7)
               on conflict (id) do update set host = excluded.host, device = excluded.device,
                 device_kind = excluded.device_kind, device_name = excluded.device_name,
                 device_memory_bytes = excluded.device_memory_bytes, job_id = null,
                 started_at = excluded.started_at, last_seen_at = excluded.last_seen_at";
    let memory = device.memory_bytes.map(|b| b.min(i64::MAX as u64) as i64);
    with_db!(db, p => sqlx::query(sql).bind(id).bind(host).bind(&device.id).bind(device.kind.as_str())
        .bind(&device.name).bind(memory).bind(t).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Slot `id` is alive now, running `job_id` (or idle). False when it has no row.
pub async fn touch(db: &Db, id: &str, job_id: Option<&str>) -> Result<bool, sqlx::Error> {
    let sql = "update workers set last_seen_at = $2, job_id = $3 where id = $1";
    let n = with_db!(db, p => sqlx::query(sql).bind(id).bind(now()).bind(job_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Slot `id` stopped.
pub async fn remove(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, p => sqlx::query("delete from workers where id = $1").bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Slots seen within the last [`LIVE_BEATS`] beats, by host and id; rows older than a day (slots
/// that died without removing themselves) are deleted on the way.
pub async fn list_live(db: &Db) -> Result<Vec<WorkerRow>, sqlx::Error> {
    let fresh = Duration::from_std(BEAT * LIVE_BEATS).expect("a few seconds");
    let t = now();
    with_db!(db, p => sqlx::query("delete from workers where last_seen_at < $1")
        .bind(t - Duration::days(1)).execute(p).await.map(|r| r.rows_affected()))?;
    let sql = "select id, host, device, device_kind, device_name, device_memory_bytes, job_id, started_at, last_seen_at
               from workers where last_seen_at >= $1 order by host, id";
    with_db!(db, p => sqlx::query_as::<_, WorkerRow>(sql).bind(t - fresh).fetch_all(p).await)
}
