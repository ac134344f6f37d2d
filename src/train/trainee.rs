//! What a job trains, for the step loop: every weight of the model ([`FullModel`], pretraining
//! and full fine-tuning) or LoRA adapters on a frozen base ([`LoraModel`]), with how each is
//! checkpointed and exported, behind the [`Trainee`] trait the step loop drives.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::checkpoint::Weights;
use super::job::TrainError;
use crate::model::hf::HfError;
use crate::model::lora::{self, LoraAdapters, LoraConfig};
use crate::model::peft;
use crate::model::{self, Llama, ModelConfig};

/// What trains, and how a checkpoint keeps it: the step loop's view of a model.
pub(super) trait Trainee {
    fn net(&self) -> &Llama;
    /// Training mode (dropout on, masks for `step`) or evaluation mode.
    fn set_mode(&self, _training: bool, _step: u64) {}
    fn checkpoint_weights(&self) -> Result<Weights<'_>, TrainError>;
}

/// Every weight is a trainable variable.
pub(super) struct FullModel {
    pub net: Llama,
    pub varmap: VarMap,
    pub cfg: ModelConfig,
}

impl FullModel {
    /// The model from `weights`, RoPE tables covering `seq_len` positions.
    pub fn new(
        weights: HashMap<String, Tensor>,
        cfg: &ModelConfig,
        seq_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let varmap = model::varmap_from_tensors(weights, dtype)?;
        let net = Llama::load_with_context(
            VarBuilder::from_varmap(&varmap, dtype, device),
            cfg,
            seq_len,
        )?;
        Ok(FullModel {
            net,
            varmap,
            cfg: cfg.clone(),
        })
    }

    /// The variables for AdamW: name, variable, whether weight decay applies.
    pub fn named_vars(&self, out: &Path) -> Result<Vec<(String, Var, bool)>, TrainError> {
        let named = model::named_vars(&self.cfg, &self.varmap).map_err(|name| {
            TrainError::Model(HfError::Weights {
                path: out.to_path_buf(),
                message: format!("no variable {name}"),
            })
        })?;
        Ok(named
            .into_iter()
            .map(|(n, v, k)| (n, v, k.decays()))
            .collect())
    }

    /// The current weights under their Hugging Face names.
    pub fn weights(&self) -> HashMap<String, Tensor> {
        model::varmap_tensors(&self.varmap)
    }
}

impl Trainee for FullModel {
    fn net(&self) -> &Llama {
        &self.net
    }

    fn checkpoint_weights(&self) -> Result<Weights<'_>, TrainError> {
        Ok(Weights::Full {
            cfg: &self.cfg,
            weights: self.weights(),
        })
    }
}

/// A frozen base (plain tensors) with trainable LoRA adapters.
pub(super) struct LoraModel {
    pub net: Llama,
    pub adapters: LoraAdapters,
    /// What the adapter's `base_model_name_or_path` says.
    pub base_model: String,
}

impl LoraModel {
    /// Attaches fresh adapters (PEFT's initialisation, seeded) to the base, makes the base
    /// weights `train_whole` trainable (PEFT's `modules_to_save`), then sets all of them from
    /// `resume` (a checkpoint's adapter tensors) when given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut base: HashMap<String, Tensor>,
        cfg: &ModelConfig,
        spec: &LoraConfig,
        seed: u64,
        seq_len: usize,
        base_model: &str,
        train_whole: &[&str],
        resume: Option<&HashMap<String, Tensor>>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let whole = lora::trainable_copies(&mut base, train_whole)?;
        let (net, mut adapters) =
            lora::load_lora_llama(base, cfg, spec, seed, seq_len, DType::F32, device)?;
        adapters.modules_to_save = whole;
        if let Some(tensors) = resume {
            peft::load_adapter_tensors(&adapters, tensors)?;
        }
        Ok(LoraModel {
            net,
            adapters,
            base_model: base_model.to_string(),
        })
    }

    /// The adapter variables for AdamW (no weight decay exemptions: LoRA matrices all decay).
    pub fn named_vars(&self) -> Vec<(String, Var, bool)> {
        self.adapters
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v, true))
            .collect()
    }
}

impl Trainee for LoraModel {
    fn net(&self) -> &Llama {
        &self.net
    }

    fn set_mode(&self, training: bool, step: u64) {
        self.adapters.set_training(training);
        if training {
            self.adapters.start_step(step);
        }
    }

    fn checkpoint_weights(&self) -> Result<Weights<'_>, TrainError> {
        Ok(Weights::Adapter {
            adapters: &self.adapters,
            base_model: &self.base_model,
        })
    }
}
