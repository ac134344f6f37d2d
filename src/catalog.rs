//! The models a job may start from and `/v1/models` lists: Wick's from-scratch presets, the
//! models the organization's own jobs produced, base models imported into the blob store
//! ([`imported`]) and the server's local Hugging Face folders ([`local`]), the last two visible
//! to every organization. Continued pretraining and fine-tuning start from all but the presets.
//!
//! Ids cannot collide across presets, trained and the rest: trained ids start with `ft:` (which
//! no folder name may contain), and a folder named like a preset is unloadable (an import under
//! such a name is refused); the preset wins. An imported model shadows a local folder of the same
//! name, so that every worker resolves the name to the same bytes.

pub mod imported;
pub mod local;

use imported::ImportedModel;

use local::{LocalInfo, LocalModel, LocalModels, LocalStatus};

use crate::model::config::{PRESETS, preset};
use crate::store::Db;
use crate::store::models::{self, ModelRow};

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
    /// Every weight, tied embeddings counted once, at `vocab_size` (the estimate counts the same
    /// way, at the vocabulary the job will have: a pretraining job's `vocab_size` changes it).
    pub parameters: u64,
    pub vocab_size: usize,
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
                vocab_size: cfg.vocab_size,
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

/// A model a job may name, ready to use.
#[derive(Debug, Clone)]
pub enum BaseModel {
    /// An untrained architecture: pretraining starts from scratch.
    Preset(ModelInfo),
    /// A model an earlier job of the organization produced, in the blob store.
    Trained(ModelRow),
    /// A loadable folder of the models folder, with what its check learned.
    Local { model: LocalModel, info: LocalInfo },
    /// A model imported into the blob store; [`imported::materialise`] gives its folder here.
    Imported(ImportedModel),
}

impl BaseModel {
    /// The folder in the blob store holding the model's files, for the kinds kept there.
    pub fn blob_prefix(&self) -> Option<&str> {
        match self {
            BaseModel::Trained(m) => Some(m.blob_path.as_deref().unwrap_or_default()),
            BaseModel::Imported(m) => Some(&m.row.blob_path),
            BaseModel::Preset(_) | BaseModel::Local { .. } => None,
        }
    }
}

/// Why a model id cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown model {0:?}; GET /v1/models lists the models you can start from")]
    Unknown(String),
    /// A folder of the models folder that its check refused, with the reason.
    #[error("local model {id} cannot be loaded: {reason}")]
    Unloadable { id: String, reason: String },
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The config of `base`: a preset's, a local model's as its check read it, a trained model's
/// `config.json` from the blob store (the weights are not read).
pub async fn model_config(
    blobs: &crate::blob::Blobs,
    base: &BaseModel,
) -> anyhow::Result<crate::model::ModelConfig> {
    match base {
        BaseModel::Preset(m) => crate::model::preset(&m.id)
            .ok_or_else(|| anyhow::anyhow!("preset {} has no config", m.id)),
        BaseModel::Local { info, .. } => Ok(info.config.clone()),
        BaseModel::Imported(m) => Ok(m.info.config.clone()),
        BaseModel::Trained(m) => {
            let path = format!("{}/config.json", m.blob_path.as_deref().unwrap_or_default());
            let bytes = blobs.read_all(&path).await?;
            Ok(crate::model::ModelConfig::from_hf_json(
                &String::from_utf8_lossy(&bytes),
            )?)
        }
    }
}

/// Whether a job of `method` can start from `base`: supervised and preference tuning need a
/// trained model (a preset has random weights, and no tokenizer until a pretraining job trains
/// one); the message says what to pick instead.
pub fn check_method_base(base: &BaseModel, method: crate::spec::MethodType) -> Result<(), String> {
    match (base, method) {
        (
            BaseModel::Preset(m),
            crate::spec::MethodType::Supervised | crate::spec::MethodType::Dpo,
        ) => Err(format!(
            "{} is a preset with random weights and no tokenizer yet: a {} job needs a \
                 trained model. Pretrain it first (method.type \"pretrain\"), or start from a \
                 model of yours or a local model (GET /v1/models lists them)",
            m.id,
            method.as_str()
        )),
        _ => Ok(()),
    }
}

/// Resolves `id` for `org_id`: a preset, one of the organization's trained models, an imported
/// model, or a loadable folder of `local`. Every caller (job creation, the estimate, chat, a worker staging a job)
/// goes through here, so all refuse the same models with the same reasons.
pub async fn resolve(
    db: &Db,
    local: &LocalModels,
    org_id: &str,
    id: &str,
) -> Result<BaseModel, ResolveError> {
    if let Some(m) = find_model(id) {
        return Ok(BaseModel::Preset(m));
    }
    if let Some(m) = models::get_model(db, org_id, id).await? {
        return Ok(BaseModel::Trained(m));
    }
    if let Some(row) = crate::store::imported_models::get(db, id).await? {
        return ImportedModel::from_row(row)
            .map(BaseModel::Imported)
            .map_err(|reason| ResolveError::Unloadable {
                id: id.to_string(),
                reason,
            });
    }
    let model = local
        .get(id)
        .await
        .ok_or_else(|| ResolveError::Unknown(id.to_string()))?;
    match &model.status {
        LocalStatus::Loadable(info) => Ok(BaseModel::Local {
            info: (**info).clone(),
            model,
        }),
        LocalStatus::Unloadable(reason) => Err(ResolveError::Unloadable {
            id: model.id.clone(),
            reason: reason.clone(),
        }),
    }
}
