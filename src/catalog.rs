//! The models a job may start from and `/v1/models` lists: Wick's from-scratch presets, the
//! models the organization's own jobs produced, and the server's local Hugging Face folders
//! ([`local`]), visible to every organization. Continued pretraining and fine-tuning start from
//! the last two.
//!
//! Ids cannot collide across the three: trained ids start with `ft:` (which no folder name may
//! contain), and a folder named like a preset is unloadable; the preset wins.

pub mod local;

use crate::app::AppState;
use crate::model::config::{PRESETS, preset};

/// A model as `/v1/models` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub object: &'static str,
    /// Unix seconds; presets are as old as the binary, shown as 0.
    pub created: i64,
    pub owned_by: &'static str,
    /// `preset`: an untrained architecture that pretraining starts from scratch.
    pub kind: &'static str,
    pub parameters: u64,
    pub context_length: u64,
}

/// The presets, as `/v1/models` shows them.
pub fn models() -> Vec<ModelInfo> {
    PRESETS
        .iter()
        .filter_map(|name| {
            let cfg = preset(name)?;
            Some(ModelInfo {
                id: name.to_string(),
                object: "model",
                created: 0,
                owned_by: "wick",
                kind: "preset",
                parameters: cfg.num_parameters(),
                context_length: cfg.max_position_embeddings as u64,
            })
        })
        .collect()
}

pub fn find_model(id: &str) -> Option<ModelInfo> {
    models().into_iter().find(|m| m.id == id)
}

pub fn is_known_model(id: &str) -> bool {
    find_model(id).is_some()
}

/// A model a job may name.
#[derive(Debug, Clone)]
pub enum BaseModel {
    /// An untrained architecture: pretraining starts from scratch.
    Preset(ModelInfo),
    /// A model an earlier job of the organization produced, in the blob store.
    Trained(crate::store::models::ModelRow),
    /// A folder of the models folder, loadable or not (callers refuse the unloadable ones with
    /// their reason).
    Local(local::LocalModel),
}

/// Resolves `id` for `org_id`: a preset, one of the organization's trained models, or a folder of
/// this process's models folder.
pub async fn resolve(
    state: &AppState,
    org_id: &str,
    id: &str,
) -> Result<Option<BaseModel>, sqlx::Error> {
    if let Some(m) = find_model(id) {
        return Ok(Some(BaseModel::Preset(m)));
    }
    if let Some(m) = crate::store::models::get_model(&state.db, org_id, id).await? {
        return Ok(Some(BaseModel::Trained(m)));
    }
    Ok(state.local_models.get(id).await.map(BaseModel::Local))
}
