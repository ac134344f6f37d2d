//! Base models imported into the blob store, visible to every organization as local models are.

use chrono::{DateTime, Utc};

use super::Db;
use crate::ids::now;
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportedRow {
    /// The model id jobs name.
    pub id: String,
    /// SHA-256 over the folder's files (names and bytes): the cache key on every worker.
    pub content_hash: String,
    /// The folder in the blob store.
    pub blob_path: String,
    /// The folder's `config.json`, as imported.
    pub config: String,
    pub parameters: i64,
    pub chat_template: bool,
    /// Total size of the folder's files.
    pub bytes: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, content_hash, blob_path, config, parameters, chat_template, bytes, created_at";

/// Records `row`, replacing an earlier import under the same id.
pub async fn upsert(db: &Db, row: &ImportedRow) -> Result<(), sqlx::Error> {
    let sql = "insert into imported_models (id, content_hash, blob_path, config, parameters, chat_template, bytes, created_at)
               values ($1, $2, $3, $4, $5, $6, $7, $8)
               on conflict (id) do update set content_hash = excluded.content_hash,
                 blob_path = excluded.blob_path, config = excluded.config,
                 parameters = excluded.parameters, chat_template = excluded.chat_template,
                 bytes = excluded.bytes, created_at = excluded.created_at";
    with_db!(db, p => sqlx::query(sql).bind(&row.id).bind(&row.content_hash).bind(&row.blob_path)
        .bind(&row.config).bind(row.parameters).bind(row.chat_template).bind(row.bytes)
        .bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ImportedRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from imported_models where id = $1");
    with_db!(db, p => sqlx::query_as::<_, ImportedRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await)
}

/// Every imported model, by id.
pub async fn list(db: &Db) -> Result<Vec<ImportedRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from imported_models order by id");
    with_db!(db, p => sqlx::query_as::<_, ImportedRow>(sqlx::AssertSqlSafe(sql)).fetch_all(p).await)
}
