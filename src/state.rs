//! The shared state of a running service: the store, the blob store, settings, the live-update
//! hub, the queue's wake-up, loaded models and the local models folder. Handlers and worker slots
//! take it; the composition root ([`crate::app`]) builds it.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;

use crate::blob::Blobs;
use crate::catalog::local::LocalModels;
use crate::config::Settings;
use crate::infer::registry::Registry;
use crate::store::Db;
use crate::stream::hub::Hub;

/// What every handler can reach; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub blobs: Blobs,
    pub settings: Arc<Settings>,
    /// Fans job updates out to live watchers.
    pub hub: Hub,
    /// Wakes idle worker slots in this process when a job is queued.
    pub queue_wake: Arc<Notify>,
    /// Models loaded for inference.
    pub models: Registry,
    /// The server's folder of Hugging Face base models.
    pub local_models: LocalModels,
    /// Per-organization limits: request-rate buckets and cached limits.
    pub tenants: crate::tenants::Limiter,
}

impl AppState {
    /// Opens the store and the blob store named by `settings`.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        crate::private_files::make_private_dir(&settings.data_dir)
            .with_context(|| format!("making {} private", settings.data_dir.display()))?;
        let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
        let location = settings.blob_location();
        let blobs =
            Blobs::open(&location).with_context(|| format!("opening the blob store {location}"))?;
        // An S3 bucket keeps an interrupted multipart upload out of sight (a lifecycle rule
        // removes its parts); a local folder keeps a staging file that only a sweep removes.
        if let crate::blob::BlobLocation::Local(dir) = &location {
            match crate::blob::sweep::sweep_partial_uploads(dir, crate::blob::sweep::GRACE) {
                Ok((0, _)) => {}
                Ok((files, bytes)) => {
                    tracing::info!(
                        files,
                        bytes,
                        "deleted what interrupted uploads left in the blob store"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "could not sweep interrupted uploads"),
            }
        }
        let hub = Hub::new(db.clone());
        hub.listen_for_other_processes();
        let models_dir = settings.local_models_dir();
        if settings.models_dir.is_some() && !models_dir.is_dir() {
            tracing::warn!(dir = %models_dir.display(), "the models folder does not exist; no local models until it does");
        }
        // Chat runs on this process's first GPU when it has one (the CPU when `--devices`
        // names the CPU or none can be used).
        let chat_device = crate::devices::resolve(settings.devices.as_ref())
            .ok()
            .and_then(|d| d.first().copied())
            .unwrap_or(crate::devices::DeviceId::Cpu);
        Ok(AppState {
            db,
            blobs,
            settings: Arc::new(settings),
            hub,
            queue_wake: Arc::new(Notify::new()),
            models: Registry::on(chat_device),
            local_models: LocalModels::new(models_dir),
            tenants: Default::default(),
        })
    }
}
