//! What is kept and what goes: deleting a trained model removes its blobs, and the garbage
//! collector (`wick gc`) finds blobs no row points at any more (left by a process killed between
//! writing a blob and recording it, or by a store restored from an older backup) and removes them.
//!
//! A blob is kept when a row's blob path is its key or a folder above it. Blobs changed within
//! the grace period are never touched: an upload or checkpoint in flight writes its blob before
//! its row.

use std::time::Duration;

use crate::blob::{BlobMeta, Blobs};
use crate::store::Db;
use crate::store::blob_refs;

/// Default grace period for `wick gc`.
pub const GRACE: Duration = Duration::from_secs(3600);

/// Blobs no row points at, older than `min_age`, sorted by path.
pub async fn find_orphans(
    db: &Db,
    blobs: &Blobs,
    min_age: Duration,
) -> anyhow::Result<Vec<BlobMeta>> {
    // Listed before the rows are read: a blob written and recorded in between is then kept.
    let listed = blobs.list_meta("").await?;
    let mut kept = blob_refs::all_blob_paths(db).await?;
    kept.sort();
    let now = chrono::Utc::now();
    Ok(listed
        .into_iter()
        .filter(|b| {
            let age = (now - b.modified).to_std().unwrap_or_default();
            age >= min_age && !b.path.contains('#') && !is_kept(&kept, &b.path)
        })
        .collect())
}

/// Whether `path` is one of `kept` (sorted) or lies in a folder one of them names.
fn is_kept(kept: &[String], path: &str) -> bool {
    // The path itself, then each folder above it.
    let mut at = path;
    loop {
        if kept.binary_search_by(|k| k.as_str().cmp(at)).is_ok() {
            return true;
        }
        match at.rsplit_once('/') {
            Some((parent, _)) => at = parent,
            None => return false,
        }
    }
}

/// Deletes a trained model's files from the blob store (its row goes after, so a failure here
/// leaves a model that can be deleted again rather than an orphan).
pub async fn delete_model_blobs(blobs: &Blobs, blob_path: &str) -> object_store::Result<()> {
    if blob_path.is_empty() {
        return Ok(());
    }
    blobs.delete_dir(blob_path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_kept_by_its_own_path_or_a_folder_above_it() {
        let mut kept: Vec<String> = [
            "files/org-1/file-1",
            "models/ftjob-2",
            "jobs/ftjob-2/checkpoints/checkpoint-00000010",
        ]
        .map(String::from)
        .to_vec();
        kept.sort();
        assert!(is_kept(&kept, "files/org-1/file-1"));
        assert!(
            !is_kept(&kept, "files/org-1/file-10"),
            "a longer name is not inside"
        );
        assert!(is_kept(&kept, "models/ftjob-2/config.json"));
        assert!(is_kept(
            &kept,
            "models/ftjob-2/adapter/adapter_model.safetensors"
        ));
        assert!(!is_kept(&kept, "models/ftjob-20/config.json"));
        assert!(is_kept(
            &kept,
            "jobs/ftjob-2/checkpoints/checkpoint-00000010/state.json"
        ));
        assert!(!is_kept(
            &kept,
            "jobs/ftjob-2/checkpoints/checkpoint-00000005/state.json"
        ));
        assert!(!is_kept(&kept, "base-models/abc/config.json"));
    }
}
