//! What the store of record points at in the blob store: every row's blob path, for the garbage
//! collector (`wick gc`) to tell kept blobs from orphans.

use super::Db;
use crate::with_db;

/// The blob paths (a key, or a folder prefix) of every file, trained model, checkpoint and
/// imported model.
pub async fn all_blob_paths(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let sql = "select blob_path from files
               union all select blob_path from models where blob_path is not null
               union all select blob_path from checkpoints
               union all select blob_path from imported_models";
    with_db!(db, p => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await)
}
