//! The blob store: datasets, checkpoints, adapters and models, through `object_store`, so the same
//! code writes a local folder on one machine and an S3-compatible bucket when Wick is scaled out
//! ([`crate::blob_location`] parses which). [`keys`] names where each kind of object lives.

pub mod keys;
pub mod sweep;

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

pub use crate::blob_location::BlobLocation;

/// Whether a full disk (or a quota) caused `e`: an I/O error of that kind anywhere in its chain
/// of sources.
pub fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
}

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
    /// The store `location` names: a local folder (created if missing) or an S3 bucket, whose
    /// connection settings come from the `AWS_*` variables ([`crate::blob_location`] lists them).
    pub fn open(location: &BlobLocation) -> anyhow::Result<Self> {
        match location {
            BlobLocation::Local(dir) => Self::local(dir),
            BlobLocation::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                // A plain-HTTP endpoint is a self-hosted server the operator named on purpose.
                if std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .is_ok_and(|e| e.starts_with("http://"))
                {
                    builder = builder.with_allow_http(true);
                }
                // Fail within seconds, not object_store's default three minutes, when the store
                // is down: an upload then answers 503 and a training job pauses with the reason.
                let retry = RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(20),
                    ..Default::default()
                };
                let s3 = builder.with_retry(retry).build()?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                };
                Ok(Blobs { store })
            }
        }
    }

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

    /// Paths of every blob under `prefix` (a folder), sorted.
    pub async fn list(&self, prefix: &str) -> object_store::Result<Vec<String>> {
        Ok(self
            .list_meta(prefix)
            .await?
            .into_iter()
            .map(|m| m.path)
            .collect())
    }

    /// Every blob under `prefix` (all when empty), with its size and last change, sorted by path.
    pub async fn list_meta(&self, prefix: &str) -> object_store::Result<Vec<BlobMeta>> {
        use futures::TryStreamExt;
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        let metas: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        let mut out: Vec<BlobMeta> = metas
            .into_iter()
            .map(|m| BlobMeta {
                path: m.location.to_string(),
                bytes: m.size,
                modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Copies a local folder, recursively, to `prefix/...`, streaming each file.
    pub async fn put_dir(&self, local: &FsPath, prefix: &str) -> anyhow::Result<()> {
        self.put_dir_except(local, prefix, &[]).await
    }

    /// As [`Blobs::put_dir`], leaving out the top-level entries named in `skip`.
    pub async fn put_dir_except(
        &self,
        local: &FsPath,
        prefix: &str,
        skip: &[&str],
    ) -> anyhow::Result<()> {
        let mut stack = vec![local.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut rd = tokio::fs::read_dir(&dir).await?;
            while let Some(e) = rd.next_entry().await? {
                let p = e.path();
                if dir == local && skip.iter().any(|s| e.file_name() == *s) {
                    continue;
                }
                if e.file_type().await?.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(local)?.to_string_lossy().replace('\\', "/");
                self.put_file(&p, &format!("{prefix}/{rel}")).await?;
            }
        }
        Ok(())
    }

    /// Streams one local file to `path`.
    pub async fn put_file(&self, local: &FsPath, path: &str) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(local).await?;
        let mut w = self.writer(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e.into());
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = w.write(&buf[..n]).await {
                let _ = w.abort().await;
                return Err(e.into());
            }
        }
        w.finish().await?;
        Ok(())
    }

    /// Streams the blob at `path` into a local file.
    pub async fn get_file(&self, path: &str, local: &FsPath) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut stream = self.read_stream(path).await?;
        let mut f = tokio::fs::File::create(local).await?;
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            f.write_all(&chunk?).await?;
        }
        f.flush().await?;
        Ok(())
    }

    /// Copies every blob under `prefix` into the local folder `local`, keeping relative paths.
    pub async fn get_dir(&self, prefix: &str, local: &FsPath) -> anyhow::Result<()> {
        for path in self.list(prefix).await? {
            let rel = path
                .strip_prefix(prefix)
                .unwrap_or(&path)
                .trim_start_matches('/');
            self.get_file(&path, &local.join(rel)).await?;
        }
        Ok(())
    }

    /// Deletes every blob under `prefix`.
    pub async fn delete_dir(&self, prefix: &str) -> object_store::Result<()> {
        for path in self.list(prefix).await? {
            self.delete(&path).await?;
        }
        Ok(())
    }

    /// Deletes `path`; a blob already gone is not an error.
    pub async fn delete(&self, path: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// One blob as a listing shows it.
#[derive(Debug, Clone)]
pub struct BlobMeta {
    pub path: String,
    pub bytes: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
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
