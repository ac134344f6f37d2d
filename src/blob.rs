//! The blob store: datasets, checkpoints, adapters and models, through `object_store`, so the same
//! code writes a local folder today and S3-compatible storage when Wick is scaled out.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

/// Parts are flushed in chunks of this size; an upload holds at most a few of them in memory.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once while streaming an upload.
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// A handle on the blob store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    /// A store in a local folder, created if missing.
    pub fn local(dir: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Blobs {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
        })
    }

    /// Starts a streamed write to `path`; nothing is visible there until [`BlobWriter::finish`].
    pub async fn writer(&self, path: &str) -> object_store::Result<BlobWriter> {
        let upload = self.store.put_multipart(&Path::from(path)).await?;
        Ok(BlobWriter {
            inner: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
        })
    }

    /// The blob's bytes as a stream of chunks.
    pub async fn read_stream(
        &self,
        path: &str,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(self.store.get(&Path::from(path)).await?.into_stream())
    }

    /// The whole blob in memory: for small blobs only.
    pub async fn read_all(&self, path: &str) -> object_store::Result<Bytes> {
        self.store.get(&Path::from(path)).await?.bytes().await
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(path), bytes.into())
            .await
            .map(|_| ())
    }

    /// Whether a blob exists at `path`.
    pub async fn exists(&self, path: &str) -> object_store::Result<bool> {
        match self.store.head(&Path::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `path`; a blob already gone is not an error.
    pub async fn delete(&self, path: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A streamed write in progress. Dropping it without `finish` leaves the staged parts behind,
/// so callers `abort` on every failure path.
pub struct BlobWriter {
    inner: WriteMultipart,
}

impl BlobWriter {
    /// Appends `chunk`, waiting while too many parts are in flight so memory stays bounded.
    pub async fn write(&mut self, chunk: &[u8]) -> object_store::Result<()> {
        self.inner.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        self.inner.write(chunk);
        Ok(())
    }

    pub async fn finish(self) -> object_store::Result<()> {
        self.inner.finish().await.map(|_| ())
    }

    /// Discards everything written so far.
    pub async fn abort(self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
