//! The store of record: Postgres when `DATABASE_URL` is set, an embedded SQLite file otherwise.
//!
//! Both backends run the same SQL where they can (sqlx accepts `$n` placeholders on SQLite too);
//! [`with_db!`] expands one body per backend so each arm type-checks against its own driver.
//! Large bytes never come here: they go to the blob store and rows keep their path and checksum.

pub mod blob_refs;
pub mod checkpoints;
pub mod events;
pub mod files;
pub mod imported_models;
pub mod job_status;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod org_limits;
pub mod orgs;
pub mod queue;
pub mod workers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// A text column holding a value its Rust type does not know (a row written by a newer Wick, or
/// by hand): decoding the row fails with this instead of guessing.
#[derive(Debug, thiserror::Error)]
#[error("{column} holds {value:?}, which this version does not know")]
pub struct UnknownValue {
    pub column: &'static str,
    pub value: String,
}

/// Decodes the text of `column` into the one of `all` that `name` gives that text.
pub(crate) fn decode_text<T: Copy>(
    column: &'static str,
    value: String,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, UnknownValue> {
    all.iter()
        .copied()
        .find(|&t| name(t) == value)
        .ok_or(UnknownValue { column, value })
}

/// A connection pool to one of the two backends.
#[derive(Clone, Debug)]
pub enum Db {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Pg($pool) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}

/// Failure to open or migrate the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the data folder {0}: {1}")]
    DataDir(String, #[source] std::io::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Db {
    /// Opens Postgres at `database_url`, or `wick.db` inside `data_dir`, and runs migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Db, StoreError> {
        let db = match database_url {
            Some(url) if !url.is_empty() => Db::Pg(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(StoreError::Connect)?,
            ),
            _ => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| StoreError::DataDir(data_dir.display().to_string(), e))?;
                let url = format!("sqlite://{}", data_dir.join("wick.db").display());
                let options = SqliteConnectOptions::from_str(&url)
                    .map_err(StoreError::Connect)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(8)
                        .connect_with(options)
                        .await
                        .map_err(StoreError::Connect)?,
                )
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Pg(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
        }
        Ok(())
    }

    /// `postgres` or `sqlite`, for logs and `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// A trivial round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_db!(self, p => sqlx::query("select 1").execute(p).await.map(|_| ()))
    }
}
