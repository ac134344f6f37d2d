//! The models this process has loaded, least recently used first out, so a second request to the
//! same model is fast and memory stays bounded. Trained models are copied from the blob store to a
//! local cache folder the first time they are needed; local base models load from their folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::engine::LoadedModel;
use crate::blob::Blobs;
use crate::devices::DeviceId;

/// How many models stay loaded.
pub const CAPACITY: usize = 2;

#[derive(Clone, Default)]
pub struct Registry {
    /// Most recently used last.
    loaded: Arc<Mutex<Vec<(String, Arc<LoadedModel>)>>>,
    /// Where models load: the CPU, or the serving process's first GPU.
    device: Option<DeviceId>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry whose models load onto `device`.
    pub fn on(device: DeviceId) -> Self {
        Registry {
            device: Some(device),
            ..Default::default()
        }
    }

    /// The device models load onto.
    pub fn device(&self) -> DeviceId {
        self.device.unwrap_or(DeviceId::Cpu)
    }

    fn cached(&self, id: &str) -> Option<Arc<LoadedModel>> {
        let mut loaded = self.loaded.lock().expect("registry lock");
        let i = loaded.iter().position(|(k, _)| k == id)?;
        let entry = loaded.remove(i);
        let model = entry.1.clone();
        loaded.push(entry);
        Some(model)
    }

    /// Whether `id` is loaded now.
    pub fn is_loaded(&self, id: &str) -> bool {
        let loaded = self.loaded.lock().expect("registry lock");
        loaded.iter().any(|(k, _)| k == id)
    }

    /// The model `id`, whose files are under `blob_prefix`, loading it (off the async runtime) if
    /// it is not loaded yet.
    pub async fn get(
        &self,
        id: &str,
        blobs: &Blobs,
        blob_prefix: &str,
        cache_dir: PathBuf,
    ) -> anyhow::Result<Arc<LoadedModel>> {
        if let Some(m) = self.cached(id) {
            return Ok(m);
        }
        if !cache_dir.join("config.json").exists() {
            let staging = cache_dir.with_extension("partial");
            let _ = tokio::fs::remove_dir_all(&staging).await;
            blobs.get_dir(blob_prefix, &staging).await?;
            let _ = tokio::fs::remove_dir_all(&cache_dir).await;
            tokio::fs::rename(&staging, &cache_dir).await?;
        }
        let device = self.device();
        let model = Arc::new(
            tokio::task::spawn_blocking(move || LoadedModel::load(&cache_dir, device)).await??,
        );
        Ok(self.keep(id, model))
    }

    /// The model in the folder `dir`, loaded from there (nothing is copied) if `key` is not
    /// loaded yet. `key` should change when the folder's files do, so a replaced model reloads.
    /// Errors from reading the folder are [`crate::infer::engine::InferError`]s.
    pub async fn get_local(&self, key: &str, dir: &Path) -> anyhow::Result<Arc<LoadedModel>> {
        if let Some(m) = self.cached(key) {
            return Ok(m);
        }
        let dir = dir.to_path_buf();
        let device = self.device();
        let model = tokio::task::spawn_blocking(move || LoadedModel::load(&dir, device)).await??;
        Ok(self.keep(key, Arc::new(model)))
    }

    /// Records `model` as the most recently used, evicting the least recently used beyond
    /// [`CAPACITY`].
    fn keep(&self, id: &str, model: Arc<LoadedModel>) -> Arc<LoadedModel> {
        let mut loaded = self.loaded.lock().expect("registry lock");
        loaded.retain(|(k, _)| k != id);
        loaded.push((id.to_string(), model.clone()));
        while loaded.len() > CAPACITY {
            loaded.remove(0);
        }
        model
    }
}
