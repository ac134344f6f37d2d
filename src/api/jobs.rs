//! `/v1/fine_tuning/jobs`: OpenAI-compatible job creation, listing, retrieval, cancel and events.
//!
//! A request is checked in full before anything is written: the spec's structure and ranges
//! ([`JobSpec::validate`]), then that the model is known and the files exist in the caller's
//! organization, have the purpose the method needs and passed validation.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sqlx::types::Json;

use super::json::ApiJson;
use super::pagination::{PageQuery, page};
use super::query::ApiQuery;
use crate::auth::Auth;
use crate::catalog;
use crate::datasets::DatasetFormat;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now, unix};
use crate::jobs::transition::move_job;
use crate::spec::{Auto, JobSpec, MethodType};
use crate::state::AppState;
use crate::store::events::{self, EventRow, NewEvent};
use crate::store::files::{self, FilePurpose, FileRow, FileStatus};
use crate::store::job_status::JobStatus;
use crate::store::jobs::{self, JobFile, JobRow, Transition};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fine_tuning/jobs", post(create_job).get(list_jobs))
        .route("/v1/fine_tuning/jobs/{id}", get(get_job))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/fine_tuning/jobs/{id}/pause", post(pause_job))
        .route("/v1/fine_tuning/jobs/{id}/resume", post(resume_job))
        .route("/v1/fine_tuning/jobs/{id}/events", get(list_events))
}

/// The file purpose each method trains on.
fn purpose_for(kind: MethodType) -> FilePurpose {
    match kind {
        MethodType::Supervised | MethodType::Dpo => FilePurpose::FineTune,
        MethodType::Pretrain => FilePurpose::Pretrain,
    }
}

/// Looks up a file named by a job request and checks it can be trained on.
async fn usable_file(
    state: &AppState,
    org_id: &str,
    id: &str,
    param: &str,
    kind: MethodType,
) -> ApiResult<FileRow> {
    let f = files::get_file(&state.db, org_id, id)
        .await?
        .ok_or_else(|| ApiError::invalid_param(param, format!("no file with id {id:?}")))?;
    let want = purpose_for(kind);
    if f.purpose != want {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "file {id} has purpose '{}', but a {} job needs purpose '{}'",
                f.purpose.as_str(),
                kind.as_str(),
                want.as_str()
            ),
        ));
    }
    if f.status == FileStatus::Uploaded {
        return Err(ApiError::invalid_param(
            param,
            format!("file {id} is still being cleaned; start the job once it is processed"),
        ));
    }
    if f.status != FileStatus::Processed {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "file {id} failed validation and cannot be trained on: {}",
                f.status_details
                    .as_deref()
                    .unwrap_or("see its validation report")
            ),
        ));
    }
    // A fine-tune file holds chats (OpenAI's, ShareGPT or Alpaca) or preference pairs (its
    // validation report says which; reports from before preference files existed are chat).
    if want == FilePurpose::FineTune {
        let format = f
            .report
            .as_ref()
            .and_then(|r| r.0.get("format"))
            .and_then(|v| v.as_str())
            .unwrap_or("chat");
        let is_chat = ["chat", "sharegpt", "alpaca"].contains(&format);
        let fits = if kind == MethodType::Dpo {
            format == DatasetFormat::Preference.as_str()
        } else {
            is_chat
        };
        if !fits {
            let needed = if kind == MethodType::Dpo {
                r#"preference lines ({"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]})"#
            } else {
                r#"chat lines ({"messages": [...]}, or ShareGPT or Alpaca lines)"#
            };
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "file {id} holds {format} lines, but a {} job needs {needed}",
                    kind.as_str(),
                ),
            ));
        }
    }
    Ok(f)
}

