//! A status change as the service makes it: the store's conditional transition (with its event),
//! then the announcements: live watchers through the hub, idle worker slots through the queue's
//! wake-up (a queued job is there to claim; a cancelled or paused one is for its worker to see).

use tokio::sync::Notify;

use crate::store::Db;
use crate::store::events::NewEvent;
use crate::store::job_status::JobStatus;
use crate::store::jobs::{self, Transition};
use crate::stream::hub::Hub;

/// Moves job `id` of `org_id` to `to` with `event`, and announces it when it moved.
pub async fn move_job(
    db: &Db,
    hub: &Hub,
    queue_wake: &Notify,
    org_id: &str,
    id: &str,
    to: JobStatus,
    event: &NewEvent,
) -> Result<Transition, sqlx::Error> {
    let t = jobs::transition(db, org_id, id, to, event).await?;
    if let Transition::Moved(..) = t {
        hub.publish(id).await;
        queue_wake.notify_waiters();
    }
    Ok(t)
}
