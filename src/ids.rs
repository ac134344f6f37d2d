//! Object ids: an OpenAI-style prefix and a UUIDv7, so ids sort in creation order and
//! pagination can use them as cursors.

use uuid::Uuid;

/// A new id such as `file-0192f4c3e1a27b...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

/// Seconds since the Unix epoch, as OpenAI's objects carry them.
pub fn unix(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}

/// The current time, truncated to microseconds so Postgres and SQLite round-trip it exactly.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
