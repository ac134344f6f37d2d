//! Cleaning files in the background: `POST /v1/files/{id}/clean` writes an `uploaded` row for
//! the new file and hands it here. [`run_clean`] streams the source from the blob store through
//! a [`Cleaner`] on a blocking thread and the cleaned lines back into the blob store, validating
//! and hashing them on the way like an upload, then records the file as `processed` (or `error`)
//! with both reports.
//!
//! While it runs, the server holds a lease on the row, renewed every few seconds; a server that
//! starts finds the `uploaded` files whose lease ran out (their server stopped mid-clean) and
//! cleans them again from the start ([`resume_interrupted`]): an accepted clean is never lost.
//! A failed clean leaves no blob behind.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use tokio::sync::mpsc;

use crate::blob::Blobs;
use crate::datasets::clean::{CleanOptions, CleanReport, Cleaner};
use crate::datasets::{Purpose, ValidationReport, Validator};
use crate::ids::now;
use crate::store::Db;
use crate::store::files::{self, FilePurpose, FileRow, FileStatus};

/// How long a lease lasts without renewal, and how often it is renewed.
const LEASE: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Cleaned bytes are handed to the blob writer in chunks of about this size.
const OUT_CHUNK: usize = 1 << 20;

/// Why a clean failed; its message becomes the file's `status_details`.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("the source file {0} is gone")]
    SourceGone(String),
    #[error("{0}")]
    Options(String),
    #[error("reading or writing the blob store failed: {0}")]
    Blob(String),
    #[error("the cleaning thread stopped: {0}")]
    Thread(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// A lease end that Postgres stores exactly (microseconds), so a renewal can name it.
fn lease_end() -> DateTime<Utc> {
    (now() + chrono::Duration::from_std(LEASE).expect("a short duration")).trunc_subsecs(6)
}

/// The purpose a stored file row has, as the validator knows it.
fn purpose_of(p: FilePurpose) -> Option<Purpose> {
    match p {
        FilePurpose::FineTune => Some(Purpose::FineTune),
        FilePurpose::Pretrain => Some(Purpose::Pretrain),
        FilePurpose::FineTuneResults => None,
    }
}

/// Cleans the `uploaded` file `file` unless another server holds its lease; records the
/// outcome. Errors of the store itself are logged (the row then stays `uploaded`, and the next
/// server start cleans it again).
pub async fn run_clean(db: Db, blobs: Blobs, file: FileRow) {
    let mut lease = lease_end();
    match files::take_clean_lease(&db, &file.id, None, lease).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(file = %file.id, error = %e, "could not take the cleaning lease");
            return;
        }
    }
    let work = clean_to_blob(&db, &blobs, &file);
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            () = tokio::time::sleep(RENEW_EVERY) => {
                let next = lease_end();
                match files::take_clean_lease(&db, &file.id, Some(lease), next).await {
                    Ok(true) => lease = next,
                    Ok(false) => {
                        tracing::warn!(file = %file.id, "lost the cleaning lease; another server cleans it");
                        return;
                    }
                    Err(e) => tracing::warn!(file = %file.id, error = %e, "renewing the cleaning lease failed"),
                }
            }
        }
    };
    let mut row = file.clone();
    match outcome {
        Ok(done) => {
            let ok = done.validation.is_ok();
            row.bytes = done.bytes as i64;
            row.sha256 = done.sha256;
            row.status = if ok {
                FileStatus::Processed
            } else {
                FileStatus::Error
            };
            row.status_details = (!ok).then(|| {
                format!(
                    "the cleaned file has no valid example ({} of {} lines kept)",
                    done.clean.kept, done.clean.lines
                )
            });
            row.report = serde_json::to_value(&done.validation).ok().map(Json);
            row.clean_report = serde_json::to_value(&done.clean).ok().map(Json);
            tracing::info!(file = %row.id, kept = done.clean.kept, lines = done.clean.lines,
                seconds = done.clean.seconds, "file cleaned");
        }
        Err(e) => {
            tracing::warn!(file = %row.id, error = %e, "cleaning failed");
            let _ = blobs.delete(&row.blob_path).await;
            row.status = FileStatus::Error;
            row.status_details = Some(format!("cleaning failed: {e}"));
        }
    }
    if let Err(e) = files::finish_clean(&db, &row).await {
        tracing::error!(file = %row.id, error = %e, "could not record the clean");
    }
}