async fn create_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(spec): ApiJson<JobSpec>,
) -> ApiResult<axum::Json<Value>> {
    spec.validate()
        .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
    check_running_jobs(&state, &caller.org_id).await?;
    let base =
        catalog::resolve(&state.db, &state.local_models, &caller.org_id, &spec.model).await?;
    let kind = spec.method.kind;
    let mut job_files = Vec::new();
    match &spec.training_files {
        None => {
            usable_file(
                &state,
                &caller.org_id,
                &spec.training_file,
                "training_file",
                kind,
            )
            .await?;
            job_files.push(JobFile::new(&spec.training_file, "training", "train", None));
        }
        Some(list) => {
            for (i, f) in list.iter().enumerate() {
                let param = format!("training_files[{i}].file");
                usable_file(&state, &caller.org_id, &f.file, &param, kind).await?;
                job_files.push(JobFile::new(&f.file, "training", f.domain(), f.weight));
            }
        }
    }
    match &spec.validation_files {
        None => {
            if let Some(v) = &spec.validation_file {
                usable_file(&state, &caller.org_id, v, "validation_file", kind).await?;
                job_files.push(JobFile::new(v, "validation", "valid", None));
            }
        }
        Some(list) => {
            for (i, f) in list.iter().enumerate() {
                let param = format!("validation_files[{i}].file");
                usable_file(&state, &caller.org_id, &f.file, &param, kind).await?;
                job_files.push(JobFile::new(&f.file, "validation", f.domain(), None));
            }
        }
    }
    // After the files: a request whose file is wrong hears of that first.
    catalog::check_method_base(&base, kind)
        .map_err(|message| ApiError::invalid_param("model", message))?;
    let seed = spec.seed.unwrap_or_else(|| rand::random::<u32>() as u64) as i64;
    // Every hyperparameter as the trainer will resolve it, for the job page.
    let resolved = {
        let mut cfg = catalog::model_config(&state.blobs, &base).await?;
        let from_scratch = matches!(base, catalog::BaseModel::Preset(_));
        if let (true, Some(v)) = (from_scratch, spec.hyperparameters().vocab_size) {
            cfg.vocab_size = v as usize;
        }
        let mut with_seed = spec.clone();
        with_seed.seed = Some(seed as u64);
        crate::train::hparams::Resolved::from_spec(&with_seed, from_scratch, cfg.num_parameters())
    };
    let row = JobRow {
        id: new_id("ftjob"),
        org_id: caller.org_id.clone(),
        model: spec.model.clone(),
        training_file: spec.training_file_refs()[0].to_string(),
        validation_file: spec.validation_file.clone(),
        suffix: spec.suffix.clone(),
        seed,
        method_type: kind.as_str().to_string(),
        spec: Json(serde_json::to_value(&spec).map_err(anyhow::Error::from)?),
        status: JobStatus::ValidatingFiles,
        error: None,
        fine_tuned_model: None,
        trained_tokens: None,
        estimated_finish: None,
        result_files: Json(json!([])),
        metadata: spec.metadata.clone().map(|m| Json(Value::Object(m))),
        priority: 0,
        attempts: 0,
        max_attempts: 3,
        created_at: now(),
        started_at: None,
        finished_at: None,
        resolved: Some(Json(resolved_object(&spec, &resolved)?)),
        summary: None,
    };
    let created = NewEvent::info("message", format!("Created fine-tuning job: {}", row.id));
    jobs::insert_job(&state.db, &row, &created, &job_files).await?;
    crate::jobs::validation::validate_and_queue(&state.db, &state.hub, &state.queue_wake, &row)
        .await?;
    warn_if_no_worker_has(&state, &row.id, spec.device).await?;
    let row = jobs::get_job(&state.db, &caller.org_id, &row.id)
        .await?
        .unwrap_or(row);
    tracing::info!(job = %row.id, model = %row.model, "job created");
    Ok(axum::Json(job_object(&row)))
}

/// A job that asks for a kind of device no live worker has says so in its events: it waits in the
/// queue until such a worker starts.
async fn warn_if_no_worker_has(
    state: &AppState,
    job_id: &str,
    device: Option<crate::spec::DeviceRequest>,
) -> ApiResult<()> {
    let Some(name) = device.and_then(|d| d.kind()).map(|k| k.as_str()) else {
        return Ok(());
    };
    let live = crate::store::workers::list_live(&state.db).await?;
    let kinds: Vec<&str> = live.iter().map(|w| w.device_kind.as_str()).collect();
    if !kinds.contains(&name) {
        let ev = NewEvent {
            level: "warn",
            ..NewEvent::info(
                "message",
                format!(
                    "No worker with a {} is running now: the job waits in the queue until one claims it",
                    name.to_uppercase()
                ),
            )
        }
        .with_data(json!({"device": name, "workers": kinds.len()}));
        crate::store::queue::insert_event(&state.db, job_id, &ev).await?;
    }
    Ok(())
}

