//! What a job will cost before it runs: parameters, memory (weights, gradients, AdamW state,
//! activations), FLOPs (6·N·D) and the expected time at this machine's measured matmul speed.
//! The server exposes it as `POST /v1/estimate`; the CLI as `wick estimate`.

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::model::ModelConfig;
use crate::spec::{JobSpec, MethodType};

use super::hparams::{DEFAULT_MAX_SEQ_LEN, Resolved};

/// The time model, fitted to `benches/train_step.rs` on configs A and B (docs/benchmarks.md,
/// "The estimate's time model"): a step's matmul and attention FLOPs run at this fraction of the
/// measured matmul peak ([`machine_peak_gflops`]; at these shapes they reach it) ...
pub const MATMUL_EFFICIENCY: f64 = 1.0;

/// ... and every activation value the step writes costs this many FLOP-equivalents at that same
/// rate (~3 ns at 210 GFLOP/s): the elementwise ops, norms, softmaxes, gradient sums, copies and
/// allocation follow the activations, not the FLOPs, which is why small models reach a smaller
/// share of the peak than large ones (config A spends ~45% of its step there, B ~27%). Refitted
/// from 1,000 when the patched candle-core stopped adding every first gradient to zeros.
pub const FLOPS_PER_ACTIVATION: f64 = 650.0;

/// Bytes per training token the tokenizer produces on English text, for sizing a file before it is
/// tokenised (byte-level BPE with a 4k-32k vocabulary: about 3.5-4.5).
pub const BYTES_PER_TOKEN: f64 = 4.0;

/// Memory of a training run, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// The model's weights: f32 (a QLoRA base's projections in NF4), plus LoRA's adapters.
    pub weights: u64,
    pub gradients: u64,
    /// AdamW first and second moments.
    pub optimizer_state: u64,
    /// Activations kept for backward for one micro-batch (approximate).
    pub activations: u64,
    pub total: u64,
    /// (weights + gradients + optimizer) / parameters: 16 for full fine-tuning (f32 weights,
    /// gradients and two AdamW moments); LoRA's and QLoRA's are far less ([`adapter_memory`]).
    pub bytes_per_parameter: f64,
}

/// The estimate returned by `POST /v1/estimate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Every weight of the model the job trains, tied embeddings counted once, at `vocab_size`.
    pub parameters: u64,
    /// The vocabulary those parameters are counted at (a pretraining job's `vocab_size`, else
    /// the model's).
    pub vocab_size: usize,
    /// Training rows of one epoch (preference pairs count two rows each), and whether they were
    /// counted from the data as the trainer makes them (else estimated from its bytes).
    pub training_rows: u64,
    pub rows_counted: bool,
    /// Parameters taking part in matmuls (the N of 6·N·D).
    pub matmul_parameters: u64,
    pub memory: MemoryEstimate,
    pub tokens_per_step: u64,
    pub total_steps: u64,
    /// D: tokens processed over the whole run.
    pub total_tokens: u64,
    /// 6·N·D.
    pub total_flops: f64,
    /// This machine's f32 matmul throughput, measured once per process.
    pub machine_peak_gflops: f64,
    /// Share of the peak the time model gives matmuls ([`MATMUL_EFFICIENCY`]).
    pub assumed_efficiency: f64,
    /// What the time is computed from: matmul and attention FLOPs (recompute included) plus
    /// [`FLOPS_PER_ACTIVATION`] per activation value written, over the whole run.
    pub work_flops: f64,
    pub expected_seconds: f64,
}

/// What the estimate knows of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSize {
    /// About this many tokens (the files' bytes over [`BYTES_PER_TOKEN`]): rows are tokens over
    /// the sequence length.
    Tokens(u64),
    /// Exactly this many training rows (pairs, for preference tuning), counted as the trainer
    /// makes them ([`super::row_count`]).
    Rows(usize),
}

/// A training step's work per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenWork {
    /// Matmul and attention FLOPs, forward and backward (and the recompute's forward).
    pub flops: f64,
    /// Activation values written.
    pub written: f64,
    /// Activation values kept for backward.
    pub kept: f64,
}

impl TokenWork {
    /// FLOPs plus [`FLOPS_PER_ACTIVATION`] per value written: what [`seconds_for`] times.
    pub fn flop_equivalents(&self) -> f64 {
        self.flops + FLOPS_PER_ACTIVATION * self.written
    }
}

