//! The start every training job shares, whatever its method: the job's files checked, the output
//! folder made, the hyperparameters resolved, and the starting point loaded (a checkpoint to
//! resume, a preset trained from scratch with a fresh tokenizer, or a Hugging Face folder); then,
//! with the job's RoPE scaling applied to extend the model's context; once the method knows its rows, the plan (schedule, evaluation and checkpoint cadence) and the
//! optimiser with its state restored.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use tokenizers::Tokenizer;

use super::chat_tokens::VOCAB_WEIGHTS;
use super::checkpoint::{self, LoadedWeights, TrainerState};
use super::data::{DataError, JsonlTexts};
use super::hparams::Resolved;
use super::job::{TrainError, TrainJob, spec_error};
use super::optim::AdamW;
use super::schedule::Schedule;
use crate::model::hf;
use crate::model::quantized::{QuantWeight, is_projection_weight};
use crate::model::quantized_cache;
use crate::model::{self, ModelConfig, RopeScaling};
use crate::spec::{RopeScalingSpec, RopeScalingType};
use crate::tokenizer as tok;

/// Where the starting weights and tokenizer come from.
pub(super) struct Start {
    pub(super) cfg: ModelConfig,
    pub(super) weights: HashMap<String, Tensor>,
    pub(super) tokenizer: Tokenizer,
    /// LoRA adapter tensors (PEFT names) of the checkpoint being resumed.
    pub(super) adapter: Option<HashMap<String, Tensor>>,
    pub(super) state: Option<TrainerState>,
    pub(super) optimizer: Option<HashMap<String, Tensor>>,
    /// The job's hyperparameters, every default resolved.
    pub(super) hp: Resolved,
    /// QLoRA: the base's projections, quantised as they were read (they are then not in
    /// `weights`). Empty otherwise.
    pub(super) quantized: HashMap<String, Arc<QuantWeight>>,
}

impl Start {
    /// A start from weights alone: nothing resumed.
    fn fresh(
        cfg: ModelConfig,
        weights: HashMap<String, Tensor>,
        tokenizer: Tokenizer,
        hp: Resolved,
    ) -> Start {
        Start {
            cfg,
            weights,
            tokenizer,
            adapter: None,
            state: None,
            optimizer: None,
            hp,
            quantized: HashMap::new(),
        }
    }
}

/// Checks the job's files, makes its output folder, resolves its hyperparameters and loads its
/// starting point.
pub(super) fn start(job: &TrainJob, dtype: DType, device: &Device) -> Result<Start, TrainError> {
    let files = super::domains::training_files(job);
    for f in files.iter().chain(&super::domains::validation_files(job)) {
        if !f.path.is_file() {
            return Err(TrainError::MissingFile(f.path.clone()));
        }
    }
    std::fs::create_dir_all(&job.output_dir).map_err(|source| TrainError::Io {
        path: job.output_dir.clone(),
        source,
    })?;
    // A preset starts from scratch, which picks the pretraining learning rate; the model's size
    // picks the default learning rate's scale.
    let preset = model::preset(&job.spec.model);
    let parameters = match &preset {
        Some(cfg) => {
            let mut cfg = cfg.clone();
            if let Some(v) = job.spec.hyperparameters().vocab_size {
                cfg.vocab_size = v as usize;
            }
            cfg.num_parameters()
        }
        None => crate::model::hf::read_config(Path::new(&job.spec.model))
            .map(|c| c.num_parameters())
            .unwrap_or(0),
    };
    let mut hp = Resolved::from_spec(&job.spec, preset.is_some(), parameters);
    // bf16 mixed precision is the default on a GPU (f32 on the CPU, where it is slower).
    if job.spec.hyperparameters().precision.is_none() && !device.is_cpu() {
        hp.precision = crate::spec::Precision::Bf16;
    }
    // TF32 f32 products on a GPU (a process-wide switch of candle's: one job per process).
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(
            hp.precision == crate::spec::Precision::Tf32,
        );
    }
    let mut start = load_start(job, hp, dtype, device)?;
    if let Some(rs) = start.hp.rope_scaling.clone() {
        extend_context(&mut start.cfg, &rs)
            .map_err(|m| spec_error(&job.spec, "rope_scaling", m))?;
    }
    Ok(start)
}

