//! Base models imported into the blob store, for workers that share no folder with the machine
//! the model came from (`wick models import DIR`, or `POST /v1/admin/models/import` from the
//! server's models folder). The folder is checked as a local model is, hashed (SHA-256 over every
//! file's name and bytes), and copied to `base-models/<hash>/`; a marker written last says the
//! copy is whole. Every machine that trains from or serves it downloads it once into its cache
//! (`<data-dir>/cache/base-models/<hash>`), so a re-import of the same bytes costs nothing and a
//! changed folder never mixes with an old copy.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::Digest;

use super::local::{self, LocalInfo};
use crate::blob::Blobs;
use crate::store::Db;
use crate::store::imported_models::{self, ImportedRow};

/// Where imported folders live in the blob store.
pub const PREFIX: &str = "base-models";
/// Written after every file of an import, so a half-copied folder is never taken for whole.
const MARKER: &str = ".wick-imported";

/// An imported model, with what its check learned.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    pub row: ImportedRow,
    pub info: LocalInfo,
}

impl ImportedModel {
    /// The model a row describes; `Err` (the reason) when its stored config no longer parses.
    pub fn from_row(row: ImportedRow) -> Result<Self, String> {
        let config = crate::model::ModelConfig::from_hf_json(&row.config)
            .map_err(|e| format!("its stored config.json does not load: {e}"))?;
        Ok(ImportedModel {
            info: LocalInfo {
                parameters: row.parameters as u64,
                config,
                chat_template: row.chat_template,
            },
            row,
        })
    }

    /// A number that changes whenever the imported bytes do, for telling loaded copies apart.
    pub fn version(&self) -> u64 {
        u64::from_str_radix(&self.row.content_hash[..16], 16).unwrap_or(0)
    }
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The folder or the name cannot be used; the message says why.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Checks `dir` as a base model named `name`, copies it into the blob store (unless the same
/// bytes are there already) and records it; `progress` counts the bytes hashed, then uploaded.
pub async fn import_folder(
    db: &Db,
    blobs: &Blobs,
    dir: &Path,
    name: &str,
    progress: &ProgressBar,
) -> Result<ImportedModel, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::Refused(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let (d, n) = (dir.to_path_buf(), name.to_string());
    let info = tokio::task::spawn_blocking(move || local::check(&d, &n))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|reason| ImportError::Refused(format!("{name} cannot be imported: {reason}")))?;
    let files = folder_files(dir).map_err(anyhow::Error::from)?;
    let bytes: u64 = files.iter().map(|(_, _, n)| n).sum();
    progress.set_length(2 * bytes);
    let (to_hash, bar) = (files.clone(), progress.clone());
    let hash = tokio::task::spawn_blocking(move || content_hash(&to_hash, &bar))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(anyhow::Error::from)?;
    let prefix = format!("{PREFIX}/{hash}");
    let marker = format!("{prefix}/{MARKER}");
    if blobs.exists(&marker).await.map_err(anyhow::Error::from)? {
        progress.inc(bytes);
    } else {
        for (rel, path, size) in &files {
            blobs.put_file(path, &format!("{prefix}/{rel}")).await?;
            progress.inc(*size);
        }
        blobs
            .put(&marker, bytes::Bytes::from(hash.clone()))
            .await
            .map_err(anyhow::Error::from)?;
    }
    let config = tokio::fs::read_to_string(dir.join("config.json"))
        .await
        .map_err(anyhow::Error::from)?;
    let row = ImportedRow {
        id: name.to_string(),
        content_hash: hash,
        blob_path: prefix,
        config,
        parameters: info.parameters as i64,
        chat_template: info.chat_template,
        bytes: bytes as i64,
        created_at: chrono::Utc::now(),
    };
    imported_models::upsert(db, &row).await?;
    Ok(ImportedModel { row, info })
}

/// The folder of `model` on this machine: the cached copy under `cache_root`, downloaded first
/// when this machine has none. Concurrent callers each download into their own staging folder;
/// the first to finish wins.
pub async fn materialise(
    blobs: &Blobs,
    model: &ImportedModel,
    cache_root: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = cache_root.join(&model.row.content_hash);
    if dir.join(MARKER).is_file() {
        return Ok(dir);
    }
    tokio::fs::create_dir_all(cache_root).await?;
    let staging = cache_root.join(format!(
        "{}.partial-{}",
        model.row.content_hash,
        uuid::Uuid::new_v4().simple()
    ));
    let fetched = blobs.get_dir(&model.row.blob_path, &staging).await;
    let placed = match fetched {
        Ok(()) if staging.join(MARKER).is_file() => tokio::fs::rename(&staging, &dir).await,
        Ok(()) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            anyhow::bail!(
                "imported model {} is incomplete in the blob store ({} has no {MARKER}); import it again",
                model.row.id,
                model.row.blob_path
            );
        }
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
    };
    if placed.is_err() {
        // Another caller placed it first.
        let _ = tokio::fs::remove_dir_all(&staging).await;
        anyhow::ensure!(
            dir.join(MARKER).is_file(),
            "could not place {}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Every file under `dir` (hidden entries left out, as the models folder leaves them out), as
/// (relative path with `/`, path, size), sorted by relative path.
fn folder_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = std::fs::metadata(e.path())?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&e.path())
                    .to_path_buf();
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.push((rel, e.path(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256 over each file's relative path, length and bytes, in order; hex.
fn content_hash(
    files: &[(String, PathBuf, u64)],
    progress: &ProgressBar,
) -> std::io::Result<String> {
    use std::io::Read;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (rel, path, size) in files {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(size.to_le_bytes());
        let mut f = std::fs::File::open(path)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            progress.inc(n as u64);
        }
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_names_and_bytes_and_skips_hidden_entries() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("config.json"), "{}").unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        std::fs::write(a.path().join("sub/x.bin"), [1u8, 2, 3]).unwrap();
        let hash =
            |d: &Path| content_hash(&folder_files(d).unwrap(), &ProgressBar::hidden()).unwrap();
        let first = hash(a.path());
        std::fs::create_dir(a.path().join(".git")).unwrap();
        std::fs::write(a.path().join(".git/HEAD"), "ref").unwrap();
        assert_eq!(
            hash(a.path()),
            first,
            "hidden entries are not part of the model"
        );
        let names: Vec<String> = folder_files(a.path())
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(names, ["config.json", "sub/x.bin"]);
        std::fs::write(a.path().join("sub/x.bin"), [1u8, 2, 4]).unwrap();
        assert_ne!(hash(a.path()), first, "a changed byte changes the hash");
        std::fs::rename(a.path().join("sub/x.bin"), a.path().join("sub/y.bin")).unwrap();
        std::fs::write(a.path().join("sub/y.bin"), [1u8, 2, 3]).unwrap();
        assert_ne!(hash(a.path()), first, "a renamed file changes the hash");
    }
}
