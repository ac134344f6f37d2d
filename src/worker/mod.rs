//! Workers: slots that claim queued jobs and run each in its own child process.
//!
//! `wick serve` runs `--worker-slots` of them beside the API; `wick worker` runs them alone,
//! on another machine if need be, against the same Postgres and blob store. Each slot trains on
//! one device (`--devices`): a GPU of its own, or the CPU.

pub mod child;
pub mod protocol;
pub mod slot;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::devices::DeviceError;
use crate::state::AppState;

/// A name for this process's slot `n`, unique across machines.
pub fn worker_id(n: usize) -> String {
    format!("{}-{}-slot{n}", host_name(), std::process::id())
}

/// Starts the slots: one per GPU of `--devices`, or `worker_slots` on the CPU (none when
/// `worker_slots` is 0). They stop once `shutdown` fires and their job has checkpointed and been
/// requeued. Devices that cannot be used (a GPU named on a machine without it) are an error.
pub fn spawn_slots(
    state: &AppState,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, DeviceError> {
    let settings = &state.settings;
    if settings.worker_slots == 0 {
        return Ok(Vec::new());
    }
    let devices = crate::devices::resolve(settings.devices.as_ref())?;
    let slots = crate::devices::slot_devices(&devices, settings.worker_slots);
    let mut handles = Vec::new();
    let count = slots.len();
    for (n, device) in slots.into_iter().enumerate() {
        let info = device.describe()?;
        handles.push(tokio::spawn(slot::run_slot(
            state.clone(),
            worker_id(n),
            slot::SlotDevice {
                id: device,
                info,
                slots: count,
            },
            shutdown.clone(),
        )));
    }
    Ok(handles)
}

/// This machine's name, as the workers listing shows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}
