//! The hyperparameters of a job with every `"auto"` and omitted value resolved to a number.

use crate::spec::{Auto, JobSpec, LrScheduler, MethodType, Precision};

use super::optim::AdamWConfig;

/// Hyperparameters as the loop uses them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Resolved {
    pub seed: u64,
    pub n_epochs: u32,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub lr_scheduler: LrScheduler,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<u64>,
    pub min_lr_ratio: f64,
    pub adamw: AdamWConfig,
    pub max_grad_norm: f64,
    /// `None`: the model's context, capped at [`DEFAULT_MAX_SEQ_LEN`].
    pub max_seq_len: Option<usize>,
    pub max_steps: Option<u64>,
    pub eval_every: Option<u64>,
    pub validation_split: f64,
    pub checkpoint_every: Option<u64>,
    pub n_checkpoints: usize,
    pub early_stopping_patience: Option<u32>,
    pub vocab_size: Option<usize>,
    /// Activation recompute per block ([`crate::model::checkpoint`]).
    pub gradient_checkpointing: bool,
    /// The products' arithmetic (bf16 only where the processor has it, see [`crate::model::bf16_gemm`]).
    pub precision: Precision,
    /// RoPE scaling the job adds to the model (extending its context).
    pub rope_scaling: Option<crate::spec::RopeScalingSpec>,
    /// Sample prompts at each evaluation ([`super::samples`]): the job's own, else this many
    /// validation examples; tokens per answer.
    pub eval_prompts: Vec<String>,
    pub eval_samples: usize,
    pub eval_max_tokens: usize,
}

/// Sequence length when the spec gives none (and the model allows it).
pub const DEFAULT_MAX_SEQ_LEN: usize = 512;

/// The learning rate a job gets when it names none (OpenAI's `learning_rate_multiplier` scales
/// it): by method and by the model's size, since small models need larger steps (a 1M-parameter
/// model barely moves under LoRA at 2e-4; the SFT and DPO demos measured 5e-3 LoRA, 1e-3 full and
/// 2e-3 LoRA-DPO there, docs/benchmarks.md), and large ones smaller (transformers' and TRL's
/// usual 2e-5 full, 2e-4 LoRA, 1e-6 DPO at a few billion parameters).
///
/// | parameters | pretrain from scratch | full (SFT, continued pretraining) | LoRA | DPO full | DPO LoRA |
/// | --- | --- | --- | --- | --- | --- |
/// | < 20M | 1e-3 | 1e-3 | 3e-3 | 1e-4 | 1e-3 |
/// | < 200M | 1e-3 | 2e-4 | 1e-3 | 1e-5 | 1e-4 |
/// | < 2B | 6e-4 | 2e-5 | 2e-4 | 1e-6 | 1e-5 |
/// | larger | 3e-4 | 1e-5 | 1e-4 | 5e-7 | 5e-6 |
pub fn auto_learning_rate(
    method: MethodType,
    from_scratch: bool,
    lora: bool,
    parameters: u64,
) -> f64 {
    let size = match parameters {
        p if p < 20_000_000 => 0,
        p if p < 200_000_000 => 1,
        p if p < 2_000_000_000 => 2,
        _ => 3,
    };
    let table: [f64; 4] = match (method, from_scratch, lora) {
        (MethodType::Dpo, _, true) => [1e-3, 1e-4, 1e-5, 5e-6],
        (MethodType::Dpo, _, false) => [1e-4, 1e-5, 1e-6, 5e-7],
        (_, _, true) => [3e-3, 1e-3, 2e-4, 1e-4],
        (MethodType::Pretrain, true, _) => [1e-3, 1e-3, 6e-4, 3e-4],
        _ => [1e-3, 2e-4, 2e-5, 1e-5],
    };
    table[size]
}

impl Resolved {
    /// Applies the documented defaults, the learning rate by [`auto_learning_rate`] for a model
    /// of `parameters` (`from_scratch`: a preset that pretraining starts from scratch).
    pub fn from_spec(spec: &JobSpec, from_scratch: bool, parameters: u64) -> Self {
        let h = spec.hyperparameters();
        let base_lr =
            auto_learning_rate(spec.method.kind, from_scratch, h.lora.is_some(), parameters);
        let multiplier = h.learning_rate_multiplier.map(|m| m.or(1.0)).unwrap_or(1.0);
        Resolved {
            seed: spec.seed.unwrap_or(42),
            n_epochs: h.n_epochs.unwrap_or(Auto::Auto).or(3),
            batch_size: h.batch_size.unwrap_or(Auto::Auto).or(8) as usize,
            gradient_accumulation_steps: h.gradient_accumulation_steps.unwrap_or(1) as usize,
            learning_rate: h.learning_rate.unwrap_or(base_lr) * multiplier,
            lr_scheduler: h.lr_scheduler.unwrap_or_default(),
            warmup_ratio: h.warmup_ratio.unwrap_or(0.05),
            warmup_steps: h.warmup_steps.map(u64::from),
            min_lr_ratio: h.min_lr_ratio.unwrap_or(0.1),
            adamw: AdamWConfig {
                beta1: h.adam_beta1.unwrap_or(0.9),
                beta2: h.adam_beta2.unwrap_or(0.95),
                eps: h.adam_epsilon.unwrap_or(1e-8),
                weight_decay: h.weight_decay.unwrap_or(0.01),
            },
            max_grad_norm: h.max_grad_norm.unwrap_or(1.0),
            max_seq_len: h.max_seq_len.map(|x| x as usize),
            max_steps: h.max_steps.map(u64::from),
            eval_every: h.eval_every.map(u64::from),
            validation_split: h.validation_split.unwrap_or(0.05),
            checkpoint_every: h.checkpoint_every.map(u64::from),
            n_checkpoints: h.n_checkpoints.unwrap_or(3) as usize,
            early_stopping_patience: h.early_stopping_patience,
            vocab_size: h.vocab_size.map(|v| v as usize),
            gradient_checkpointing: h.gradient_checkpointing.unwrap_or(false),
            precision: h.precision.unwrap_or_default(),
            rope_scaling: h.rope_scaling.clone(),
            eval_prompts: h.eval_prompts.clone().unwrap_or_default(),
            eval_samples: h
                .eval_samples
                .map_or(super::samples::DEFAULT_SAMPLES, |n| n as usize),
            eval_max_tokens: h
                .eval_max_tokens
                .map_or(super::samples::DEFAULT_MAX_TOKENS, |n| n as usize),
        }
    }

    /// Optimiser updates for `n_rows` training rows: `max_steps` when given (as in transformers, it
    /// overrides the epochs, cycling through the data as often as needed), else the epochs' worth.
    pub fn total_steps(&self, n_rows: usize) -> u64 {
        if n_rows == 0 {
            return 0;
        }
        let rows_per_step = (self.batch_size * self.gradient_accumulation_steps) as u64;
        let by_epochs = (n_rows as u64 * self.n_epochs as u64).div_ceil(rows_per_step);
        self.max_steps.unwrap_or(by_epochs)
    }

    /// Warmup length for a run of `total_steps`.
    pub fn warmup_for(&self, total_steps: u64) -> u64 {
        self.warmup_steps
            .unwrap_or((self.warmup_ratio * total_steps as f64).round() as u64)
            .min(total_steps)
    }
}
