//! `/v1/files`: OpenAI-compatible dataset uploads, validated while they stream to the blob store.
//!
//! An upload never sits in memory: each multipart chunk goes to the blob writer and, through a
//! bounded channel, to a blocking thread that hashes and validates it. Over the size limit, or on a
//! broken body, the staged blob is aborted and no row is written. `purpose` may come before or after
//! `file` (the OpenAI SDK sends it first, curl in the order given); when it comes after, the stored
//! blob is validated in a second streamed pass.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use tokio::sync::mpsc;

use super::json::ApiJson;
use super::pagination::{PageQuery, page};
use super::query::ApiQuery;
use crate::auth::Auth;
use crate::blob::{BlobWriter, Blobs};
use crate::datasets::clean::CleanOptions;
use crate::datasets::{DatasetFormat, Purpose, ValidationReport, Validator};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now, unix};
use crate::state::AppState;
use crate::store::files::{self, FilePurpose, FileRow, FileStatus};

/// Routes that take ordinary requests.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/files", get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/files/{id}/clean", post(clean_file))
}

/// The upload route: no request timeout, and a body limit just above the upload limit (the
/// multipart framing adds a little), so the exact limit is enforced on the file's own bytes.
pub fn upload_router(max_upload_bytes: u64) -> Router<AppState> {
    let body_limit =
        usize::try_from(max_upload_bytes.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/files", post(upload_file))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// Purposes a client may upload with.
fn parse_purpose(s: &str) -> Result<Purpose, ApiError> {
    match s {
        "fine-tune" => Ok(Purpose::FineTune),
        "pretrain" => Ok(Purpose::Pretrain),
        other => Err(ApiError::invalid_param(
            "purpose",
            format!(
                "purpose must be 'fine-tune' (chat or preference JSONL) or 'pretrain' ({{\"text\"}} JSONL), got {other:?}"
            ),
        )),
    }
}

/// What the digest thread computes over the stream.
struct StreamDigest {
    sha256: String,
    report: Option<ValidationReport>,
}

/// Hashes, and validates when the purpose is known, on a blocking thread fed chunk by chunk.
fn spawn_digest(
    purpose: Option<Purpose>,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<StreamDigest>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut validator = purpose.map(Validator::new);
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            if let Some(v) = validator.as_mut() {
                v.feed(&chunk);
            }
        }
        StreamDigest {
            sha256: hex::encode(hasher.finalize()),
            report: validator.map(Validator::finish),
        }
    });
    (tx, handle)
}

/// A file's bytes received and stored, not yet recorded.
struct Received {
    filename: String,
    bytes: u64,
    digest: StreamDigest,
}