/// Cleans again every `uploaded` file whose server stopped; called when a server starts.
pub async fn resume_interrupted(db: &Db, blobs: &Blobs) -> Result<usize, sqlx::Error> {
    let rows = files::interrupted_cleans(db).await?;
    let n = rows.len();
    for row in rows {
        tracing::info!(file = %row.id, "resuming an interrupted clean");
        tokio::spawn(run_clean(db.clone(), blobs.clone(), row));
    }
    Ok(n)
}

/// What a finished clean wrote.
struct Cleaned {
    bytes: u64,
    sha256: String,
    validation: ValidationReport,
    clean: CleanReport,
}

/// Streams the source through the cleaner into the file's blob; on any failure nothing stays.
async fn clean_to_blob(db: &Db, blobs: &Blobs, file: &FileRow) -> Result<Cleaned, CleanError> {
    let source_id = file.source_file.clone().unwrap_or_default();
    let source = files::get_file_any_org(db, &source_id)
        .await?
        .ok_or_else(|| CleanError::SourceGone(source_id.clone()))?;
    let purpose = purpose_of(source.purpose)
        .ok_or_else(|| CleanError::Options("result files cannot be cleaned".into()))?;
    let format = source
        .report
        .as_ref()
        .and_then(|r| serde_json::from_value::<ValidationReport>(r.0.clone()).ok())
        .map_or(crate::datasets::DatasetFormat::legacy(purpose), |r| {
            r.format_or_legacy(purpose)
        });
    let opts: CleanOptions = file
        .clean_options
        .as_ref()
        .map(|o| serde_json::from_value(o.0.clone()))
        .transpose()
        .map_err(|e| CleanError::Options(e.to_string()))?
        .unwrap_or_default();
    let cleaner = Cleaner::new(opts, purpose, format, &source.id)
        .map_err(|e| CleanError::Options(e.to_string()))?;

    let mut reader = blobs
        .read_stream(&source.blob_path)
        .await
        .map_err(|e| CleanError::Blob(e.to_string()))?;
    let mut writer = blobs
        .writer(&file.blob_path)
        .await
        .map_err(|e| CleanError::Blob(e.to_string()))?;
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(8);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(8);
    let worker = tokio::task::spawn_blocking(move || {
        let mut sink = Sink::new(purpose, out_tx);
        let mut cleaner = cleaner;
        while let Some(chunk) = in_rx.blocking_recv() {
            cleaner.feed(&chunk, &mut sink)?;
        }
        let clean = cleaner.finish(&mut sink)?;
        let (bytes, sha256, validation) = sink.finish()?;
        Ok::<_, std::io::Error>(Cleaned {
            bytes,
            sha256,
            validation,
            clean,
        })
    });
    let feed = async move {
        while let Some(chunk) = reader.next().await {
            let chunk = chunk.map_err(|e| CleanError::Blob(e.to_string()))?;
            if in_tx.send(chunk).await.is_err() {
                break; // the cleaning thread stopped; its error is reported below
            }
        }
        Ok::<_, CleanError>(())
    };
    let drain = async {
        while let Some(chunk) = out_rx.recv().await {
            writer
                .write(&chunk)
                .await
                .map_err(|e| CleanError::Blob(e.to_string()))?;
        }
        Ok::<_, CleanError>(())
    };
    let (fed, drained) = tokio::join!(feed, drain);
    let cleaned = worker
        .await
        .map_err(|e| CleanError::Thread(e.to_string()))
        .and_then(|r| r.map_err(|e| CleanError::Thread(e.to_string())));
    match (fed, drained, cleaned) {
        (Ok(()), Ok(()), Ok(cleaned)) => {
            writer
                .finish()
                .await
                .map_err(|e| CleanError::Blob(e.to_string()))?;
            Ok(cleaned)
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Where the cleaner writes: bytes are hashed, validated like an upload and handed to the blob
/// writer in chunks.
struct Sink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
    sha: Sha256,
    validator: Validator,
    bytes: u64,
}

impl Sink {
    fn new(purpose: Purpose, tx: mpsc::Sender<Bytes>) -> Self {
        Sink {
            buf: Vec::with_capacity(OUT_CHUNK),
            tx,
            sha: Sha256::new(),
            validator: Validator::new(purpose),
            bytes: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(OUT_CHUNK));
        self.sha.update(&chunk);
        self.validator.feed(&chunk);
        self.bytes += chunk.len() as u64;
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| std::io::Error::other("the blob writer stopped"))
    }

    fn finish(mut self) -> std::io::Result<(u64, String, ValidationReport)> {
        self.send()?;
        Ok((
            self.bytes,
            hex::encode(self.sha.finalize()),
            self.validator.finish(),
        ))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
