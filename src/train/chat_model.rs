//! What every chat method (SFT, preference tuning) shares around its own data and loss: the start
//! (a trained model, never a preset; ChatML registered when the model has no template; the
//! template, special tokens and row length), the model that trains (the full model, or LoRA
//! adapters on the frozen base, resumed from a checkpoint when there is one), and the export
//! (the full model, or the PEFT adapter plus the merged model).

use candle_core::{DType, Tensor, Var};

use super::chat_tokens::{VOCAB_WEIGHTS, grow_vocab, register_chatml};
use super::hparams::DEFAULT_MAX_SEQ_LEN;
use super::job::{TrainError, TrainJob};
use super::start::{self, Start};
use super::trainee::{FullModel, LoraModel, Trainee};
use crate::chat::loss_mask::Overlength;
use crate::chat::template::ChatTemplate;
use crate::model::lora::LoraConfig;
use crate::model::{self, ModelConfig, hf, peft};
use crate::spec::{self, Hyperparameters, LoraSpec, Precision};
use crate::tokenizer::SpecialIds;

/// A chat method's starting point, ready for its data.
pub(super) struct ChatStart {
    pub start: Start,
    /// The model's config after ChatML tokens were added (if they were).
    pub cfg: ModelConfig,
    pub template: ChatTemplate,
    pub specials: SpecialIds,
    /// Tokens per example (the spec's `max_seq_len`, capped by the model's context).
    pub seq_len: usize,
    pub overlength: Overlength,
    /// Whether the embedding and output rows train too (new ChatML tokens need them).
    train_vocab_rows: bool,
}

/// Loads the job's starting point for a chat method named `method` (for the error message).
pub(super) fn chat_start(job: &TrainJob, method: &str) -> Result<ChatStart, TrainError> {
    let spec = &job.spec;
    if model::preset(&spec.model).is_some() {
        return Err(TrainError::Unsupported(format!(
            "{method} needs a trained model folder; {:?} is a preset with random weights \
             (pretrain it first)",
            spec.model
        )));
    }
    let mut start = start::start(job, DType::F32, &job.device)?;
    // ChatML for a model without a template: its tokens, and rows for them (see chat_tokens).
    let added = register_chatml(&mut start.tokenizer, &job.output_dir)?;
    let grown = grow_vocab(
        &mut start.weights,
        &mut start.cfg,
        start.tokenizer.get_vocab_size(true),
    )?;
    let embed_key = peft::peft_key(VOCAB_WEIGHTS[0]);
    let train_vocab_rows = !added.is_empty()
        || grown
        || start
            .adapter
            .as_ref()
            .is_some_and(|a| a.contains_key(&embed_key));
    if !added.is_empty() || grown {
        tracing::info!(
            ?added,
            vocab = start.cfg.vocab_size,
            "registered ChatML tokens"
        );
    }
    let cfg = start.cfg.clone();
    // The start left the model's tokenizer files (chat template included) in output_dir.
    let template = ChatTemplate::from_model_dir(&job.output_dir)
        .map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let specials = crate::tokenizer::special_ids(
        &start.tokenizer,
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )?;
    let seq_len = start
        .hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings))
        .min(cfg.max_position_embeddings);
    // Out-of-memory aborts the process, so refuse a job that cannot fit (LoRA's and QLoRA's
    // memory as the estimate counts it).
    let mut need =
        super::estimate::estimate(&cfg, &start.hp, super::estimate::DataSize::Tokens(0), 1.0)
            .memory;
    if let Some(l) = &spec.hyperparameters().lora {
        let fused = super::estimate::fused_head_tokens(&start.hp, seq_len as u64);
        super::estimate::adapter_memory(&mut need, &cfg, l, fused);
    }
    if let Some(available) = crate::machine::available_memory_bytes()
        && need.total > available
    {
        return Err(TrainError::TooLarge {
            needed_mib: need.total >> 20,
            available_mib: available >> 20,
        });
    }
    let overlength = match spec.hyperparameters().overlength.unwrap_or_default() {
        spec::Overlength::Truncate => Overlength::Truncate,
        spec::Overlength::Drop => Overlength::Drop,
    };
    Ok(ChatStart {
        start,
        cfg,
        template,
        specials,
        seq_len,
        overlength,
        train_vocab_rows,
    })
}

/// The spec's LoRA settings, as the model takes them.
fn lora_config(l: &LoraSpec) -> LoraConfig {
    LoraConfig {
        r: l.r,
        alpha: l.alpha,
        dropout: l.dropout,
        target_modules: l.target_modules.clone(),
        use_rslora: l.use_rslora,
    }
}

/// What a chat job trains.
pub(super) enum Tuned {
    Full(FullModel),
    Lora(LoraModel),
}

impl Tuned {
    /// The full model (every weight a variable) or, with `h.lora`, adapters on the frozen base;
    /// either resumed from the checkpoint the start loaded.
    pub fn new(
        job: &TrainJob,
        cs: &mut ChatStart,
        h: &Hyperparameters,
    ) -> Result<Self, TrainError> {
        let mut tuned = Self::build(job, cs, h)?;
        let hp = &cs.start.hp;
        let net = match &mut tuned {
            Tuned::Full(f) => &mut f.net,
            Tuned::Lora(l) => &mut l.net,
        };
        net.set_gradient_checkpointing(hp.gradient_checkpointing);
        net.set_bf16(hp.precision == Precision::Bf16);
        Ok(tuned)
    }

