//! The hyperparameters of a job with every `"auto"` and omitted value resolved to a number.

use crate::spec::{Auto, JobSpec, LrScheduler, MethodType, Precision};

use super::optim::AdamWConfig;

/// Hyperparameters as the loop uses them.
#[derive(Debug, Clone, PartialEq)]
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
}

/// Sequence length when the spec gives none (and the model allows it).
pub const DEFAULT_MAX_SEQ_LEN: usize = 512;

impl Resolved {
    /// Applies the documented defaults. `from_scratch` picks the pretraining learning rate (1e-3)
    /// over the full fine-tuning one (5e-5); LoRA's is 2e-4, and preference tuning's 1e-6 (full)
    /// and 1e-5 (LoRA).
    pub fn from_spec(spec: &JobSpec, from_scratch: bool) -> Self {
        let h = spec.hyperparameters();
        let base_lr = match (spec.method.kind, from_scratch, h.lora.is_some()) {
            (MethodType::Dpo, _, true) => 1e-5,
            (MethodType::Dpo, _, false) => 1e-6,
            (_, _, true) => 2e-4,
            (MethodType::Pretrain, true, _) => 1e-3,
            _ => 5e-5,
        };
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