/// The job's RoPE scaling applied to the starting model: the model's context becomes the original
/// one, and `max_position_embeddings` that times `factor`. A model that already carries the same
/// scaling (a resumed checkpoint, or a model this job's settings trained before) is left as it
/// is; one with another scaling is refused rather than scaled twice.
fn extend_context(cfg: &mut ModelConfig, rs: &RopeScalingSpec) -> Result<(), String> {
    let original = match &cfg.rope_scaling {
        None => cfg.max_position_embeddings,
        Some(RopeScaling::Yarn {
            original_max_position_embeddings,
            ..
        })
        | Some(RopeScaling::Llama3 {
            original_max_position_embeddings,
            ..
        }) => *original_max_position_embeddings,
        Some(RopeScaling::Linear { factor }) => {
            (cfg.max_position_embeddings as f64 / factor).round() as usize
        }
        Some(other) => return Err(format!("the model already has RoPE scaling {other:?}")),
    };
    let wanted = rope_scaling_for(rs, original);
    if let Some(have) = &cfg.rope_scaling {
        if *have != wanted {
            return Err(format!(
                "the model already has RoPE scaling {have:?}; a job can add scaling only to a \
                 model without one (or repeat the model's own)"
            ));
        }
        return Ok(());
    }
    cfg.rope_scaling = Some(wanted);
    cfg.max_position_embeddings = (original as f64 * rs.factor).round() as usize;
    Ok(())
}

/// The model's RoPE scaling for a job's request over an original context of `original`.
fn rope_scaling_for(rs: &RopeScalingSpec, original: usize) -> RopeScaling {
    match rs.kind {
        RopeScalingType::Linear => RopeScaling::Linear { factor: rs.factor },
        RopeScalingType::Yarn => RopeScaling::Yarn {
            factor: rs.factor,
            original_max_position_embeddings: original,
            beta_fast: rs.beta_fast.unwrap_or(32.0),
            beta_slow: rs.beta_slow.unwrap_or(1.0),
            // transformers' default, `0.1 · ln(factor) + 1`.
            attention_factor: 0.1 * rs.factor.ln() + 1.0,
            truncate: true,
        },
        RopeScalingType::Llama3 => RopeScaling::Llama3 {
            factor: rs.factor,
            low_freq_factor: rs.low_freq_factor.unwrap_or(1.0),
            high_freq_factor: rs.high_freq_factor.unwrap_or(4.0),
            original_max_position_embeddings: original,
        },
    }
}

/// Finds the starting point: a checkpoint, a preset trained from scratch (with a fresh BPE
/// tokenizer), or a Hugging Face folder. Leaves the tokenizer files in the output folder.
/// `hp` is moved into the result.
fn load_start(
    job: &TrainJob,
    hp: Resolved,
    dtype: DType,
    device: &Device,
) -> Result<Start, TrainError> {
    let out = &job.output_dir;
    if let Some(ckpt) = &job.resume_from {
        if !ckpt.is_dir() {
            return Err(TrainError::MissingFile(ckpt.clone()));
        }
        let loaded = checkpoint::load(ckpt, dtype, device)?;
        let tokenizer = tok::load(&ckpt.join("tokenizer.json"))?;
        if ckpt != out {
            tok::copy_files(ckpt, out)?;
        }
        let (cfg, weights, adapter) = match loaded.weights {
            LoadedWeights::Full { config, weights } => (config, weights, None),
            // A LoRA checkpoint keeps only the adapters; the frozen base is the job's model.
            LoadedWeights::Adapter(tensors) => {
                let base = base_folder(job, dtype, device)?;
                (base.cfg, base.weights, Some((tensors, base.quantized)))
            }
        };
        let (adapter, quantized) = adapter.unzip();
        return Ok(Start {
            cfg,
            weights,
            tokenizer,
            adapter,
            state: Some(loaded.state),
            optimizer: Some(loaded.optimizer),
            hp,
            quantized: quantized.unwrap_or_default(),
        });
    }
    if let Some(mut cfg) = model::preset(&job.spec.model) {
        let vocab = hp.vocab_size.unwrap_or(cfg.vocab_size);
        // The tokenizer learns from every training file (each domain's words get tokens).
        let mut texts = Vec::new();
        for f in super::domains::training_files(job) {
            texts.push(JsonlTexts::open(&f.path)?.map_while(Result::ok));
        }
        let tokenizer = tok::train_bpe(texts.into_iter().flatten(), vocab)?;
        cfg.vocab_size = tokenizer.get_vocab_size(true);
        let ids = tok::special_ids(&tokenizer, None, None, None)?;
        cfg.bos_token_id = ids.bos.or(Some(ids.eos));
        cfg.eos_token_id = Some(ids.eos);
        cfg.pad_token_id = Some(ids.pad);
        tok::save_trained(&tokenizer, out, cfg.max_position_embeddings)?;
        let varmap = model::init_varmap(&cfg, hp.seed, dtype, device)?;
        let weights = model::varmap_tensors(&varmap);
        return Ok(Start::fresh(cfg, weights, tokenizer, hp));
    }
    let base = base_folder(job, dtype, device)?;
    let dir = Path::new(&job.spec.model);
    let tokenizer = tok::load(&dir.join("tokenizer.json"))?;
    if dir != out.as_path() {
        tok::copy_files(dir, out)?;
    }
    let mut start = Start::fresh(base.cfg, base.weights, tokenizer, hp);
    start.quantized = base.quantized;
    Ok(start)
}