/// The work per training token of rows of `seq` tokens. `recompute`: activation recompute per
/// block (one more forward of every block, only the blocks' inputs kept).
pub fn work_per_token(cfg: &ModelConfig, seq: u64, recompute: bool) -> TokenWork {
    let (h, i, l) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.num_hidden_layers as f64,
    );
    let attn_width = (cfg.num_attention_heads * cfg.head_dim) as f64;
    let n_mm = cfg.num_matmul_parameters() as f64;
    let kv_width = (cfg.num_key_value_heads * cfg.head_dim) as f64;
    let n_blocks = l * (2.0 * h * attn_width + 2.0 * h * kv_width + 3.0 * h * i);
    // Causal attention: each query meets (T + 1) / 2 keys, twice (scores and values), forward;
    // backward recomputes the scores and takes four more products (FlashAttention's scheme).
    let attn_fwd = 2.0 * l * (seq as f64 + 1.0) / 2.0 * attn_width * 2.0;
    // Values written per token: each block's norms, projections, attention output and the MLP's
    // gate, up and product (~12·h + 4·i), the logits and their gradient (2·V).
    let block_values = 12.0 * h + 4.0 * i;
    let head_values = 2.0 * cfg.vocab_size as f64;
    let mut flops = 6.0 * n_mm + 3.5 * attn_fwd;
    let mut written = l * block_values + head_values;
    let kept = if recompute {
        flops += 2.0 * n_blocks + attn_fwd;
        written += l * block_values / 3.0;
        l * h + block_values + head_values
    } else {
        l * block_values + head_values
    };
    TokenWork {
        flops,
        written,
        kept,
    }
}

/// The estimate for a model config and resolved hyperparameters, with the training data's size in
/// tokens and the machine's peak in GFLOP/s.
pub fn estimate(cfg: &ModelConfig, hp: &Resolved, data: DataSize, peak_gflops: f64) -> Estimate {
    let n = cfg.num_parameters();
    let n_mm = cfg.num_matmul_parameters();
    let seq = hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings)) as u64;
    let (rows, rows_counted) = match data {
        DataSize::Tokens(t) => (t.div_ceil(seq.max(1)) as usize, false),
        DataSize::Rows(r) => (r, true),
    };
    let total_steps = hp.total_steps(rows);
    let tokens_per_step = hp.batch_size as u64 * hp.gradient_accumulation_steps as u64 * seq;
    let total_tokens = total_steps * tokens_per_step;
    let total_flops = 6.0 * n_mm as f64 * total_tokens as f64;
    let work = work_per_token(cfg, seq, hp.gradient_checkpointing);
    let micro_tokens = hp.batch_size as u64 * seq;
    let activations = 4 * (micro_tokens as f64 * work.kept) as u64;
    let (weights, gradients, optimizer_state) = (4 * n, 4 * n, 8 * n);
    let memory = MemoryEstimate {
        weights,
        gradients,
        optimizer_state,
        activations,
        total: weights + gradients + optimizer_state + activations,
        bytes_per_parameter: 16.0,
    };
    let work_flops = work.flop_equivalents() * total_tokens as f64;
    let expected_seconds = seconds_for(work_flops, peak_gflops);
    Estimate {
        parameters: n,
        vocab_size: cfg.vocab_size,
        training_rows: rows as u64,
        rows_counted,
        matmul_parameters: n_mm,
        memory,
        tokens_per_step,
        total_steps,
        total_tokens,
        total_flops,
        machine_peak_gflops: peak_gflops,
        assumed_efficiency: MATMUL_EFFICIENCY,
        work_flops,
        expected_seconds,
    }
}

/// Bytes per value of a projection stored as NF4: 4 bits and one f32 absmax per 64 values, or
/// with double quantisation one byte per 64 values and one f32 per 256 blocks.
pub fn nf4_bytes_per_value(double_quant: bool) -> f64 {
    if double_quant {
        0.5 + 1.0 / 64.0 + 4.0 / (64.0 * 256.0)
    } else {
        0.5 + 4.0 / 64.0
    }
}

