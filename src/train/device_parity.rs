//! Device parity and speed checks: the same tiny Llama, initialised once on the CPU, trained on the
//! CPU (the reference: Wick's fused CPU ops, matched to PyTorch) and on another device, with the
//! loss, every parameter's gradient and AdamW's steps compared; bf16 against f32 on one device;
//! and the training step's throughput. `examples/gpu_check.rs` and the GPU-gated tests
//! (`WICK_TEST_CUDA=1`, `tests/device_parity.rs`) run these on a GPU; on the CPU the candidate is
//! candle's composite ops, so the harness itself is tested without one.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Serialize;

use crate::model::llama::{Llama, sequential_positions};
use crate::model::{ModelConfig, init_varmap, named_vars};
use crate::train::loss::shifted_cross_entropy;
use crate::train::optim::{AdamW, AdamWConfig, clip_factor, global_grad_norm};

/// A two-layer Llama with grouped-query attention and untied embeddings (every kind of weight).
pub fn tiny_config() -> ModelConfig {
    let mut c = ModelConfig::llama(512, 64, 172, 2, 4, 2, 256);
    c.tie_word_embeddings = false;
    c
}

/// The ~125M Llama of issue 11's benchmark (hidden 768, 12 layers, 12 heads, SwiGLU 2048, vocab
/// 32k), as `bench/reference/bench_llama_gpu.py --config 125m` builds it in PyTorch.
pub fn llama_125m() -> ModelConfig {
    let mut c = ModelConfig::llama(32000, 768, 2048, 12, 12, 12, 1024);
    c.tie_word_embeddings = false;
    c
}

/// A model and its optimiser on one device, with weights copied from a CPU initialisation.
pub struct Trainable {
    pub model: Llama,
    pub vars: Vec<(String, Var)>,
    opt: AdamW,
    device: Device,
}

impl Trainable {
    /// The model of `cfg` initialised with `seed` on the CPU, then copied to `device` (so every
    /// device starts from the very same weights).
    pub fn new(cfg: &ModelConfig, seed: u64, seq: usize, device: &Device) -> Result<Self> {
        let cpu = init_varmap(cfg, seed, DType::F32, &Device::Cpu)?;
        let varmap = if device.is_cpu() {
            cpu
        } else {
            let on_device = init_varmap(cfg, seed, DType::F32, device)?;
            let from = named_vars(cfg, &cpu).map_err(candle_core::Error::msg)?;
            let to = named_vars(cfg, &on_device).map_err(candle_core::Error::msg)?;
            for ((_, src, _), (_, dst, _)) in from.iter().zip(&to) {
                dst.set(&src.as_tensor().to_device(device)?)?;
            }
            on_device
        };
        let model = Llama::load_with_context(
            VarBuilder::from_varmap(&varmap, DType::F32, device),
            cfg,
            seq,
        )?;
        let named = named_vars(cfg, &varmap).map_err(candle_core::Error::msg)?;
        let vars = named
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        let opt = AdamW::new(
            named
                .into_iter()
                .map(|(n, v, k)| (n, v, k.decays()))
                .collect(),
            AdamWConfig::default(),
        )?;
        Ok(Trainable {
            model,
            vars,
            opt,
            device: device.clone(),
        })
    }

    /// The mean cross-entropy of `ids` (B, T) as next-token targets, and its gradients.
    pub fn loss_and_grads(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<(f64, candle_core::backprop::GradStore)> {
        let input = Tensor::from_slice(ids, (batch, seq), &self.device)?;
        let pos = sequential_positions(batch, seq, &self.device)?;
        let w = Tensor::ones((batch, seq), DType::F32, &self.device)?;
        let logits = self.model.forward(&input, &pos, None)?;
        let s = shifted_cross_entropy(&logits, &input, &w)?;
        let loss = (s.loss_sum / s.tokens)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok((value, self.model.backward(&loss)?))
    }

    /// `steps` steps on the synthetic batches `0..steps` ([`batch_ids`]); the loss of each.
    pub fn train(
        &mut self,
        cfg: &ModelConfig,
        steps: usize,
        (batch, seq): (usize, usize),
        lr: f64,
    ) -> Result<Vec<f64>> {
        (0..steps)
            .map(|s| self.step(&batch_ids(cfg, batch, seq, s), batch, seq, lr))
            .collect()
    }

    /// One training step (clip 1.0, AdamW at `lr`); returns the loss before the update.
    pub fn step(&mut self, ids: &[u32], batch: usize, seq: usize, lr: f64) -> Result<f64> {
        let (loss, grads) = self.loss_and_grads(ids, batch, seq)?;
        let vars: Vec<Var> = self.vars.iter().map(|(_, v)| v.clone()).collect();
        let norm = global_grad_norm(&grads, &vars)?;
        self.opt.step_scaled(&grads, lr, clip_factor(norm, 1.0))?;
        Ok(loss)
    }
}

/// Batch `step` of a learnable synthetic corpus: each row counts up by a stride of its own, so the
/// loss falls quickly and two runs that drift apart show it.
pub fn batch_ids(cfg: &ModelConfig, batch: usize, seq: usize, step: usize) -> Vec<u32> {
    let v = cfg.vocab_size.min(256);
    (0..batch * seq)
        .map(|i| {
            let (row, t) = (i / seq, i % seq);
            let stride = 1 + (row + step) % 7;
            ((row * 31 + step * 17 + t * stride) % v) as u32
        })
        .collect()
}

/// Largest |a − b| over largest |b|: one number per parameter, scale-free.
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (
        a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?,
        b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?,
    );
    let scale = b.abs()?.max_all()?.to_scalar::<f64>()?;
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(if scale == 0.0 { diff } else { diff / scale })
}

