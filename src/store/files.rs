//! Uploaded files: metadata and validation report; the bytes live in the blob store.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{Db, UnknownValue, decode_text};
use crate::with_db;

/// What a file is for (the `purpose` column), as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilePurpose {
    /// Chat JSONL for supervised fine-tuning.
    FineTune,
    /// `{"text": ...}` JSONL for pretraining.
    Pretrain,
    /// The metrics CSV a finished job leaves behind.
    FineTuneResults,
}

impl FilePurpose {
    pub const ALL: [FilePurpose; 3] = [Self::FineTune, Self::Pretrain, Self::FineTuneResults];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FineTune => "fine-tune",
            Self::Pretrain => "pretrain",
            Self::FineTuneResults => "fine-tune-results",
        }
    }
}

impl TryFrom<String> for FilePurpose {
    type Error = UnknownValue;

    fn try_from(s: String) -> Result<Self, UnknownValue> {
        decode_text("files.purpose", s, &Self::ALL, Self::as_str)
    }
}

/// Where a file stands (the `status` column): OpenAI's `uploaded` (a cleaned file still being
/// written), `processed` and `error`, and `deleted` for a file whose bytes are gone but whose
/// row stays for the jobs that used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Uploaded,
    Processed,
    Error,
    Deleted,
}

impl FileStatus {
    pub const ALL: [FileStatus; 4] = [Self::Uploaded, Self::Processed, Self::Error, Self::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Processed => "processed",
            Self::Error => "error",
            Self::Deleted => "deleted",
        }
    }
}

impl TryFrom<String> for FileStatus {
    type Error = UnknownValue;

    fn try_from(s: String) -> Result<Self, UnknownValue> {
        decode_text("files.status", s, &Self::ALL, Self::as_str)
    }
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `files`, its purpose and status typed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub org_id: String,
    pub filename: String,
    #[sqlx(try_from = "String")]
    pub purpose: FilePurpose,
    pub bytes: i64,
    pub sha256: String,
    pub blob_path: String,
    #[sqlx(try_from = "String")]
    pub status: FileStatus,
    pub status_details: Option<String>,
    pub report: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
    /// The file a cleaned file was made from.
    pub source_file: Option<String>,
    /// A cleaned file's options, as requested.
    pub clean_options: Option<Json<Value>>,
    /// A cleaned file's report, once written.
    pub clean_report: Option<Json<Value>>,
}

const COLUMNS: &str = "id, org_id, filename, purpose, bytes, sha256, blob_path, status, status_details, report, created_at, source_file, clean_options, clean_report";

