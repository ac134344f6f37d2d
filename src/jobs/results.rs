//! What a finished job leaves behind: the model in the blob store and the models table, the
//! results CSV as a `fine-tune-results` file, and the job marked `succeeded`, as OpenAI fills them.

use serde_json::json;

use super::metrics::{metric_series, series_csv};
use crate::blob::{Blobs, keys};
use crate::ids::{new_id, now};
use crate::spec::{JobSpec, MethodType};
use crate::store::Db;
use crate::store::events::NewEvent;
use crate::store::files::{self, FilePurpose, FileRow, FileStatus};
use crate::store::jobs::JobRow;
use crate::store::{models, queue};
use crate::train::TrainOutcome;

/// The name OpenAI gives a fine-tuned model: `ft:<root base>:<suffix, else the organization's
/// name>:<job id>`, flat however many jobs the model descends from (the root is the first model
/// of the line: a preset or a local model; the lineage is kept on the model object).
pub fn fine_tuned_model_name(job: &JobRow, org_name: &str) -> String {
    format!(
        "ft:{}:{}:{}",
        root_model(&job.model),
        job.suffix.as_deref().unwrap_or(org_name),
        job.id
    )
}

/// The first model of `model`'s line: itself for a preset or a local model; for a trained model
/// (`ft:<root>:...`, a checkpoint's `...:ckpt-step-N` included) its root.
pub fn root_model(model: &str) -> &str {
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(model),
        None => model,
    }
}

/// Stores what a successful run produced and marks the job `succeeded`.
pub async fn publish_results(
    db: &Db,
    blobs: &Blobs,
    job: &JobRow,
    spec: &JobSpec,
    worker_id: &str,
    outcome: &TrainOutcome,
) -> anyhow::Result<()> {
    let org = crate::store::orgs::org_name(db, &job.org_id)
        .await?
        .unwrap_or_default();
    let name = fine_tuned_model_name(job, &org);
    let prefix = keys::model(&job.id);
    if let Some(dir) = &outcome.model_dir {
        // The training checkpoints are in the blob store already, under the job's checkpoints;
        // a QLoRA job's quantised base is its own working copy.
        let skip = ["checkpoints", crate::model::quantized_cache::FILE];
        blobs.put_dir_except(dir, &prefix, &skip).await?;
    }
    let kind = match spec.method.kind {
        MethodType::Pretrain => "pretrained",
        MethodType::Supervised | MethodType::Dpo => "fine-tuned",
    };
    models::insert_model(db, &name, &job.org_id, kind, &job.model, &job.id, &prefix).await?;

    let series = metric_series(db, &job.id).await?;
    let csv = series_csv(&series);
    let file_id = new_id("file");
    let blob_path = keys::file(&job.org_id, &file_id);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(csv.as_bytes()));
    let bytes = csv.len() as i64;
    blobs.put(&blob_path, csv.into_bytes().into()).await?;
    files::insert_file(
        db,
        &FileRow {
            id: file_id.clone(),
            org_id: job.org_id.clone(),
            filename: "step_metrics.csv".into(),
            purpose: FilePurpose::FineTuneResults,
            bytes,
            sha256: sha,
            blob_path,
            status: FileStatus::Processed,
            status_details: None,
            report: None,
            created_at: now(),
            source_file: None,
            clean_options: None,
            clean_report: None,
        },
    )
    .await?;
    queue::insert_event(
        db,
        &job.id,
        &NewEvent::info("message", format!("New fine-tuned model created: {name}"))
            .with_data(json!({"model": name})),
    )
    .await?;
    let done = queue::complete_job(
        db,
        &job.id,
        worker_id,
        &name,
        outcome.trained_tokens as i64,
        &json!([file_id]),
    )
    .await?;
    if !done {
        tracing::warn!(job = %job.id, "the job changed hands before it could be marked succeeded");
    }
    Ok(())
}
