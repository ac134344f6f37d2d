//! The training loop, top to bottom like nanoGPT's `train.py`: resolve the job, get a tokenizer
//! and a model, tokenise and pack the data, then step: forward, loss, backward over the
//! accumulation window, clip, AdamW, evaluate, checkpoint. One log line per step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::model::hf::{self, HfError};
use crate::model::{self, Llama, ModelConfig};
use crate::spec::{JobSpec, MethodType, SpecError};
use crate::tokenizer::{self as tok, TokenizerError};

use super::checkpoint::{self, CheckpointError, LoadedWeights, TrainerState};
use super::data::{DataError, JsonlTexts, PackedRows};
use super::hparams::{DEFAULT_MAX_SEQ_LEN, Resolved};
use super::loss::shifted_cross_entropy;
use super::optim::{AdamW, accumulate, clip_grad_norm};
use super::progress::Progress;
use super::schedule::Schedule;
use super::step_loop::{Batch, RowSet, StepLoop};
use super::trainee::FullModel;

/// One job as the trainer runs it: the spec plus everything the caller has resolved.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub spec: JobSpec,
    /// Absolute path of the training file (JSONL, one `{"text": ...}` per line for pretraining).
    pub training_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    /// Where the finished model (a Hugging Face folder) goes; checkpoints go to its `checkpoints/`.
    pub output_dir: PathBuf,
    /// A checkpoint folder to continue from.
    pub resume_from: Option<PathBuf>,
    pub device: Device,
    /// The model's name as the user gave it (`spec.model` may be a local copy's path); written
    /// into LoRA adapters as `base_model_name_or_path`.
    pub base_model_name: Option<String>,
}

impl TrainJob {
    /// Where checkpoints are written.
    pub fn checkpoint_root(&self) -> PathBuf {
        self.output_dir.join("checkpoints")
    }
}

/// Why a run ended before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    Cancelled,
    Paused,
    EarlyStopped,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub steps_completed: u64,
    pub total_steps: u64,
    pub final_train_loss: Option<f64>,
    pub final_valid_loss: Option<f64>,
    pub trained_tokens: u64,
    pub num_parameters: u64,
    pub stopped: Option<Stopped>,
    /// The exported model folder (absent when cancelled or paused).
    pub model_dir: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
}