pub async fn insert_file(db: &Db, f: &FileRow) -> Result<(), sqlx::Error> {
    let sql = format!(
        "insert into files ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    with_db!(db, p => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&f.id).bind(&f.org_id).bind(&f.filename).bind(f.purpose.as_str()).bind(f.bytes)
        .bind(&f.sha256).bind(&f.blob_path).bind(f.status.as_str()).bind(&f.status_details)
        .bind(&f.report).bind(f.created_at).bind(&f.source_file).bind(&f.clean_options)
        .bind(&f.clean_report)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Takes (or renews) the cleaning lease of an `uploaded` file until `until`, unless another
/// server holds an unexpired one; true when this caller holds it now.
pub async fn take_clean_lease(
    db: &Db,
    id: &str,
    holder_lease: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now = crate::ids::now();
    let sql = "update files set clean_lease_until = $1 where id = $2 and status = 'uploaded'
               and (clean_lease_until is null or clean_lease_until < $3 or clean_lease_until = $4)";
    let n = with_db!(db, p => sqlx::query(sql).bind(until).bind(id).bind(now).bind(holder_lease)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Records a finished clean: the written file's size, checksum, validation and cleaning
/// reports, and its status (`processed` or `error`); the lease ends.
pub async fn finish_clean(db: &Db, f: &FileRow) -> Result<(), sqlx::Error> {
    let sql = "update files set bytes = $1, sha256 = $2, status = $3, status_details = $4,
               report = $5, clean_report = $6, clean_lease_until = null
               where id = $7 and status = 'uploaded'";
    with_db!(db, p => sqlx::query(sql)
        .bind(f.bytes).bind(&f.sha256).bind(f.status.as_str()).bind(&f.status_details)
        .bind(&f.report).bind(&f.clean_report).bind(&f.id)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// `uploaded` files whose clean no server holds (it was interrupted): to be picked up again.
pub async fn interrupted_cleans(db: &Db) -> Result<Vec<FileRow>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from files where status = 'uploaded'
         and (clean_lease_until is null or clean_lease_until < $1) order by id"
    );
    with_db!(db, p => sqlx::query_as::<_, FileRow>(sqlx::AssertSqlSafe(sql)).bind(crate::ids::now()).fetch_all(p).await)
}

/// Whether a clean that has not finished reads the file.
pub async fn file_being_cleaned(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "select count(*) from files where source_file = $1 and status = 'uploaded'";
    let n = with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(p).await)?;
    Ok(n > 0)
}

/// Token counts of a file for a model, when computed before.
pub async fn token_stats(
    db: &Db,
    file_id: &str,
    model: &str,
) -> Result<Option<Value>, sqlx::Error> {
    let sql = "select stats from file_token_stats where file_id = $1 and model = $2";
    let row = with_db!(db, p => sqlx::query_scalar::<_, Json<Value>>(sql).bind(file_id).bind(model).fetch_optional(p).await)?;
    Ok(row.map(|j| j.0))
}

/// Keeps a file's token counts for a model (a second writer of the same counts is a no-op).
pub async fn put_token_stats(
    db: &Db,
    file_id: &str,
    model: &str,
    stats: &Value,
) -> Result<(), sqlx::Error> {
    let sql =
        "insert into file_token_stats (file_id, model, stats, created_at) values ($1, $2, $3, $4)
               on conflict (file_id, model) do nothing";
    with_db!(db, p => sqlx::query(sql).bind(file_id).bind(model).bind(Json(stats)).bind(crate::ids::now())
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The file `id` if it belongs to `org_id`; another organization's file is as good as absent.
pub async fn get_file(db: &Db, org_id: &str, id: &str) -> Result<Option<FileRow>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from files where id = $1 and org_id = $2 and status <> 'deleted'"
    );
    with_db!(db, p => sqlx::query_as::<_, FileRow>(sqlx::AssertSqlSafe(sql)).bind(id).bind(org_id).fetch_optional(p).await)
}

/// Newest first; `after` is the id of the last file of the previous page.
pub async fn list_files(
    db: &Db,
    org_id: &str,
    purpose: Option<FilePurpose>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<FileRow>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from files where org_id = $1 and status <> 'deleted' and ($2 is null or purpose = $2)
         and ($3 is null or id < $3) order by id desc limit $4"
    );
    with_db!(db, p => sqlx::query_as::<_, FileRow>(sqlx::AssertSqlSafe(sql))
        .bind(org_id).bind(purpose.map(FilePurpose::as_str)).bind(after).bind(limit)
        .fetch_all(p).await)
}

/// Whether a job that has not ended uses the file (as its training or validation file, or one
/// of several).
pub async fn file_in_use(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "select count(*) from jobs where status in ('validating_files', 'queued', 'running', 'paused')
               and (training_file = $1 or validation_file = $1
                    or id in (select job_id from job_files where file_id = $1))";
    let n = with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(p).await)?;
    Ok(n > 0)
}

/// Whether any job, ended or not, refers to the file (it then keeps its row for the job's record).
pub async fn file_referenced(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "select count(*) from jobs where training_file = $1 or validation_file = $1
               or id in (select job_id from job_files where file_id = $1)";
    let n = with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(p).await)?;
    Ok(n > 0)
}

/// Deletes the row; returns whether one was deleted.
pub async fn delete_file(db: &Db, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let r = with_db!(db, p => sqlx::query("delete from files where id = $1 and org_id = $2")
        .bind(id).bind(org_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(r > 0)
}

/// Marks a file deleted while jobs still refer to it: its bytes are gone, its row stays.
pub async fn mark_file_deleted(db: &Db, org_id: &str, id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, p => sqlx::query("update files set status = 'deleted' where id = $1 and org_id = $2")
        .bind(id).bind(org_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The file `id` whatever its organization: for workers, never for requests.
pub async fn get_file_any_org(db: &Db, id: &str) -> Result<Option<FileRow>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from files where id = $1 and status <> 'deleted'");
    with_db!(db, p => sqlx::query_as::<_, FileRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_statuses_round_trip_their_column_text() {
        for p in FilePurpose::ALL {
            assert_eq!(FilePurpose::try_from(p.as_str().to_string()).unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for s in FileStatus::ALL {
            assert_eq!(FileStatus::try_from(s.as_str().to_string()).unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(FileStatus::try_from("pending".to_string()).is_err());
    }
}