async fn list_jobs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Value>> {
    let limit = q.limit(20, 100)?;
    let rows = jobs::list_jobs(&state.db, &caller.org_id, q.after.as_deref(), limit + 1).await?;
    Ok(axum::Json(page(rows, limit, job_object)))
}

/// Job `id` of organization `org_id`, or a 404 naming it (every job route answers the same).
pub(crate) async fn find_job(state: &AppState, org_id: &str, id: &str) -> ApiResult<JobRow> {
    jobs::get_job(&state.db, org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("fine-tuning job", id))
}

async fn get_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(job_object(
        &find_job(&state, &caller.org_id, &id).await?,
    )))
}

/// Moves a job to `to` on a user's request and tells its watchers and its worker.
async fn change_status(
    state: &AppState,
    org_id: &str,
    id: &str,
    to: JobStatus,
    message: &str,
) -> ApiResult<Value> {
    let event = NewEvent::info("status", message).with_data(json!({"status": to.as_str()}));
    match move_job(
        &state.db,
        &state.hub,
        &state.queue_wake,
        org_id,
        id,
        to,
        &event,
    )
    .await?
    {
        Transition::Moved(row, _) => Ok(job_object(&row)),
        Transition::NotAllowed(from) => Err(ApiError::conflict(
            "invalid_job_state",
            format!(
                "job {id} is {} and cannot become {}",
                from.as_str(),
                to.as_str()
            ),
        )),
        Transition::NotFound => Err(ApiError::not_found("fine-tuning job", id)),
    }
}

async fn cancel_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let job = change_status(
        &state,
        &caller.org_id,
        &id,
        JobStatus::Cancelled,
        "Fine-tuning job cancelled",
    )
    .await?;
    Ok(axum::Json(job))
}

/// A running job writes a checkpoint and stops; `resume` queues it to continue from there.
async fn pause_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let job = change_status(
        &state,
        &caller.org_id,
        &id,
        JobStatus::Paused,
        "Fine-tuning job paused",
    )
    .await?;
    Ok(axum::Json(job))
}

/// 429 `running_jobs_limit` when the organization already has as many jobs validating, queued or
/// running as its `max_running_jobs` allows (checked when a job is created or resumed).
async fn check_running_jobs(state: &AppState, org_id: &str) -> ApiResult<()> {
    let Some(max) = state
        .tenants
        .limits(&state.db, org_id)
        .await?
        .max_running_jobs
    else {
        return Ok(());
    };
    let active = crate::store::org_limits::active_jobs(&state.db, org_id).await?;
    if active < max {
        return Ok(());
    }
    Err(ApiError::Client {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "running_jobs_limit",
        message: format!(
            "your organization has {active} jobs validating, queued or running and may have {max} \
             at once; wait for one to end, or cancel or pause one"
        ),
        param: None,
    })
}

async fn resume_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if find_job(&state, &caller.org_id, &id).await?.status == JobStatus::Paused {
        check_running_jobs(&state, &caller.org_id).await?;
    }
    let job = change_status(
        &state,
        &caller.org_id,
        &id,
        JobStatus::Queued,
        "Fine-tuning job resumed; queued to continue from its last checkpoint",
    )
    .await?;
    Ok(axum::Json(job))
}