/// Everything that can end a job with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The spec asks for something impossible; `param` names the field.
    #[error("invalid job: {0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Unsupported(String),
    #[error("file not found: {}", .0.display())]
    MissingFile(PathBuf),
    #[error(
        "unknown model {0:?}: expected a preset ({presets}) or a folder with config.json",
        presets = crate::model::PRESETS.join(", ")
    )]
    UnknownModel(String),
    /// The job would not fit in memory; running it would abort the whole process.
    #[error(
        "the job needs about {needed_mib} MiB but only {available_mib} MiB are available; lower batch_size or max_seq_len, or pick a smaller model"
    )]
    TooLarge { needed_mib: u64, available_mib: u64 },
    #[error("training diverged at step {step}: {reason}; lower the learning rate or raise warmup")]
    Diverged { step: u64, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Peft(#[from] crate::model::peft::PeftError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One micro-batch of an accumulation window, as [`backward_window`] takes it.
pub(super) struct MicroBatch<'a> {
    pub input_ids: &'a Tensor,     // (B, T)
    pub positions: &'a Tensor,     // (B, T)
    pub label_weights: &'a Tensor, // (B, T)
    /// Additive attention mask; `None` is plain causal attention.
    pub mask: Option<&'a Tensor>,
}

/// What one accumulation window produced, ready for the optimiser.
pub(super) struct WindowStep {
    pub grads: candle_core::backprop::GradStore,
    /// Mean loss over the window's counted tokens, before the update.
    pub train_loss: f64,
    /// Correct next-token predictions among the counted tokens.
    pub correct: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Forward and backward over every micro-batch of a window, each loss divided by `norm` (the
/// window's counted tokens) so the summed gradients are those of the window's mean; then the
/// guards (a non-finite or exploding loss or gradient stops the job) and global-norm clipping.
/// Shared by pretraining and SFT, so both normalise and guard alike.
pub(super) fn backward_window(
    net: &Llama,
    batches: &[MicroBatch],
    norm: f64,
    vars: &[Var],
    max_grad_norm: f64,
    explode_at: f64,
    step: u64,
) -> Result<WindowStep, TrainError> {
    let (mut loss_sum, mut correct) = (0.0, 0.0);
    let mut grads = None;
    for b in batches {
        let logits = net.forward(b.input_ids, b.positions, b.mask)?; // (B, T, V)
        let sums = shifted_cross_entropy(&logits, b.input_ids, b.label_weights)?;
        loss_sum += sums.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        correct += sums.correct;
        accumulate(&mut grads, (sums.loss_sum / norm)?.backward()?, vars)?;
    }
    let mut grads = grads.expect("at least one micro-batch");
    let train_loss = loss_sum / norm;
    if !train_loss.is_finite() || train_loss > explode_at {
        return Err(TrainError::Diverged {
            step,
            reason: format!("loss {train_loss} (limit {explode_at:.1}, 3·ln(vocab))"),
        });
    }
    let grad_norm = clip_grad_norm(&mut grads, vars, max_grad_norm)?;
    if !grad_norm.is_finite() {
        return Err(TrainError::Diverged {
            step,
            reason: format!("gradient norm {grad_norm}"),
        });
    }
    Ok(WindowStep {
        grads,
        train_loss,
        correct,
        grad_norm,
    })
}

/// Where the starting weights and tokenizer come from.
pub(super) struct Start {
    pub(super) cfg: ModelConfig,
    pub(super) weights: HashMap<String, Tensor>,
    pub(super) tokenizer: Tokenizer,
    /// LoRA adapter tensors (PEFT names) of the checkpoint being resumed.
    pub(super) adapter: Option<HashMap<String, Tensor>>,
    pub(super) state: Option<TrainerState>,
    pub(super) optimizer: Option<HashMap<String, Tensor>>,
    from_scratch: bool,
}

fn spec_error(spec: &JobSpec, field: &str, message: String) -> TrainError {
    TrainError::Spec(SpecError {
        param: format!("{}.{field}", spec.hyperparameters_path()),
        message,
    })
}

/// Runs one pretraining job to the end (or until `progress` asks it to stop) and writes the model.
pub fn run_job(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    let spec = &job.spec;
    spec.validate()?;
    if spec.method.kind == MethodType::Supervised {
        return super::sft::run_sft_job(job, progress);
    }
    if spec.hyperparameters().lora.is_some() {
        return Err(TrainError::Unsupported(
            "LoRA is only supported for method.type \"supervised\"; omit lora for pretraining"
                .into(),
        ));
    }
    for f in std::iter::once(&job.training_file).chain(job.validation_file.as_ref()) {
        if !f.is_file() {
            return Err(TrainError::MissingFile(f.clone()));
        }
    }
    let device = &job.device;
    let dtype = DType::F32;
    std::fs::create_dir_all(&job.output_dir).map_err(|source| TrainError::Io {
        path: job.output_dir.clone(),
        source,
    })?;

    // --- tokenizer and starting weights ---------------------------------------------------------
    let is_preset = model::preset(&spec.model).is_some();
    let hp0 = Resolved::from_spec(spec, is_preset);
    let start = prepare_start(job, &hp0, dtype, device)?;
    let hp = Resolved::from_spec(spec, start.from_scratch);
    let cfg = start.cfg;
    let specials = tok::special_ids(
        &start.tokenizer,
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )?;
    let seq_len = hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings));
    if seq_len > cfg.max_position_embeddings {
        return Err(spec_error(
            spec,
            "max_seq_len",
            format!(
                "max_seq_len {seq_len} exceeds the model's max_position_embeddings {}",
                cfg.max_position_embeddings
            ),
        ));
    }

    // Out-of-memory aborts the process (it cannot be caught), so refuse jobs that cannot fit.
    let needed = super::estimate::estimate(&cfg, &hp, 0, 1.0).memory.total;
    if let Some(available) = available_memory_bytes()
        && needed > available
    {
        return Err(TrainError::TooLarge {
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        });
    }

    // --- data ----------------------------------------------------------------------------------
    let t_data = Instant::now();
    let stream = super::data::tokenize_file(&job.training_file, &start.tokenizer, specials.eos)?;
    let all_rows = PackedRows::pack(&stream, seq_len, specials.pad);
    let (train_rows, valid_rows) = match &job.validation_file {
        Some(v) => {
            let vs = super::data::tokenize_file(v, &start.tokenizer, specials.eos)?;
            (all_rows, PackedRows::pack(&vs, seq_len, specials.pad))
        }
        None => all_rows.split_validation(hp.validation_split, hp.seed),
    };
    tracing::info!(
        tokens = stream.len(),
        train_rows = train_rows.len(),
        valid_rows = valid_rows.len(),
        seconds = t_data.elapsed().as_secs_f64(),
        "data ready"
    );
    let total_steps = hp.total_steps(train_rows.len());
    if total_steps == 0 {
        return Err(spec_error(
            spec,
            "max_steps",
            "the job would run zero steps: the training file has no full row".into(),
        ));
    }
    let warmup = hp.warmup_for(total_steps);
    let schedule = Schedule {
        peak_lr: hp.learning_rate,
        warmup_steps: warmup,
        total_steps,
        kind: hp.lr_scheduler,
        min_lr_ratio: hp.min_lr_ratio,
    };
    let eval_every = hp.eval_every.unwrap_or((total_steps / 10).max(1));
    let checkpoint_every = hp.checkpoint_every.unwrap_or((total_steps / 4).max(1));

    // --- model and optimiser -------------------------------------------------------------------
    let trainee = FullModel::new(start.weights, &cfg, seq_len, dtype, device)?;
    let named = trainee.named_vars(&job.output_dir)?;
    let vars: Vec<Var> = named.iter().map(|(_, v, _)| v.clone()).collect();
    let mut opt = AdamW::new(named, hp.adamw)?;
    let state = start
        .state
        .unwrap_or_else(|| TrainerState::new(total_steps, hp.seed));
    if let Some(moments) = start.optimizer {
        opt.load_state(moments, state.step)?;
    }
    tracing::info!(
        parameters = cfg.num_parameters(),
        total_steps,
        warmup,
        seq_len,
        batch = hp.batch_size,
        accumulation = hp.gradient_accumulation_steps,
        start_step = state.step,
        "training"
    );

    // --- the loop ------------------------------------------------------------------------------
    let (train_set, valid_set) = (
        PretrainRows(&train_rows, device),
        PretrainRows(&valid_rows, device),
    );
    let mut outcome = StepLoop {
        job,
        hp: &hp,
        trainee: &trainee,
        vars,
        opt,
        state,
        train: &train_set,
        valid: &valid_set,
        schedule,
        eval_every,
        checkpoint_every,
        explode_at: (3.0 * (cfg.vocab_size as f64).ln()).max(10.0),
        num_parameters: cfg.num_parameters(),
    }
    .run(progress)?;
    if matches!(outcome.stopped, Some(Stopped::Cancelled | Stopped::Paused)) {
        return Ok(outcome);
    }

    // --- export --------------------------------------------------------------------------------
    hf::save_model_folder(&job.output_dir, &cfg, &trainee.weights())?;
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}

/// Pretraining rows on a device, as the step loop takes them.
struct PretrainRows<'a>(&'a PackedRows, &'a Device);

impl RowSet for PretrainRows<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<Batch, TrainError> {
        let b = self.0.batch(indices, self.1)?;
        Ok(Batch {
            input_tokens: b.counted_tokens + indices.len(),
            input_ids: b.input_ids,
            positions: b.positions,
            label_weights: b.label_weights,
            mask: None,
            counted_tokens: b.counted_tokens,
        })
    }
}