/// A Hugging Face folder's model as a job loads it.
struct BaseFolder {
    cfg: ModelConfig,
    weights: HashMap<String, Tensor>,
    /// The projections, when the job is QLoRA's (then not in `weights`).
    quantized: HashMap<String, Arc<QuantWeight>>,
}

/// The config and weights of the job's model, a Hugging Face folder. A QLoRA job's projections
/// are quantised one by one as they are read, so its f32 base never exists whole; its embeddings
/// and LM head stay bf16 where the file holds them so.
fn base_folder(job: &TrainJob, dtype: DType, device: &Device) -> Result<BaseFolder, TrainError> {
    let model = &job.spec.model;
    let dir = Path::new(model);
    if !dir.join("config.json").is_file() {
        return Err(TrainError::UnknownModel(model.to_string()));
    }
    let cfg = hf::read_config(dir)?;
    let lora = job.spec.hyperparameters().lora;
    let quant = lora.and_then(|l| Some((l.quantization?, l.double_quant)));
    // A resumed QLoRA job finds its projections' codes beside its work.
    let cache = job.output_dir.join(quantized_cache::FILE);
    let key = match quant {
        Some((kind, dq)) => Some(quantized_cache::key(
            &format!("{kind:?}/double_quant={dq}"),
            &hf::weight_files(dir)?,
        )),
        None => None,
    };
    let cached = key.as_ref().and_then(|k| quantized_cache::load(&cache, k));
    let have_codes = cached.is_some();
    let mut quantized = cached.unwrap_or_default();
    let skip = |name: &str| have_codes && is_projection_weight(name);
    let weights = hf::load_weights_with(dir, &cfg, device, skip, |name, t| match quant {
        Some((kind, double_quant)) => {
            if is_projection_weight(name) {
                let q = QuantWeight::quantize_tensor(&t, kind, double_quant)?;
                quantized.insert(name.to_string(), Arc::new(q));
                Ok(None)
            } else if t.dtype() == DType::BF16 && VOCAB_WEIGHTS.contains(&name) {
                // The embeddings and the LM head stay in the file's bf16 (products widen them
                // block by block, `model::head_loss`).
                Ok(Some(t))
            } else {
                Ok(Some(t.to_dtype(dtype)?))
            }
        }
        None => Ok(Some(t.to_dtype(dtype)?)),
    })?;
    if let Some(key) = key.filter(|_| !have_codes)
        && let Err(e) = quantized_cache::save(&cache, &quantized, &key)
    {
        // Only a resume's shortcut is lost.
        tracing::warn!(error = %e, "could not keep the quantised base beside the job");
    }
    Ok(BaseFolder {
        cfg,
        weights,
        quantized,
    })
}

/// How a run of `total_steps` goes: its learning-rate schedule, and how often it evaluates and
/// checkpoints (a tenth and a quarter of the run unless the job says).
pub(super) struct Plan {
    pub schedule: Schedule,
    pub eval_every: u64,
    pub checkpoint_every: u64,
}

impl Plan {
    pub fn new(hp: &Resolved, total_steps: u64) -> Plan {
        Plan {
            schedule: Schedule {
                peak_lr: hp.learning_rate,
                warmup_steps: hp.warmup_for(total_steps),
                total_steps,
                kind: hp.lr_scheduler,
                min_lr_ratio: hp.min_lr_ratio,
            },
            eval_every: hp.eval_every.unwrap_or((total_steps / 10).max(1)),
            checkpoint_every: hp.checkpoint_every.unwrap_or((total_steps / 4).max(1)),
        }
    }
}

/// The plan for a chat method with `n_items` training rows or pairs; none is an error naming the
/// training file.
pub(super) fn plan_for(hp: &Resolved, n_items: usize, job: &TrainJob) -> Result<Plan, TrainError> {
    let total_steps = hp.total_steps(n_items);
    if total_steps == 0 {
        return Err(TrainError::Data(DataError::Empty {
            path: job.training_file.clone(),
        }));
    }
    Ok(Plan::new(hp, total_steps))
}

/// AdamW over `named` (name, variable, whether weight decay applies) and the trainer state: as
/// the checkpoint being resumed left them (`state`, `moments`), or fresh for a run of
/// `total_steps`.
pub(super) fn optimizer(
    named: Vec<(String, Var, bool)>,
    hp: &Resolved,
    total_steps: u64,
    state: Option<TrainerState>,
    moments: Option<HashMap<String, Tensor>>,
) -> Result<(AdamW, TrainerState), TrainError> {
    let mut opt = AdamW::new(named, hp.adamw)?;
    let state = state.unwrap_or_else(|| TrainerState::new(total_steps, hp.seed));
    if let Some(moments) = moments {
        opt.load_state(moments, state.step)?;
    }
    Ok((opt, state))
}