async fn list_events(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Value>> {
    let job = find_job(&state, &caller.org_id, &id).await?;
    let limit = q.limit(20, 1000)?;
    let rows = events::list_events(&state.db, &job.id, q.after.as_deref(), limit + 1).await?;
    Ok(axum::Json(page(rows, limit, event_object)))
}

/// OpenAI's event object.
pub fn event_object(e: &EventRow) -> Value {
    json!({
        "object": "fine_tuning.job.event",
        "id": e.id,
        "created_at": unix(e.created_at),
        "level": e.level,
        "message": e.message,
        "data": e.data.as_ref().map(|d| &d.0).unwrap_or(&json!({})),
        "type": if e.kind == "metrics" { "metrics" } else { "message" },
    })
}

/// Every setting the trainer will use, for the job page: the resolved hyperparameters plus the
/// method's own settings with their defaults (LoRA's and QLoRA's, SFT's packing, the preference
/// loss's).
fn resolved_object(spec: &JobSpec, resolved: &crate::train::hparams::Resolved) -> ApiResult<Value> {
    let mut object = serde_json::to_value(resolved).map_err(anyhow::Error::from)?;
    let h = spec.hyperparameters();
    if let Some(lora) = &h.lora {
        object["lora"] = serde_json::to_value(lora).map_err(anyhow::Error::from)?;
    }
    match spec.method.kind {
        MethodType::Supervised => object["packing"] = json!(h.packing.unwrap_or(true)),
        MethodType::Dpo => {
            let loss = crate::train::dpo::preference_loss(&h);
            object["loss_type"] = serde_json::to_value(loss.kind).map_err(anyhow::Error::from)?;
            object["beta"] = json!(loss.beta);
            object["rpo_alpha"] = json!(loss.rpo_alpha);
            if loss.kind == crate::spec::LossType::Simpo {
                object["simpo_gamma"] = json!(loss.simpo_gamma);
            }
        }
        MethodType::Pretrain => {}
    }
    Ok(object)
}

/// OpenAI's job object; our extra hyperparameters live inside `method`, as submitted.
pub fn job_object(j: &JobRow) -> Value {
    let spec: Option<JobSpec> = serde_json::from_value(j.spec.0.clone()).ok();
    let hp = spec
        .as_ref()
        .map(JobSpec::hyperparameters)
        .unwrap_or_default();
    let auto_u = |a: Option<Auto<u32>>| match a {
        Some(Auto::Value(v)) => json!(v),
        _ => json!("auto"),
    };
    let lr_mult = match hp.learning_rate_multiplier {
        Some(Auto::Value(v)) => json!(v),
        _ => json!("auto"),
    };
    let mut method = spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.method).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    // A request that used the legacy top-level hyperparameters still shows them under `method`.
    if let (Some(s), Some(obj)) = (spec.as_ref(), method.as_object_mut()) {
        let kind = s.method.kind.as_str();
        if obj.get(kind).is_none() {
            obj.insert(kind.to_string(), json!({"hyperparameters": hp}));
        }
    }
    let mut object = json!({
        "object": "fine_tuning.job",
        "id": j.id,
        "model": j.model,
        "created_at": unix(j.created_at),
        "finished_at": j.finished_at.map(unix),
        "fine_tuned_model": j.fine_tuned_model,
        "organization_id": j.org_id,
        "result_files": j.result_files.0,
        "status": j.status,
        "validation_file": j.validation_file,
        "training_file": j.training_file,
        "hyperparameters": {
            "n_epochs": auto_u(hp.n_epochs),
            "batch_size": auto_u(hp.batch_size),
            "learning_rate_multiplier": lr_mult,
        },
        "trained_tokens": j.trained_tokens,
        "error": j.error.as_ref().map(|e| &e.0),
        "user_provided_suffix": j.suffix,
        "seed": j.seed,
        "estimated_finish": j.estimated_finish.map(unix),
        "integrations": [],
        "metadata": j.metadata.as_ref().map(|m| &m.0),
        "method": method,
    });
    // What the job page shows beside OpenAI's fields: the hyperparameters as the trainer
    // resolves them, the run in a few figures, how long it ran, the first model of its line.
    object["resolved_hyperparameters"] = j.resolved.as_ref().map_or(Value::Null, |r| r.0.clone());
    object["summary"] = j.summary.as_ref().map_or(json!({}), |s| s.0.clone());
    object["duration_seconds"] = match (j.started_at, j.finished_at) {
        (Some(start), Some(end)) => json!((end - start).num_milliseconds() as f64 / 1000.0),
        (Some(start), None) => {
            json!((crate::ids::now() - start).num_milliseconds() as f64 / 1000.0)
        }
        _ => Value::Null,
    };
    object["root_model"] = json!(crate::jobs::results::root_model(&j.model));
    // A job on several files shows them, with its curriculum, beside OpenAI's fields.
    if let Some(s) = &spec {
        for (key, value) in [
            ("training_files", serde_json::to_value(&s.training_files)),
            (
                "validation_files",
                serde_json::to_value(&s.validation_files),
            ),
            ("curriculum", serde_json::to_value(&s.curriculum)),
            ("device", serde_json::to_value(s.device)),
        ] {
            if let Ok(v) = value
                && !v.is_null()
            {
                object[key] = v;
            }
        }
    }
    object
}
