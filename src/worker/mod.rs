//! Workers: slots that claim queued jobs and run each in its own child process.
//!
//! `wick serve` runs `--worker-slots` of them beside the API; `wick worker` runs them alone,
//! on another machine if need be, against the same Postgres and blob store.

pub mod child;
pub mod protocol;
pub mod slot;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// A name for this process's slot `n`, unique across machines.
pub fn worker_id(n: usize) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-slot{n}", std::process::id())
}

/// Starts `state.settings.worker_slots` slots; they stop once `shutdown` fires and their job has
/// checkpointed and been requeued.
pub fn spawn_slots(state: &AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    (0..state.settings.worker_slots)
        .map(|n| {
            tokio::spawn(slot::run_slot(
                state.clone(),
                worker_id(n),
                shutdown.clone(),
            ))
        })
        .collect()
}