/// Loss and gradients of one batch on the CPU and on `device`.
#[derive(Debug, Clone, Serialize)]
pub struct GradientParity {
    pub device: String,
    pub loss_cpu: f64,
    pub loss_device: f64,
    pub loss_relative_error: f64,
    /// The largest per-parameter relative error, and its parameter.
    pub max_grad_relative_error: f64,
    pub worst_parameter: String,
    pub parameters: usize,
    /// Parameters whose gradient is all zeros on `device` (there should be none).
    pub zero_gradients: Vec<String>,
}

/// `reference` runs on the CPU first (with whatever ops are selected when it runs), then
/// `candidate` on `device`: the caller chooses the ops of each through `between`, which runs in
/// between (on the CPU dry run it switches the fused ops off).
pub fn gradient_parity(
    cfg: &ModelConfig,
    device: &Device,
    between: impl FnOnce(),
) -> Result<GradientParity> {
    let (batch, seq) = (2, 64);
    let ids = batch_ids(cfg, batch, seq, 0);
    let reference = Trainable::new(cfg, 7, seq, &Device::Cpu)?;
    let (loss_cpu, g_cpu) = reference.loss_and_grads(&ids, batch, seq)?;
    between();
    let candidate = Trainable::new(cfg, 7, seq, device)?;
    let (loss_device, g_dev) = candidate.loss_and_grads(&ids, batch, seq)?;
    let mut worst = (0.0f64, String::new());
    let mut zero = Vec::new();
    for ((name, v_cpu), (_, v_dev)) in reference.vars.iter().zip(&candidate.vars) {
        let (Some(a), Some(b)) = (g_dev.get(v_dev.as_tensor()), g_cpu.get(v_cpu.as_tensor()))
        else {
            zero.push(name.clone());
            continue;
        };
        if a.abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            == 0.0
        {
            zero.push(name.clone());
        }
        let e = relative_error(a, b)?;
        if e >= worst.0 {
            worst = (e, name.clone());
        }
    }
    Ok(GradientParity {
        device: format!("{device:?}"),
        loss_cpu,
        loss_device,
        loss_relative_error: ((loss_device - loss_cpu) / loss_cpu).abs(),
        max_grad_relative_error: worst.0,
        worst_parameter: worst.1,
        parameters: reference.vars.len(),
        zero_gradients: zero,
    })
}

/// Two runs of `steps` AdamW steps, CPU and `device`, from the same weights on the same batches.
#[derive(Debug, Clone, Serialize)]
pub struct StepsParity {
    pub steps: usize,
    pub losses_cpu: Vec<f64>,
    pub losses_device: Vec<f64>,
    pub max_loss_relative_error: f64,
    /// The largest per-parameter relative error of the weights after the last step.
    pub max_weight_relative_error: f64,
}

pub fn adamw_parity(
    cfg: &ModelConfig,
    device: &Device,
    steps: usize,
    between: impl FnOnce(),
) -> Result<StepsParity> {
    let (batch, seq, lr) = (2, 64, 3e-3);
    let run = |dev: &Device| -> Result<(Vec<f64>, Trainable)> {
        let mut t = Trainable::new(cfg, 11, seq, dev)?;
        Ok((t.train(cfg, steps, (batch, seq), lr)?, t))
    };
    let (losses_cpu, a) = run(&Device::Cpu)?;
    between();
    let (losses_device, b) = run(device)?;
    let max_loss_relative_error = losses_cpu
        .iter()
        .zip(&losses_device)
        .map(|(x, y)| ((y - x) / x).abs())
        .fold(0.0, f64::max);
    let mut max_weight_relative_error = 0.0f64;
    for ((_, va), (_, vb)) in a.vars.iter().zip(&b.vars) {
        max_weight_relative_error =
            max_weight_relative_error.max(relative_error(vb.as_tensor(), va.as_tensor())?);
    }
    Ok(StepsParity {
        steps,
        losses_cpu,
        losses_device,
        max_loss_relative_error,
        max_weight_relative_error,
    })
}