/// LoRA's memory in place of full fine-tuning's: the base's weights (its projections in NF4 or
/// int8 under QLoRA) with no gradients or optimiser state, the adapters' `r · (in + out)` per
/// targeted projection with both. With `fused_head_tokens` (a micro-batch's tokens, when the
/// frozen head's loss runs fused: f32 products), the logits and their gradient (2·V values per
/// token) are not kept: one block of the fused loss is ([`crate::model::head_loss`]).
pub fn adapter_memory(
    m: &mut MemoryEstimate,
    cfg: &ModelConfig,
    lora: &crate::spec::LoraSpec,
    fused_head_tokens: u64,
) {
    let v = cfg.vocab_size as u64;
    let block = (fused_head_tokens * v).min(crate::model::head_loss::BLOCK_VALUES as u64);
    m.activations = m.activations.saturating_sub(4 * 2 * v * fused_head_tokens) + 4 * block;
    let n = cfg.num_parameters();
    let (h, i, hd) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.head_dim as u64,
    );
    let (q, kv) = (
        cfg.num_attention_heads as u64 * hd,
        cfg.num_key_value_heads as u64 * hd,
    );
    // (in, out) of each projection.
    let shapes = [
        ("q_proj", h, q),
        ("k_proj", h, kv),
        ("v_proj", h, kv),
        ("o_proj", q, h),
        ("gate_proj", h, i),
        ("up_proj", h, i),
        ("down_proj", i, h),
    ];
    let layers = cfg.num_hidden_layers as u64;
    let projections: u64 = shapes.iter().map(|(_, a, b)| a * b).sum::<u64>() * layers;
    let adapters: u64 = shapes
        .iter()
        .filter(|(name, _, _)| lora.target_modules.iter().any(|t| t == name))
        .map(|(_, a, b)| lora.r as u64 * (a + b))
        .sum::<u64>()
        * layers;
    let base = match lora.quantization {
        Some(crate::spec::Quantization::Nf4) => {
            4 * (n - projections)
                + (projections as f64 * nf4_bytes_per_value(lora.double_quant)) as u64
        }
        // One byte per value and an f32 per output row.
        Some(crate::spec::Quantization::Int8) => {
            let rows: u64 = shapes.iter().map(|(_, _, out)| out).sum::<u64>() * layers;
            4 * (n - projections) + projections + 4 * rows
        }
        None => 4 * n,
    };
    m.weights = base + 4 * adapters;
    m.gradients = 4 * adapters;
    m.optimizer_state = 8 * adapters;
    m.total = m.weights + m.gradients + m.optimizer_state + m.activations;
    m.bytes_per_parameter = (m.weights + m.gradients + m.optimizer_state) as f64 / n as f64;
}

/// A micro-batch's tokens where a LoRA job's frozen head runs the fused loss (f32 products), else 0.
pub(super) fn fused_head_tokens(hp: &Resolved, seq: u64) -> u64 {
    if hp.precision == crate::spec::Precision::Bf16 {
        0
    } else {
        hp.batch_size as u64 * seq
    }
}

/// Seconds for `work` FLOP-equivalents at `peak_gflops`.
pub fn seconds_for(work: f64, peak_gflops: f64) -> f64 {
    work / (peak_gflops * 1e9 * MATMUL_EFFICIENCY)
}

/// The estimate for `spec` on a model of config `cfg` (`from_scratch`: a preset, whose vocabulary
/// the job's `vocab_size` may replace), with `dataset_tokens` of training data; `None` assumes
/// one epoch of `max_steps` (one step when it is absent).
pub fn estimate_for_spec(
    spec: &JobSpec,
    mut cfg: ModelConfig,
    from_scratch: bool,
    data: Option<DataSize>,
    peak_gflops: f64,
) -> Estimate {
    if let (true, Some(v)) = (from_scratch, spec.hyperparameters().vocab_size) {
        cfg.vocab_size = v as usize;
    }
    let mut hp = Resolved::from_spec(spec, from_scratch, cfg.num_parameters());
    let seq = hp.max_seq_len.unwrap_or(DEFAULT_MAX_SEQ_LEN) as u64;
    let mut tokens = match data {
        Some(DataSize::Tokens(t)) => t,
        Some(DataSize::Rows(r)) => r as u64 * seq,
        None => {
            hp.max_steps.unwrap_or(1)
                * (hp.batch_size * hp.gradient_accumulation_steps) as u64
                * seq
        }
    };
    if spec.method.kind != MethodType::Dpo {
        let data = match data {
            Some(DataSize::Rows(r)) => DataSize::Rows(r),
            _ => DataSize::Tokens(tokens),
        };
        let mut e = estimate(&cfg, &hp, data, peak_gflops);
        if let Some(l) = &spec.hyperparameters().lora {
            adapter_memory(&mut e.memory, &cfg, l, fused_head_tokens(&hp, seq));
        }
        return e;
    }
    // Preference tuning runs each pair as two rows (the prompt with each output): twice the
    // rows per step and at most twice the tokens (the same steps), plus one forward pass over
    // them for the reference log-probs when the loss has a reference (a third of a step's work).
    hp.batch_size *= 2;
    tokens *= 2;
    let data = match data {
        Some(DataSize::Rows(pairs)) => DataSize::Rows(2 * pairs),
        _ => DataSize::Tokens(tokens),
    };
    let mut e = estimate(&cfg, &hp, data, peak_gflops);
    if let Some(l) = &spec.hyperparameters().lora {
        adapter_memory(&mut e.memory, &cfg, l, fused_head_tokens(&hp, seq));
    }
    if spec
        .hyperparameters()
        .loss_type
        .unwrap_or_default()
        .needs_reference()
    {
        // A forward pass: a third of a step's work, over the doubled tokens, once.
        let reference = 2.0 * e.matmul_parameters as f64 * tokens as f64;
        e.total_flops += reference;
        let per_token = e.work_flops / e.total_tokens.max(1) as f64;
        e.work_flops += per_token / 3.0 * tokens as f64;
        e.expected_seconds = seconds_for(e.work_flops, peak_gflops);
    }
    e
}