    fn build(job: &TrainJob, cs: &mut ChatStart, h: &Hyperparameters) -> Result<Self, TrainError> {
        let base_name = job.base_model_name.as_deref().unwrap_or(&job.spec.model);
        let start = &mut cs.start;
        match (&h.lora, &start.adapter, &start.state) {
            (Some(lspec), adapter, state) => {
                if state.is_some() && adapter.is_none() {
                    return Err(TrainError::Unsupported(
                        "the checkpoint holds a full model, but the job trains LoRA adapters"
                            .into(),
                    ));
                }
                let vocab_rows: &[&str] = if cs.train_vocab_rows {
                    &VOCAB_WEIGHTS
                } else {
                    &[]
                };
                // QLoRA's projections were quantised as the base was read (chat methods start
                // from a model folder, never a preset). A quantised projection is built over a
                // placeholder of its shape that holds no memory (a broadcast scalar), then given
                // its codes; so are embeddings and an LM head kept in bf16 (the model's builder
                // would widen them), then set as they are.
                let mut base = start.weights.clone();
                let placeholder = |shape: &[usize]| -> Result<Tensor, TrainError> {
                    Ok(Tensor::zeros((), DType::F32, &job.device)?.broadcast_as(shape)?)
                };
                for (name, q) in &start.quantized {
                    base.insert(name.clone(), placeholder(&[q.shape().0, q.shape().1])?);
                }
                let kept: Vec<(String, Tensor)> = start
                    .weights
                    .iter()
                    .filter(|(_, t)| t.dtype() == DType::BF16)
                    .map(|(n, t)| (n.clone(), t.clone()))
                    .collect();
                for (name, t) in &kept {
                    base.insert(name.clone(), placeholder(t.dims())?);
                }
                let mut lora = LoraModel::new(
                    base,
                    &cs.cfg,
                    &lora_config(lspec),
                    start.hp.seed,
                    cs.seq_len,
                    base_name,
                    vocab_rows,
                    adapter.as_ref(),
                    &job.device,
                )?;
                if !start.quantized.is_empty() {
                    // QLoRA: the projections keep only their codes; export dequantises them.
                    let bytes = lora.net.set_quantized_projections(&start.quantized)?;
                    tracing::info!(mib = bytes >> 20, "base projections stored quantised");
                }
                for (name, t) in kept {
                    lora.net.set_frozen_vocab_weight(&name, t)?;
                }
                Ok(Tuned::Lora(lora))
            }
            (None, Some(_), _) => Err(TrainError::Unsupported(
                "the checkpoint holds LoRA adapters, but the job fine-tunes the full model".into(),
            )),
            // The variables are copies: the starting tensors need not stay alive beside them.
            (None, None, _) => Ok(Tuned::Full(FullModel::new(
                std::mem::take(&mut start.weights),
                &cs.cfg,
                cs.seq_len,
                DType::F32,
                &job.device,
            )?)),
        }
    }

    pub fn trainee(&self) -> &dyn Trainee {
        match self {
            Tuned::Full(f) => f,
            Tuned::Lora(l) => l,
        }
    }

    pub fn is_lora(&self) -> bool {
        matches!(self, Tuned::Lora(_))
    }

    /// The variables for AdamW: name, variable, whether weight decay applies.
    pub fn named_vars(&self, job: &TrainJob) -> Result<Vec<(String, Var, bool)>, TrainError> {
        match self {
            Tuned::Full(f) => f.named_vars(&job.output_dir),
            Tuned::Lora(l) => Ok(l.named_vars()),
        }
    }

    /// Writes the finished model into the job's output folder: the full model, or the PEFT
    /// adapter in `adapter/` plus the merged model.
    pub fn export(&self, job: &TrainJob, cs: &ChatStart) -> Result<(), TrainError> {
        match self {
            Tuned::Lora(l) => {
                peft::save_adapter(
                    &job.output_dir.join("adapter"),
                    &l.adapters,
                    Some(&l.base_model),
                )?;
                // A QLoRA base merges from its dequantised projections, each made as it is
                // written.
                let base = |name: &str| match cs.start.weights.get(name) {
                    Some(t) => Ok(Some(t.clone())),
                    None => l.net.dequantized_projection(name),
                };
                let dtype =
                    |name: &str| cs.start.weights.get(name).map_or(DType::F32, |t| t.dtype());
                peft::save_merged(&job.output_dir, &cs.cfg, &base, &dtype, &l.adapters)?;
                // A finished job resumes no more: its quantised base goes (absent otherwise).
                let _ =
                    std::fs::remove_file(job.output_dir.join(crate::model::quantized_cache::FILE));
            }
            Tuned::Full(f) => hf::save_model_folder(&job.output_dir, &cs.cfg, &f.weights())?,
        }
        Ok(())
    }
}