/// f32 against bf16 mixed precision on one device: the loss curves of `steps` steps.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionCurves {
    pub steps: usize,
    /// Whether the bf16 mode took effect (on a CPU without AVX512-BF16 it does not).
    pub bf16_active: bool,
    /// Mean loss of the last 10 steps of each run.
    pub final_f32: f64,
    pub final_bf16: f64,
    pub final_relative_difference: f64,
    pub losses_f32: Vec<f64>,
    pub losses_bf16: Vec<f64>,
}

pub fn bf16_against_f32(
    cfg: &ModelConfig,
    device: &Device,
    steps: usize,
) -> Result<PrecisionCurves> {
    let (batch, seq, lr) = (4, 64, 3e-3);
    let run = |bf16: bool| -> Result<(Vec<f64>, bool)> {
        let mut t = Trainable::new(cfg, 5, seq, device)?;
        let on = t.model.set_bf16(bf16);
        Ok((t.train(cfg, steps, (batch, seq), lr)?, on))
    };
    let (losses_f32, _) = run(false)?;
    let (losses_bf16, bf16_active) = run(true)?;
    let tail = |l: &[f64]| {
        let k = l.len().min(10).max(1);
        l[l.len() - k..].iter().sum::<f64>() / k as f64
    };
    let (final_f32, final_bf16) = (tail(&losses_f32), tail(&losses_bf16));
    Ok(PrecisionCurves {
        steps,
        bf16_active,
        final_f32,
        final_bf16,
        final_relative_difference: ((final_bf16 - final_f32) / final_f32).abs(),
        losses_f32,
        losses_bf16,
    })
}

/// Throughput of full training steps (forward, loss, backward, clip, AdamW).
#[derive(Debug, Clone, Serialize)]
pub struct StepSpeed {
    pub mode: String,
    pub batch: usize,
    pub seq: usize,
    pub parameters: u64,
    pub tokens_per_s: f64,
    pub step_ms: f64,
    /// Model FLOPs (6·N + 12·L·T·d per token, as the PyTorch reference counts) per second over
    /// `peak_tflops`.
    pub mfu: f64,
    pub peak_tflops: f64,
    /// Device memory in use, the most seen after a forward or a backward (GPU only).
    pub memory_used_bytes: Option<u64>,
}

/// Median step time of `steps` steps after `warmup`, with the bf16 mode on or off.
pub fn step_speed(
    cfg: &ModelConfig,
    device: &Device,
    batch: usize,
    seq: usize,
    bf16: bool,
    (warmup, steps): (usize, usize),
    peak_tflops: f64,
) -> Result<StepSpeed> {
    let mut t = Trainable::new(cfg, 1, seq, device)?;
    let on = t.model.set_bf16(bf16);
    let mut times = Vec::new();
    let mut used = None;
    for s in 0..warmup + steps {
        let ids = batch_ids(cfg, batch, seq, s);
        let t0 = Instant::now();
        let loss = t.step(&ids, batch, seq, 1e-4)?; // reads the loss back: the step has finished
        device.synchronize()?;
        let dt = t0.elapsed().as_secs_f64();
        if !loss.is_finite() {
            candle_core::bail!("the loss is {loss} at step {s}");
        }
        used = used.max(memory_used(device));
        if s >= warmup {
            times.push(dt);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let step = times[times.len() / 2];
    let tokens = (batch * seq) as f64;
    let n = cfg.num_parameters() as f64;
    let per_token =
        6.0 * n + 12.0 * cfg.num_hidden_layers as f64 * seq as f64 * cfg.hidden_size as f64;
    Ok(StepSpeed {
        mode: if on { "bf16" } else { "f32" }.into(),
        batch,
        seq,
        parameters: cfg.num_parameters(),
        tokens_per_s: tokens / step,
        step_ms: step * 1e3,
        mfu: per_token * tokens / step / (peak_tflops * 1e12),
        peak_tflops,
        memory_used_bytes: used,
    })
}

/// Memory in use on a GPU now (total − free), `None` on the CPU.
pub fn memory_used(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = device;
    None
}

/// TF32 f32 matrix products on a GPU (`"precision": "tf32"`); nothing on the CPU.
pub fn set_tf32(on: bool) {
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
    let _ = on;
}