async fn upload_file(
    State(state): State<AppState>,
    Auth(caller): Auth,
    mut multipart: Multipart,
) -> ApiResult<Response> {
    let _receiving = crate::telemetry::metrics::upload();
    let cap = upload_cap(&state, &caller.org_id).await?;
    let mut pace = Pace::new(&state.settings);
    let id = new_id("file");
    let blob_path = crate::blob::keys::file(&caller.org_id, &id);
    let mut purpose: Option<Purpose> = None;
    let mut received: Option<Received> = None;

    let outcome: ApiResult<()> = async {
        while let Some(field) = pace
            .next(multipart.next_field())
            .await?
            .map_err(multipart_error)?
        {
            match field.name().unwrap_or("") {
                "purpose" => {
                    let text = field.text().await.map_err(multipart_error)?;
                    purpose = Some(parse_purpose(text.trim())?);
                }
                "file" => {
                    if received.is_some() {
                        return Err(ApiError::invalid_param("file", "send exactly one file"));
                    }
                    let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                    received = Some(
                        receive_file(&state.blobs, &blob_path, field, purpose, cap, &mut pace)
                            .await
                            .map(|(bytes, digest)| Received {
                                filename,
                                bytes,
                                digest,
                            })?,
                    );
                }
                // Unknown fields are ignored, as OpenAI does.
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        if received.is_some() {
            let _ = state.blobs.delete(&blob_path).await;
        }
        return Err(e);
    }
    let Some(mut received) = received else {
        return Err(ApiError::invalid_param(
            "file",
            "the multipart body has no 'file' field",
        ));
    };
    let Some(purpose) = purpose else {
        let _ = state.blobs.delete(&blob_path).await;
        return Err(ApiError::invalid_param(
            "purpose",
            "the multipart body has no 'purpose' field",
        ));
    };
    if received.digest.report.is_none() {
        // `purpose` came after `file`: validate the stored bytes in a second streamed pass.
        match validate_blob(&state.blobs, &blob_path, purpose).await {
            Ok(report) => received.digest.report = Some(report),
            Err(e) => {
                let _ = state.blobs.delete(&blob_path).await;
                return Err(e);
            }
        }
    }
    let report = received.digest.report.take().expect("validated above");
    let ok = report.is_ok();
    let row = FileRow {
        id,
        org_id: caller.org_id,
        filename: received.filename,
        purpose: match purpose {
            Purpose::FineTune => FilePurpose::FineTune,
            Purpose::Pretrain => FilePurpose::Pretrain,
        },
        bytes: received.bytes as i64,
        sha256: received.digest.sha256,
        blob_path: blob_path.clone(),
        status: if ok {
            FileStatus::Processed
        } else {
            FileStatus::Error
        },
        status_details: (!ok).then(|| status_details(&report)),
        report: Some(Json(
            serde_json::to_value(&report).map_err(anyhow::Error::from)?,
        )),
        created_at: now(),
        source_file: None,
        clean_options: None,
        clean_report: None,
    };
    if let Err(e) = files::insert_file(&state.db, &row).await {
        let _ = state.blobs.delete(&blob_path).await;
        return Err(e.into());
    }
    tracing::info!(file = %row.id, bytes = row.bytes, status = %row.status, "file uploaded");
    Ok((StatusCode::OK, axum::Json(file_object(&row))).into_response())
}

/// Streams one multipart field into the blob store; returns its size and digest. On any failure
/// the staged blob is aborted, so nothing is left behind.
async fn receive_file(
    blobs: &Blobs,
    blob_path: &str,
    mut field: axum::extract::multipart::Field<'_>,
    purpose: Option<Purpose>,
    cap: UploadCap,
    pace: &mut Pace,
) -> ApiResult<(u64, StreamDigest)> {
    let mut writer = blobs.writer(blob_path).await?;
    let (tx, digest) = spawn_digest(purpose);
    let mut total: u64 = 0;
    let streamed: ApiResult<()> = async {
        while let Some(chunk) = pace.next(field.chunk()).await?.map_err(multipart_error)? {
            total += chunk.len() as u64;
            pace.received(chunk.len() as u64)?;
            if total > cap.bytes {
                return Err(cap.exceeded());
            }
            writer.write(&chunk).await?;
            // The digest thread only stops early if it panicked; the join below reports that.
            let _ = tx.send(chunk).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let digest = digest.await.map_err(|e| ApiError::Internal(e.into()));
    match (streamed, digest) {
        (Ok(()), Ok(digest)) => {
            finish_or_abort(writer).await?;
            Ok((total, digest))
        }
        (Err(e), _) | (Ok(()), Err(e)) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

async fn finish_or_abort(writer: BlobWriter) -> ApiResult<()> {
    writer.finish().await.map_err(ApiError::from)
}

/// Validates a stored blob, streaming it through the validator on a blocking thread.
async fn validate_blob(blobs: &Blobs, path: &str, purpose: Purpose) -> ApiResult<ValidationReport> {
    let mut stream = blobs.read_stream(path).await?;
    let (tx, digest) = spawn_digest(Some(purpose));
    while let Some(chunk) = stream.next().await {
        let _ = tx.send(chunk?).await;
    }
    drop(tx);
    let digest = digest.await.map_err(|e| ApiError::Internal(e.into()))?;
    Ok(digest.report.expect("validator was given a purpose"))
}

/// Keeps an upload moving: a read that waits longer than the idle timeout, or an average below
/// the minimum rate once the upload has run for that long, ends it with a 408, so a client
/// trickling its body cannot hold a connection and an upload slot for ever.
struct Pace {
    idle: std::time::Duration,
    min_rate: u64,
    started: std::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new(settings: &crate::config::Settings) -> Self {
        Pace {
            idle: std::time::Duration::from_secs(settings.upload_idle_timeout_secs.max(1)),
            min_rate: settings.upload_min_bytes_per_sec,
            started: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Awaits `read`, or 408 `upload_stalled` when nothing comes for the idle timeout.
    async fn next<T>(&self, read: impl std::future::Future<Output = T>) -> ApiResult<T> {
        tokio::time::timeout(self.idle, read)
            .await
            .map_err(|_| ApiError::Client {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "upload_stalled",
                message: format!(
                    "the upload sent nothing for {} s; it was cut off and nothing was kept",
                    self.idle.as_secs()
                ),
                param: Some("file".into()),
            })
    }

    /// Counts `n` more bytes; 408 `upload_too_slow` when the average has fallen below the minimum.
    fn received(&mut self, n: u64) -> ApiResult<()> {
        self.bytes += n;
        let elapsed = self.started.elapsed();
        if self.min_rate == 0 || elapsed < self.idle {
            return Ok(());
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64();
        if rate >= self.min_rate as f64 {
            return Ok(());
        }
        Err(ApiError::Client {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "upload_too_slow",
            message: format!(
                "the upload averaged {rate:.0} bytes/s, under the server's minimum of {} bytes/s; \
                 it was cut off and nothing was kept",
                self.min_rate
            ),
            param: Some("file".into()),
        })
    }
}

/// How many bytes one upload may have, and whether the organization's storage quota (rather than
/// the server's upload limit) is what sets it.
#[derive(Debug, Clone, Copy)]
struct UploadCap {
    bytes: u64,
    /// `Some(quota)` when the quota's remainder is the cap.
    quota: Option<u64>,
}

impl UploadCap {
    fn exceeded(self) -> ApiError {
        match self.quota {
            None => ApiError::too_large(self.bytes),
            Some(quota) => storage_quota_error(quota, self.bytes),
        }
    }
}

/// 403 `storage_quota_exceeded`: the files would pass the organization's `max_stored_bytes`.
fn storage_quota_error(quota: u64, left: u64) -> ApiError {
    ApiError::Client {
        status: StatusCode::FORBIDDEN,
        code: "storage_quota_exceeded",
        message: format!(
            "your organization may keep {quota} bytes of files and has {left} bytes left; \
             delete files (DELETE /v1/files/{{id}}) or ask the operator for more"
        ),
        param: Some("file".into()),
    }
}

/// The cap on an upload by `org_id`: the server's limit, or what the organization's storage
/// quota leaves when that is less (refused at once when nothing is left).
async fn upload_cap(state: &AppState, org_id: &str) -> ApiResult<UploadCap> {
    let server = state.settings.max_upload_bytes;
    let Some(quota) = state
        .tenants
        .limits(&state.db, org_id)
        .await?
        .max_stored_bytes
    else {
        return Ok(UploadCap {
            bytes: server,
            quota: None,
        });
    };
    let quota = quota.max(0) as u64;
    let used = crate::store::org_limits::stored_bytes(&state.db, org_id)
        .await?
        .max(0) as u64;
    let left = quota.saturating_sub(used);
    if left == 0 {
        return Err(storage_quota_error(quota, 0));
    }
    Ok(if left < server {
        UploadCap {
            bytes: left,
            quota: Some(quota),
        }
    } else {
        UploadCap {
            bytes: server,
            quota: None,
        }
    })
}

/// A broken or oversize multipart body is the client's doing.
fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::Client {
            status,
            code: "file_too_large",
            message: format!("the request body is too large: {}", e.body_text()),
            param: Some("file".into()),
        };
    }
    ApiError::Client {
        status,
        code: "invalid_multipart",
        message: e.body_text(),
        param: None,
    }
}

/// One line a person can read, naming the first errors.
fn status_details(report: &ValidationReport) -> String {
    let first: Vec<String> = report
        .errors
        .iter()
        .take(3)
        .map(|e| {
            if e.line > 0 {
                format!("line {}: {}", e.line, e.message)
            } else {
                e.message.clone()
            }
        })
        .collect();
    format!(
        "{} invalid line(s) of {}; {}",
        report.invalid_lines,
        report.total_lines,
        first.join("; ")
    )
}

/// The stored report as the API shows it: one stored before reports had a `format` gets the
/// format its purpose meant then (chat for `fine-tune`, text for `pretrain`).
fn report_object(report: &Value, purpose: FilePurpose) -> Value {
    let mut report = report.clone();
    let legacy = match purpose {
        FilePurpose::FineTune => Purpose::FineTune,
        FilePurpose::Pretrain => Purpose::Pretrain,
        FilePurpose::FineTuneResults => return report,
    };
    if let Some(obj) = report.as_object_mut()
        && !obj.contains_key("format")
    {
        obj.insert(
            "format".into(),
            DatasetFormat::legacy(legacy).as_str().into(),
        );
    }
    report
}

/// The OpenAI file object, plus our `sha256` and `validation` report, and for a cleaned file
/// its `source_file` and `cleaning` report (`null` while it is being written).
pub fn file_object(f: &FileRow) -> Value {
    let mut o = json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": unix(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": f.status_details,
        "sha256": f.sha256,
        "validation": f.report.as_ref().map(|r| report_object(&r.0, f.purpose)),
    });
    if let Some(source) = &f.source_file {
        o["source_file"] = json!(source);
        o["cleaning"] = f.clean_report.as_ref().map_or(Value::Null, |r| r.0.clone());
    }
    o
}

/// `POST /v1/files/{id}/clean`: a new file made from this one with the options in the body
/// (`{}`: exact deduplication), answered at once as `uploaded` while it is written in the
/// background (see [`crate::cleaning`]); it becomes `processed` (or `error`) with its
/// `validation` and `cleaning` reports. The source stays as it is.
async fn clean_file(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(opts): ApiJson<CleanOptions>,
) -> ApiResult<axum::Json<Value>> {
    let source = files::get_file(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    let purpose = match source.purpose {
        FilePurpose::FineTune => Purpose::FineTune,
        FilePurpose::Pretrain => Purpose::Pretrain,
        FilePurpose::FineTuneResults => {
            return Err(ApiError::bad_request(
                "invalid_file",
                format!("file {id} is a job's results file, not a dataset"),
                Some("id"),
            ));
        }
    };
    if source.status == FileStatus::Uploaded {
        return Err(ApiError::conflict(
            "file_not_ready",
            format!("file {id} is still being cleaned; clean it once it is processed"),
        ));
    }
    let format = source
        .report
        .as_ref()
        .and_then(|r| serde_json::from_value::<ValidationReport>(r.0.clone()).ok())
        .map_or(DatasetFormat::legacy(purpose), |r| {
            r.format_or_legacy(purpose)
        });
    opts.validate(format)
        .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
    let new = new_id("file");
    let stem = source
        .filename
        .strip_suffix(".jsonl")
        .unwrap_or(&source.filename);
    let row = FileRow {
        id: new.clone(),
        org_id: caller.org_id.clone(),
        filename: format!("{stem}.clean.jsonl"),
        purpose: source.purpose,
        bytes: 0,
        sha256: String::new(),
        blob_path: crate::blob::keys::file(&caller.org_id, &new),
        status: FileStatus::Uploaded,
        status_details: Some(format!("cleaning {id}")),
        report: None,
        created_at: now(),
        source_file: Some(source.id.clone()),
        clean_options: Some(Json(
            serde_json::to_value(&opts).map_err(anyhow::Error::from)?,
        )),
        clean_report: None,
    };
    files::insert_file(&state.db, &row).await?;
    tracing::info!(file = %row.id, source = %source.id, "cleaning started");
    tokio::spawn(crate::cleaning::run_clean(
        state.db.clone(),
        state.blobs.clone(),
        row.clone(),
    ));
    Ok(axum::Json(file_object(&row)))
}

/// `?purpose=&after=&limit=` (not a flattened [`PageQuery`]: flattening makes serde see every
/// value as a string, so `limit=5` would be refused).
#[derive(Debug, Deserialize)]
struct ListQuery {
    purpose: Option<FilePurpose>,
    after: Option<String>,
    limit: Option<i64>,
}

async fn list_files(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<Value>> {
    let cursor = PageQuery {
        after: q.after,
        limit: q.limit,
    };
    let limit = cursor.limit(100, 10_000)?;
    let rows = files::list_files(
        &state.db,
        &caller.org_id,
        q.purpose,
        cursor.after.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(axum::Json(page(rows, limit, file_object)))
}

/// `?model=`: add the file's token counts for that model's tokenizer.
#[derive(Debug, Deserialize)]
struct FileQuery {
    model: Option<String>,
}

async fn get_file(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<axum::Json<Value>> {
    let f = files::get_file(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    let mut object = file_object(&f);
    if let Some(model) = q.model {
        object["tokens"] = token_stats(&state, &caller.org_id, &f, &model).await?;
    }
    Ok(axum::Json(object))
}

/// The file's token counts for `model` (see [`crate::train::token_stats`]): kept once computed,
/// else computed by streaming the file through the model's tokenizer (and chat template).
async fn token_stats(state: &AppState, org_id: &str, f: &FileRow, model: &str) -> ApiResult<Value> {
    if let Some(stats) = files::token_stats(&state.db, &f.id, model).await? {
        return Ok(stats);
    }
    let purpose = match f.purpose {
        FilePurpose::FineTune => Purpose::FineTune,
        FilePurpose::Pretrain => Purpose::Pretrain,
        FilePurpose::FineTuneResults => {
            return Err(ApiError::invalid_param(
                "model",
                format!(
                    "file {} is a job's results file: it has no tokens to count",
                    f.id
                ),
            ));
        }
    };
    if f.status == FileStatus::Uploaded {
        return Err(ApiError::conflict(
            "file_not_ready",
            format!(
                "file {} is still being cleaned; count its tokens once it is processed",
                f.id
            ),
        ));
    }
    let format = f
        .report
        .as_ref()
        .and_then(|r| serde_json::from_value::<ValidationReport>(r.0.clone()).ok())
        .map_or(DatasetFormat::legacy(purpose), |r| {
            r.format_or_legacy(purpose)
        });
    // The model's tokenizer files, in a folder: a local model's own, a trained model's copied
    // from the blob store.
    let scratch = tempfile::tempdir().map_err(anyhow::Error::from)?;
    let dir = match crate::catalog::resolve(&state.db, &state.local_models, org_id, model).await? {
        crate::catalog::BaseModel::Preset(_) => {
            return Err(ApiError::invalid_param(
                "model",
                format!(
                    "{model} is a preset: it has no tokenizer until a pretraining job trains one                      (count with the model that job makes, or a local model)"
                ),
            ));
        }
        crate::catalog::BaseModel::Local { model, .. } => model.path.clone(),
        base @ (crate::catalog::BaseModel::Trained(_) | crate::catalog::BaseModel::Imported(_)) => {
            let prefix = base.blob_prefix().unwrap_or_default();
            for name in std::iter::once("config.json").chain(crate::tokenizer::FILES) {
                let path = format!("{prefix}/{name}");
                if state.blobs.exists(&path).await? {
                    state
                        .blobs
                        .get_file(&path, &scratch.path().join(name))
                        .await?;
                }
            }
            scratch.path().to_path_buf()
        }
    };
    let mut stream = state.blobs.read_stream(&f.blob_path).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let name = model.to_string();
    let counting = tokio::task::spawn_blocking(move || {
        let text = crate::train::token_stats::ModelText::from_folder(&dir)?;
        let mut counter = crate::train::token_stats::TokenCounter::new(&text, &name, format);
        while let Some(chunk) = rx.blocking_recv() {
            counter.feed(&chunk);
        }
        Ok::<_, crate::train::TrainError>(counter.finish())
    });
    while let Some(chunk) = stream.next().await {
        if tx.send(chunk?).await.is_err() {
            break; // the counter stopped early: its error is below
        }
    }
    drop(tx);
    let stats = counting
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| {
            ApiError::invalid_param("model", format!("cannot count tokens with {model}: {e}"))
        })?;
    let value = serde_json::to_value(&stats).map_err(anyhow::Error::from)?;
    files::put_token_stats(&state.db, &f.id, model, &value).await?;
    Ok(value)
}

/// The bytes exactly as uploaded, streamed from the blob store.
async fn file_content(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let f = files::get_file(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    let stream = state.blobs.read_stream(&f.blob_path).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        f.filename.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, f.bytes.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Refused with 409 while a job that has not ended uses the file.
async fn delete_file(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let f = files::get_file(&state.db, &caller.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    if files::file_being_cleaned(&state.db, &f.id).await? {
        return Err(ApiError::conflict(
            "file_in_use",
            format!(
                "file {} is being cleaned into a new file; delete it once that is done",
                f.id
            ),
        ));
    }
    if files::file_in_use(&state.db, &f.id).await? {
        return Err(ApiError::conflict(
            "file_in_use",
            format!(
                "file {} is used by a job that has not ended; cancel the job first",
                f.id
            ),
        ));
    }
    if files::file_referenced(&state.db, &f.id).await? {
        // Ended jobs keep pointing at the id; keep the row, drop the bytes.
        files::mark_file_deleted(&state.db, &caller.org_id, &f.id).await?;
    } else {
        files::delete_file(&state.db, &caller.org_id, &f.id).await?;
    }
    state.blobs.delete(&f.blob_path).await?;
    Ok(axum::Json(
        json!({"id": f.id, "object": "file", "deleted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stored_without_a_format_show_their_purposes() {
        let old = json!({"valid_examples": 3});
        let shown = |purpose| report_object(&old, purpose)["format"].clone();
        assert_eq!(shown(FilePurpose::FineTune), "chat");
        assert_eq!(shown(FilePurpose::Pretrain), "text");
        assert_eq!(shown(FilePurpose::FineTuneResults), Value::Null);
        let new = json!({"format": "preference"});
        assert_eq!(report_object(&new, FilePurpose::FineTune), new);
    }
}