/// Finds the starting point: a checkpoint, a preset trained from scratch (with a fresh BPE
/// tokenizer), or a Hugging Face folder. Leaves the tokenizer files in the output folder.
pub(super) fn prepare_start(
    job: &TrainJob,
    hp: &Resolved,
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
                let (cfg, weights) = base_folder(&job.spec.model, dtype, device)?;
                (cfg, weights, Some(tensors))
            }
        };
        return Ok(Start {
            cfg,
            weights,
            tokenizer,
            adapter,
            state: Some(loaded.state),
            optimizer: Some(loaded.optimizer),
            from_scratch: model::preset(&job.spec.model).is_some(),
        });
    }
    if let Some(mut cfg) = model::preset(&job.spec.model) {
        let vocab = hp.vocab_size.unwrap_or(cfg.vocab_size);
        let texts = JsonlTexts::open(&job.training_file)?.map_while(Result::ok);
        let tokenizer = tok::train_bpe(texts, vocab)?;
        cfg.vocab_size = tokenizer.get_vocab_size(true);
        let ids = tok::special_ids(&tokenizer, None, None, None)?;
        cfg.bos_token_id = ids.bos.or(Some(ids.eos));
        cfg.eos_token_id = Some(ids.eos);
        cfg.pad_token_id = Some(ids.pad);
        tok::save_trained(&tokenizer, out, cfg.max_position_embeddings)?;
        let varmap = model::init_varmap(&cfg, hp.seed, dtype, device)?;
        let weights = model::varmap_tensors(&varmap);
        return Ok(Start {
            cfg,
            weights,
            tokenizer,
            adapter: None,
            state: None,
            optimizer: None,
            from_scratch: true,
        });
    }
    let (cfg, weights) = base_folder(&job.spec.model, dtype, device)?;
    let dir = Path::new(&job.spec.model);
    let tokenizer = tok::load(&dir.join("tokenizer.json"))?;
    if dir != out.as_path() {
        tok::copy_files(dir, out)?;
    }
    Ok(Start {
        cfg,
        weights,
        tokenizer,
        adapter: None,
        state: None,
        optimizer: None,
        from_scratch: false,
    })
}

/// The config and weights of the Hugging Face folder `model`.
fn base_folder(
    model: &str,
    dtype: DType,
    device: &Device,
) -> Result<(ModelConfig, HashMap<String, Tensor>), TrainError> {
    let dir = Path::new(model);
    if !dir.join("config.json").is_file() {
        return Err(TrainError::UnknownModel(model.to_string()));
    }
    let cfg = hf::read_config(dir)?;
    let weights = hf::load_weights(dir, &cfg, dtype, device)?;
    Ok((cfg, weights))
}

/// `MemAvailable` from /proc/meminfo (Linux); `None` elsewhere.
pub(crate) fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