/// This machine's f32 matmul throughput in GFLOP/s (best of 25 products of 1024² matrices, ~0.3 s),
/// measured once per process.
pub fn machine_peak_gflops() -> f64 {
    static PEAK: OnceLock<f64> = OnceLock::new();
    *PEAK.get_or_init(|| measure_matmul_gflops(1024, 25).unwrap_or(100.0))
}

/// Best of `reps` timings of an n×n by n×n f32 matmul, in GFLOP/s.
pub fn measure_matmul_gflops(n: usize, reps: usize) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let _ = a.matmul(&b)?; // warm-up
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        let _ = c.dims();
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Hyperparameters, Method, MethodParams, MethodType};

    #[test]
    fn flops_and_memory_follow_the_formulas() {
        let spec = JobSpec {
            model: "wick-llama-1m".into(),
            training_file: "x".into(),
            validation_file: None,
            suffix: None,
            seed: None,
            device: None,
            method: Method {
                kind: MethodType::Pretrain,
                supervised: None,
                dpo: None,
                pretrain: Some(MethodParams {
                    hyperparameters: Hyperparameters {
                        max_steps: Some(100),
                        batch_size: Some(crate::spec::Auto::Value(4)),
                        max_seq_len: Some(128),
                        ..Default::default()
                    },
                }),
            },
            hyperparameters: None,
            integrations: None,
            metadata: None,
            training_files: None,
            validation_files: None,
            curriculum: None,
        };
        let cfg = crate::model::preset("wick-llama-1m").unwrap();
        let hp = Resolved::from_spec(&spec, true, cfg.num_parameters());
        let e = estimate(&cfg, &hp, DataSize::Tokens(1_000_000), 100.0);
        assert_eq!(e.total_steps, 100);
        assert_eq!(e.tokens_per_step, 4 * 128);
        assert_eq!(e.total_tokens, 100 * 512);
        let n = cfg.num_parameters();
        assert_eq!(e.total_flops, 6.0 * n as f64 * 51_200.0);
        assert_eq!(
            e.memory.weights + e.memory.gradients + e.memory.optimizer_state,
            16 * n
        );
        // The time: matmul and attention FLOPs plus the activations' FLOP-equivalents.
        let (h, i, l, v) = (128.0, 384.0, 2.0, 4096.0);
        let attention = 3.5 * 2.0 * l * 129.0 * 128.0;
        let written = l * (12.0 * h + 4.0 * i) + 2.0 * v;
        let work = work_per_token(&cfg, 128, false);
        assert_eq!(work.flops, 6.0 * n as f64 + attention);
        assert_eq!(work.written, written);
        let secs =
            (work.flops + FLOPS_PER_ACTIVATION * written) * 51_200.0 / (100e9 * MATMUL_EFFICIENCY);
        assert!((e.expected_seconds - secs).abs() < 1e-9 * secs);
        assert_eq!(e.memory.activations, 4 * 512 * written as u64);
    }

    #[test]
    fn recompute_costs_a_forward_of_the_blocks_and_keeps_their_inputs() {
        let cfg = crate::model::preset("wick-llama-1m").unwrap();
        let (plain, re) = (
            work_per_token(&cfg, 64, false),
            work_per_token(&cfg, 64, true),
        );
        let (h, i, kv) = (128.0, 384.0, 128.0);
        let blocks = 2.0 * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * i);
        let attention = 2.0 * 2.0 * 65.0 * h;
        assert!((re.flops - plain.flops - 2.0 * blocks - attention).abs() < 1e-6);
        // Both layers' activations kept, against both inputs and one layer's.
        assert_eq!(plain.kept, 2.0 * (12.0 * h + 4.0 * i) + 2.0 * 4096.0);
        assert_eq!(re.kept, 2.0 * h + 12.0 * h + 4.0 * i + 2.0 * 4096.0);
    }

    #[test]
    fn lora_and_qlora_memory_count_the_base_and_the_adapters() {
        // hidden 32, inter 64, 2 layers, 4 heads of 8, 2 kv heads: per layer q 1024, k 512,
        // v 512, o 1024, gate/up/down 2048 each = 9216 projection weights, 18,432 in all.
        let cfg = ModelConfig::llama(64, 32, 64, 2, 4, 2, 64);
        let n = cfg.num_parameters();
        let spec = |q: Option<crate::spec::Quantization>, dq: bool| crate::spec::LoraSpec {
            r: 4,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            quantization: q,
            double_quant: dq,
            ..Default::default()
        };
        // Adapters: r · (in + out) = 4 · (32 + 32) for q, 4 · (32 + 16) for v, per layer.
        let adapters = 2 * (4 * 64 + 4 * 48);
        let activations = 1000;
        let mut m = MemoryEstimate {
            weights: 0,
            gradients: 0,
            optimizer_state: 0,
            activations,
            total: 0,
            bytes_per_parameter: 0.0,
        };
        adapter_memory(&mut m, &cfg, &spec(None, false), 0);
        assert_eq!(m.weights, 4 * n + 4 * adapters);
        assert_eq!(
            (m.gradients, m.optimizer_state),
            (4 * adapters, 8 * adapters)
        );
        assert_eq!(m.total, m.weights + 12 * adapters + activations);
        adapter_memory(
            &mut m,
            &cfg,
            &spec(Some(crate::spec::Quantization::Nf4), false),
            0,
        );
        // 4 bits and an f32 per 64 values: 18,432 · 0.5625 = 10,368 bytes.
        assert_eq!(m.weights, 4 * (n - 18_432) + 10_368 + 4 * adapters);
        adapter_memory(
            &mut m,
            &cfg,
            &spec(Some(crate::spec::Quantization::Nf4), true),
            0,
        );
        // 4 bits, a byte per 64 values, an f32 per 16,384: 9216 + 288 + 4.5 → 9508.
        assert_eq!(m.weights, 4 * (n - 18_432) + 9_508 + 4 * adapters);
        adapter_memory(
            &mut m,
            &cfg,
            &spec(Some(crate::spec::Quantization::Int8), false),
            0,
        );
        // A byte per value and an f32 per output row: per layer the rows are q 32, k 16, v 16,
        // o 32, gate 64, up 64, down 32 = 256, so 18,432 + 4 · 512.
        assert_eq!(m.weights, 4 * (n - 18_432) + 18_432 + 2_048 + 4 * adapters);
        // The fused head loss: 100 tokens no longer keep 2 · 64 logit values each, one block of
        // at most 100 · 64 values is kept instead.
        m.activations = 1_000_000;
        adapter_memory(&mut m, &cfg, &spec(None, false), 100);
        assert_eq!(m.activations, 1_000_000 - 4 * 2 * 64 * 100 + 4 * 64 * 100);
    }

    #[test]
    fn a_preference_job_costs_two_rows_per_pair_and_a_reference_pass() {
        let cfg = crate::model::preset("wick-llama-1m").unwrap();
        let body = |kind: &str, extra: serde_json::Value| -> JobSpec {
            let mut h = serde_json::json!({"batch_size": 4, "max_seq_len": 128});
            h.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(serde_json::json!({"model": "m", "training_file": "f",
                "method": {"type": kind, kind: {"hyperparameters": h}}}))
            .unwrap()
        };
        let est = |spec: &JobSpec| {
            estimate_for_spec(
                spec,
                cfg.clone(),
                false,
                Some(DataSize::Tokens(100_000)),
                100.0,
            )
        };
        let s = est(&body("supervised", serde_json::json!({})));
        let d = est(&body("dpo", serde_json::json!({})));
        let simpo = est(&body("dpo", serde_json::json!({"loss_type": "simpo"})));
        assert_eq!(d.total_steps, s.total_steps);
        assert_eq!(d.tokens_per_step, 2 * s.tokens_per_step);
        assert!(d.memory.activations > s.memory.activations);
        assert!((simpo.total_flops / s.total_flops - 2.0).abs() < 1e-9);
        // The reference pass: one forward (2·N per token) over the doubled tokens, once.
        let reference = 2.0 * d.matmul_parameters as f64 * 200_000.0;
        assert!((d.total_flops - simpo.total_flops - reference).abs() < 1.0);
    }
}
