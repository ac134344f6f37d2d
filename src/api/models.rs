//! `/v1/models`: the presets jobs can start from, the models the caller's jobs produced, the
//! models imported into the blob store and the server's local base models (loadable or not, with
//! the reason), in OpenAI's list shape.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::catalog;
use crate::catalog::imported::ImportedModel;
use crate::catalog::local::{LocalModel, LocalStatus};
use crate::error::{ApiError, ApiResult};
use crate::ids::unix;
use crate::state::AppState;
use crate::store::models::{self, ModelRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model).delete(delete_model))
}

/// A trained model, with its line: `root_model` (the preset or local model the line started
/// from) and `lineage`, each model it descends from, root first, with the job that made it.
fn trained_object(m: &ModelRow, org_models: &[ModelRow]) -> Value {
    let mut lineage = Vec::new();
    let mut parent = m.base_model.clone();
    // Each step goes to an older model; the cap only guards against a corrupted table.
    while let Some(p) = parent.take()
        && lineage.len() < 64
    {
        let row = org_models.iter().find(|r| r.id == p);
        lineage.push(json!({"model": p, "job_id": row.and_then(|r| r.job_id.clone())}));
        parent = row.and_then(|r| r.base_model.clone());
    }
    lineage.reverse();
    json!({
        "id": m.id,
        "object": "model",
        "created": unix(m.created_at),
        "owned_by": m.org_id,
        "kind": m.kind,
        "base_model": m.base_model,
        "job_id": m.job_id,
        "root_model": crate::jobs::results::root_model(&m.id),
        "lineage": lineage,
    })
}

fn local_object(m: &LocalModel) -> Value {
    let mut v = json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "local",
        "kind": "local",
    });
    let extra = match &m.status {
        LocalStatus::Loadable(info) => json!({
            "loadable": true,
            "parameters": info.parameters,
            "vocab_size": info.config.vocab_size,
            "context_length": info.config.max_position_embeddings,
            "architecture": info.config.architecture.class_name(),
            "chat_template": info.chat_template,
        }),
        LocalStatus::Unloadable(reason) => json!({"loadable": false, "reason": reason}),
    };
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

async fn list_models(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<Value>> {
    let trained = models::list_models(&state.db, &caller.org_id).await?;
    let mut data: Vec<Value> = trained
        .iter()
        .map(|m| trained_object(m, &trained))
        .collect();
    data.extend(catalog::models().into_iter().map(|m| json!(m)));
    let imported = crate::store::imported_models::list(&state.db).await?;
    let imported: Vec<ImportedModel> = imported
        .into_iter()
        .filter_map(|row| ImportedModel::from_row(row).ok())
        .collect();
    data.extend(imported.iter().map(imported_object));
    // An imported model shadows a local folder of the same name (resolution picks it).
    data.extend(
        state
            .local_models
            .list()
            .await
            .iter()
            .filter(|l| !imported.iter().any(|i| i.row.id == l.id))
            .map(local_object),
    );
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

async fn get_model(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if let Some(m) = catalog::find_model(&id) {
        return Ok(axum::Json(json!(m)));
    }
    if let Some(m) = models::get_model(&state.db, &caller.org_id, &id).await? {
        let trained = models::list_models(&state.db, &caller.org_id).await?;
        return Ok(axum::Json(trained_object(&m, &trained)));
    }
    if let Some(row) = crate::store::imported_models::get(&state.db, &id).await?
        && let Ok(m) = ImportedModel::from_row(row)
    {
        return Ok(axum::Json(imported_object(&m)));
    }
    let m = state
        .local_models
        .get(&id)
        .await
        .ok_or_else(|| ApiError::not_found("model", &id))?;
    Ok(axum::Json(local_object(&m)))
}

/// The JSON of an imported model, as `/v1/models` lists it.
pub fn imported_object(m: &ImportedModel) -> Value {
    json!({
        "id": m.row.id,
        "object": "model",
        "created": m.row.created_at.timestamp(),
        "owned_by": "imported",
        "kind": "imported",
        "loadable": true,
        "parameters": m.info.parameters,
        "vocab_size": m.info.config.vocab_size,
        "context_length": m.info.config.max_position_embeddings,
        "architecture": m.info.config.architecture.class_name(),
        "chat_template": m.info.chat_template,
        "bytes": m.row.bytes,
        "content_hash": m.row.content_hash,
    })
}

/// `DELETE /v1/models/{id}`: one of the caller's trained models, with its files (as OpenAI's
/// delete of a fine-tuned model). Refused with 409 while a job that starts from it has not
/// ended; presets, imported and local models are not the caller's to delete (400). The job that
/// made it keeps its checkpoints.
async fn delete_model(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    // The same lookup jobs and chat make: only the caller's trained models are theirs to delete.
    let m = match catalog::resolve(&state.db, &state.local_models, &caller.org_id, &id).await {
        Ok(catalog::BaseModel::Trained(m)) => m,
        Ok(_) | Err(catalog::ResolveError::Unloadable { .. }) => {
            return Err(ApiError::invalid_param(
                "id",
                format!("{id} is not one of your trained models; only those can be deleted"),
            ));
        }
        Err(catalog::ResolveError::Unknown(_)) => return Err(ApiError::not_found("model", &id)),
        Err(catalog::ResolveError::Store(e)) => return Err(e.into()),
    };
    let using = models::active_jobs_using(&state.db, &caller.org_id, &id).await?;
    if !using.is_empty() {
        return Err(ApiError::Client {
            status: StatusCode::CONFLICT,
            code: "model_in_use",
            message: format!(
                "jobs that start from {id} have not ended: {}; cancel them or wait",
                using.join(", ")
            ),
            param: Some("id".into()),
        });
    }
    crate::retention::delete_model_blobs(&state.blobs, m.blob_path.as_deref().unwrap_or_default())
        .await?;
    models::delete_model(&state.db, &caller.org_id, &id).await?;
    tracing::info!(model = %id, "model deleted");
    Ok(axum::Json(
        json!({"id": id, "object": "model", "deleted": true}),
    ))
}
