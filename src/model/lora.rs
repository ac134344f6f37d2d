//! LoRA: low-rank adapters on a frozen base, as PEFT defines them.
//!
//! A wrapped projection computes `y = x Wᵀ + b + scaling · dropout(x) Aᵀ Bᵀ` with `A` (r, in)
//! and `B` (out, r). The base weight `W` is a plain `Tensor`, not a `Var`: it gets no gradient and
//! no optimiser state. `A` starts as PEFT's `kaiming_uniform_(a=√5)`, i.e. uniform(−1/√in, 1/√in),
//! `B` at zero (so a fresh adapter changes nothing), and `scaling` is alpha/r (alpha/√r with
//! rsLoRA). Dropout applies to the adapter's input only, in training mode only, with a seeded RNG
//! shared by all adapters of a model.
//!
//! [`load_lora_llama`] builds a `Llama` from base tensors and attaches adapters to the chosen
//! projections through [`Llama::projections_mut`]; [`super::peft`] exports and merges them.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

use super::config::ModelConfig;
use super::llama::Llama;
use super::lora_delta::FrozenWeight;

/// State shared by every adapter of one model: training mode (dropout on) and the dropout RNG.
#[derive(Debug)]
pub struct LoraRuntime {
    training: AtomicBool,
    dropout: f64,
    seed: u64,
    rng: Mutex<StdRng>,
}

impl LoraRuntime {
    /// Dropout probability `dropout`, masks drawn from a generator seeded with `seed`.
    pub fn new(dropout: f64, seed: u64) -> Self {
        LoraRuntime {
            training: AtomicBool::new(true),
            dropout,
            seed,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Restarts the mask generator for training step `step`, so the masks of a step depend only
    /// on the seed and the step (a resumed run draws what an uninterrupted one would).
    pub fn start_step(&self, step: u64) {
        let seed = self.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        *self.rng.lock().expect("lora rng lock") = StdRng::seed_from_u64(seed);
    }

    /// The mask generator's state, for replaying a forward pass ([`super::checkpoint`]).
    pub(crate) fn rng_state(&self) -> StdRng {
        self.rng.lock().expect("lora rng lock").clone()
    }

    /// Sets the mask generator's state, returning the one it replaces.
    pub(crate) fn set_rng_state(&self, state: StdRng) -> StdRng {
        std::mem::replace(&mut *self.rng.lock().expect("lora rng lock"), state)
    }

    /// Training mode applies dropout; evaluation and inference do not.
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Inverted dropout on `x`: zero with probability p, survivors scaled by 1/(1−p). Each call
    /// takes one draw from the step's generator and expands it into the mask in parallel, the
    /// element at index i keeping the i-th output of SplitMix64 seeded with that draw: the masks
    /// depend only on (seed, step, call), as a serial generator's would, without drawing
    /// millions of numbers one by one (LoRA on all seven projections of a 512-wide model drew
    /// ~40 million a step).
    fn dropout(&self, x: &Tensor) -> Result<Tensor> {
        match self.mask(x.elem_count()) {
            None => Ok(x.clone()),
            Some(mask) => {
                let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
                x * mask
            }
        }
    }

    /// The next dropout mask over `n` elements (0 or 1/(1−p) each), or `None` when dropout is
    /// off (evaluation, or p = 0).
    fn mask(&self, n: usize) -> Option<Vec<f32>> {
        if !self.is_training() || self.dropout <= 0.0 {
            return None;
        }
        let p = self.dropout;
        let keep = (1.0 / (1.0 - p)) as f32;
        let draw: u64 = self.rng.lock().expect("lora rng lock").random();
        // Keep when the top 53 bits, as a fraction of 2^53, are at least p.
        let threshold = (p * (1u64 << 53) as f64) as u64;
        // Written straight into the allocation: no zero fill first (144 MB a step on the
        // LoRA benchmark's model).
        let mut mask: Vec<f32> = Vec::with_capacity(n);
        mask.spare_capacity_mut()[..n]
            .par_chunks_mut(MASK_CHUNK)
            .enumerate()
            .for_each(|(c, m)| fill_mask(m, (c * MASK_CHUNK) as u64, draw, threshold, keep));
        // SAFETY: `fill_mask` wrote every one of the n elements.
        unsafe { mask.set_len(n) };
        Some(mask)
    }
}

/// Element `j` of `m` is mask element `first + j`: 0 when its hash falls under `threshold`, else
/// `keep`. With AVX-512 (F + DQ, detected at run time) the same loop is compiled with 64-bit
/// vector multiplies, eight hashes at a time (~4% of a LoRA step with dropout when scalar); the
/// bits are the same either way.
fn fill_mask(m: &mut [MaybeUninit<f32>], first: u64, draw: u64, threshold: u64, keep: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the features it is compiled for were detected just above.
        return unsafe { fill_mask_avx512(m, first, draw, threshold, keep) };
    }
    fill_mask_body(m, first, draw, threshold, keep)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn fill_mask_avx512(
    m: &mut [MaybeUninit<f32>],
    first: u64,
    draw: u64,
    threshold: u64,
    keep: f32,
) {
    fill_mask_body(m, first, draw, threshold, keep)
}

#[inline(always)]
fn fill_mask_body(m: &mut [MaybeUninit<f32>], first: u64, draw: u64, threshold: u64, keep: f32) {
    for (j, v) in m.iter_mut().enumerate() {
        let i = first.wrapping_add(j as u64);
        let h = splitmix64(draw.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA)));
        v.write(if (h >> 11) < threshold { 0.0 } else { keep });
    }
}

/// Mask elements per rayon task.
const MASK_CHUNK: usize = 64 * 1024;
/// SplitMix64's increment (2^64 / φ).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Steele, Lea and Flood 2014) applied to a state.
#[inline(always)]
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One adapter: trainable `A` (r, in) and `B` (out, r) and the fixed scaling.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub a: Var, // (r, in)
    pub b: Var, // (out, r)
    pub scaling: f64,
    runtime: Arc<LoraRuntime>,
}

impl LoraAdapter {
    /// A fresh adapter initialised as PEFT does: `A` uniform(−1/√in, 1/√in), `B` zero;
    /// `base_weight` (out, in) gives the shape, dtype and device.
    pub fn new(
        base_weight: &Tensor,
        r: usize,
        scaling: f64,
        rng: &mut StdRng,
        runtime: Arc<LoraRuntime>,
    ) -> Result<Self> {
        let (out_dim, in_dim) = base_weight.dims2()?;
        let (dtype, device) = (base_weight.dtype(), base_weight.device());
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..r * in_dim)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Tensor::from_vec(a, (r, in_dim), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, r), dtype, device)?;
        Ok(LoraAdapter {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scaling,
            runtime,
        })
    }

    /// The adapter's contribution for `x` (rows, in): `scaling · dropout(x) Aᵀ Bᵀ`, (rows, out);
    /// one fused op on the CPU ([`super::lora_delta`]), candle ops elsewhere.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if super::ops::fused_available(x) && x.dtype() == self.a.dtype() {
            let mask = self.runtime.mask(x.elem_count()).map(Arc::new);
            return super::lora_delta::lora_delta(x, &self.a, &self.b, self.scaling, mask);
        }
        let x = self.runtime.dropout(x)?;
        let h = x.matmul(&self.a.as_tensor().t()?)?; // (rows, r)
        h.matmul(&self.b.as_tensor().t()?)? * self.scaling // (rows, out)
    }

    /// The whole adapted projection `x Wᵀ + scaling · dropout(x) Aᵀ Bᵀ` for the frozen base
    /// weight `w` (out, in), dense or quantised, as one fused CPU op
    /// ([`super::lora_delta::lora_linear`]), or `None` where that op does not apply (off the CPU,
    /// another dtype, a trainable or non-contiguous weight, a quantised one outside f32): the
    /// caller then adds [`Self::forward`] to its own product.
    pub fn forward_with_base(&self, x: &Tensor, w: FrozenWeight<'_>) -> Result<Option<Tensor>> {
        let base_fits = match w {
            FrozenWeight::Dense(w) => {
                w.dtype() == x.dtype() && w.device().is_cpu() && w.is_contiguous() && !w.track_op()
            }
            FrozenWeight::Quantized(_) => x.dtype() == DType::F32,
        };
        if !(super::ops::fused_available(x) && x.dtype() == self.a.dtype() && base_fits) {
            return Ok(None);
        }
        let mask = self.runtime.mask(x.elem_count()).map(Arc::new);
        super::lora_delta::lora_linear(x, w, &self.a, &self.b, self.scaling, mask).map(Some)
    }

    /// The state shared with the model's other adapters.
    pub(crate) fn runtime(&self) -> &Arc<LoraRuntime> {
        &self.runtime
    }

    /// `scaling · B A`, (out, in): what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scaling
    }
}

/// LoRA's settings as the model uses them; the job specification converts into this.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: u32,
    pub alpha: f64,
    pub dropout: f64,
    /// The projections that get adapters, by their Hugging Face names (`q_proj`, ...).
    pub target_modules: Vec<String>,
    /// Scale by `alpha / √r` (rsLoRA) instead of `alpha / r`.
    pub use_rslora: bool,
}

/// `alpha / r`, or `alpha / √r` with rsLoRA, as PEFT computes it.
pub fn lora_scaling(spec: &LoraConfig) -> f64 {
    if spec.use_rslora {
        spec.alpha / (spec.r as f64).sqrt()
    } else {
        spec.alpha / spec.r as f64
    }
}

/// Every adapter of a model, by the Hugging Face path of the projection it wraps
/// (`model.layers.0.self_attn.q_proj`), in model order.
#[derive(Debug, Clone)]
pub struct LoraAdapters {
    pub spec: LoraConfig,
    pub adapters: Vec<(String, LoraAdapter)>,
    /// Whole weights trained beside the adapters (PEFT's `modules_to_save`), by Hugging Face
    /// weight name: the embeddings when a job adds tokens to the vocabulary.
    pub modules_to_save: Vec<(String, Var)>,
    runtime: Arc<LoraRuntime>,
}

impl LoraAdapters {
    /// The trainable variables, named `{module}.lora_A.weight` / `{module}.lora_B.weight`, then
    /// the whole weights of `modules_to_save` under their own names.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.adapters
            .iter()
            .flat_map(|(m, ad)| {
                [
                    (format!("{m}.lora_A.weight"), ad.a.clone()),
                    (format!("{m}.lora_B.weight"), ad.b.clone()),
                ]
            })
            .chain(self.modules_to_save.iter().cloned())
            .collect()
    }

    /// Dropout on (training) or off (evaluation, inference, export).
    pub fn set_training(&self, training: bool) {
        self.runtime.set_training(training);
    }

    /// Dropout masks for training step `step` (see [`LoraRuntime::start_step`]).
    pub fn start_step(&self, step: u64) {
        self.runtime.start_step(step);
    }
}

/// Attaches fresh adapters to every projection of `model` named in `spec.target_modules`.
/// Deterministic in `seed` (initialisation and dropout masks).
pub fn attach_lora(model: &mut Llama, spec: &LoraConfig, seed: u64) -> Result<LoraAdapters> {
    let runtime = Arc::new(LoraRuntime::new(spec.dropout, seed ^ 0x10_4a));
    let mut rng = StdRng::seed_from_u64(seed);
    let scaling = lora_scaling(spec);
    let mut adapters = Vec::new();
    for (path, linear) in model.projections_mut() {
        let short = path.rsplit('.').next().unwrap_or_default();
        if !spec.target_modules.iter().any(|t| t == short) {
            continue;
        }
        let adapter = LoraAdapter::new(
            linear.weight(),
            spec.r as usize,
            scaling,
            &mut rng,
            runtime.clone(),
        )?;
        linear.set_lora(Some(adapter.clone()));
        adapters.push((path, adapter));
    }
    if adapters.is_empty() {
        candle_core::bail!(
            "no projection matches lora.target_modules {:?}",
            spec.target_modules
        );
    }
    Ok(LoraAdapters {
        spec: spec.clone(),
        adapters,
        modules_to_save: Vec::new(),
        runtime,
    })
}

/// Makes the weights `names` of `base` trainable: each becomes a variable (a copy), and `base`
/// holds the variable's tensor so a model built from it trains that variable. Names `base` lacks
/// (an `lm_head` tied to the embedding) are skipped.
pub fn trainable_copies(
    base: &mut HashMap<String, Tensor>,
    names: &[&str],
) -> Result<Vec<(String, Var)>> {
    let mut out = Vec::new();
    for &name in names {
        if let Some(t) = base.get(name) {
            let var = Var::from_tensor(t)?;
            base.insert(name.to_string(), var.as_tensor().clone());
            out.push((name.to_string(), var));
        }
    }
    Ok(out)
}

/// A `Llama` whose every base weight is a plain (frozen) tensor, with LoRA adapters attached.
/// RoPE tables cover `max_len` positions (see [`Llama::load_with_context`]).
pub fn load_lora_llama(
    base: HashMap<String, Tensor>,
    cfg: &ModelConfig,
    spec: &LoraConfig,
    seed: u64,
    max_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Llama, LoraAdapters)> {
    let vb = VarBuilder::from_tensors(base, dtype, device);
    let mut model = Llama::load_with_context(vb, cfg, max_len)?;
    let adapters = attach_lora(&mut model, spec, seed)?;
    Ok((model, adapters))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::init_varmap;
    use crate::model::llama::sequential_positions;
    use crate::train::loss::shifted_cross_entropy;
    use crate::train::optim::{AdamW, AdamWConfig};

    /// The dispatching fill (vectorised where the processor has AVX-512) gives the scalar
    /// loop's bits, at an odd length and offset.
    #[test]
    fn mask_fill_equals_the_scalar_loop() {
        let (n, first, draw, keep) = (1_003, 70_001u64, 0x1234_5678_9abc_def0u64, 1.25f32);
        let threshold = (0.2 * (1u64 << 53) as f64) as u64;
        let (mut fast, mut plain) = (
            vec![MaybeUninit::new(9f32); n],
            vec![MaybeUninit::new(9f32); n],
        );
        fill_mask(&mut fast, first, draw, threshold, keep);
        fill_mask_body(&mut plain, first, draw, threshold, keep);
        // SAFETY: initialised at creation (and every element written since).
        let (fast, plain): (Vec<f32>, Vec<f32>) = unsafe {
            (
                fast.iter().map(|v| v.assume_init()).collect(),
                plain.iter().map(|v| v.assume_init()).collect(),
            )
        };
        assert_eq!(fast, plain);
        let dropped = plain.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (150..250).contains(&dropped),
            "{dropped} of {n} dropped at p 0.2"
        );
    }

    #[test]
    fn dropout_masks_keep_one_minus_p_scaled_and_depend_on_seed_step_and_call() {
        let rt = LoraRuntime::new(0.25, 7);
        let x = Tensor::ones((300, 1000), DType::F32, &Device::Cpu).unwrap(); // several tasks
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        rt.start_step(3);
        let first = values(rt.dropout(&x).unwrap());
        let second = values(rt.dropout(&x).unwrap()); // the next call of the same step
        rt.start_step(3);
        assert_eq!(values(rt.dropout(&x).unwrap()), first, "same seed and step");
        rt.start_step(4);
        let other_step = values(rt.dropout(&x).unwrap());
        assert_ne!(first, second, "calls of a step draw their own masks");
        assert_ne!(first, other_step, "steps draw their own masks");
        // Survivors are scaled by 1/(1 - p); the kept share is 0.75 within 5 standard deviations
        // of a binomial over 300,000 elements (σ ≈ 0.0008).
        let keep = 1.0 / 0.75f32;
        assert!(first.iter().all(|&v| v == 0.0 || (v - keep).abs() < 1e-6));
        let share = first.iter().filter(|&&v| v != 0.0).count() as f64 / first.len() as f64;
        assert!((share - 0.75).abs() < 0.004, "kept {share}");
        // Neighbouring elements are not correlated: P(both kept) ≈ 0.75².
        let both = first
            .windows(2)
            .filter(|w| w[0] != 0.0 && w[1] != 0.0)
            .count() as f64
            / (first.len() - 1) as f64;
        assert!((both - 0.5625).abs() < 0.005, "pairs kept {both}");
        rt.set_training(false);
        assert_eq!(values(rt.dropout(&x).unwrap()), values(x.clone()));
    }

    /// Tiny config shared with the PEFT fixture (tests/fixtures/make_peft_fixture.py).
    pub(crate) fn tiny() -> ModelConfig {
        let mut cfg = ModelConfig::llama(64, 32, 64, 2, 4, 2, 64);
        cfg.tie_word_embeddings = false;
        cfg.initializer_range = 0.2;
        cfg
    }

    pub(crate) fn base_tensors(cfg: &ModelConfig) -> HashMap<String, Tensor> {
        let vm = init_varmap(cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let data = vm.data().lock().unwrap();
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect()
    }

    pub(crate) fn spec() -> LoraConfig {
        LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            use_rslora: false,
        }
    }

    pub(crate) fn batch() -> Tensor {
        let ids: Vec<u32> = (0..2 * 12).map(|i| (i * 7 + 3) % 64).collect();
        Tensor::from_vec(ids, (2, 12), &Device::Cpu).unwrap()
    }

    pub(crate) fn logits(model: &Llama, ids: &Tensor) -> Tensor {
        let pos = sequential_positions(2, 12, &Device::Cpu).unwrap();
        model.forward(ids, &pos, None).unwrap()
    }

    /// A few AdamW steps on the LoRA variables only.
    pub(crate) fn train(model: &Llama, adapters: &LoraAdapters, steps: usize) {
        let ids = batch();
        let w = Tensor::ones((2, 12), DType::F32, &Device::Cpu).unwrap();
        let params = adapters
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v, true))
            .collect();
        let mut opt = AdamW::new(params, AdamWConfig::default()).unwrap();
        adapters.set_training(true);
        for _ in 0..steps {
            let s = shifted_cross_entropy(&logits(model, &ids), &ids, &w).unwrap();
            let grads = s.loss_sum.backward().unwrap();
            for (path, linear) in model.clone().projections_mut() {
                assert!(
                    grads.get(linear.weight()).is_none(),
                    "{path} base weight got a gradient"
                );
            }
            opt.step(&grads, 1e-2).unwrap();
        }
        adapters.set_training(false);
    }

    #[test]
    fn fresh_adapters_follow_peft_init_and_change_nothing() {
        let cfg = tiny();
        let base = base_tensors(&cfg);
        let plain = Llama::load(
            VarBuilder::from_tensors(base.clone(), DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let (model, adapters) =
            load_lora_llama(base, &cfg, &spec(), 1, 64, DType::F32, &Device::Cpu).unwrap();
        // 2 layers × 7 projections.
        assert_eq!(adapters.adapters.len(), 14);
        assert_eq!(adapters.adapters[0].0, "model.layers.0.self_attn.q_proj");
        for (path, ad) in &adapters.adapters {
            assert_eq!(ad.scaling, 2.0, "alpha 8 / r 4");
            let (r, inp) = ad.a.as_tensor().dims2().unwrap();
            assert_eq!(r, 4);
            let a: Vec<f32> = ad.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let bound = 1.0 / (inp as f32).sqrt();
            assert!(a.iter().all(|v| v.abs() <= bound), "{path}");
            // Spread over the range, not a constant.
            assert!(
                a.iter().cloned().fold(0f32, f32::max) > bound * 0.5,
                "{path}"
            );
            let b: f32 =
                ad.b.as_tensor()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
            assert_eq!(b, 0.0);
        }
        adapters.set_training(false);
        let d = crate::testing::max_abs_diff(&logits(&model, &batch()), &logits(&plain, &batch()));
        assert_eq!(d, 0.0);
        // rsLoRA scales by alpha / sqrt(r).
        let rs = LoraConfig {
            use_rslora: true,
            r: 16,
            ..spec()
        };
        assert_eq!(lora_scaling(&rs), 2.0);
    }

    #[test]
    fn lora_training_leaves_base_bitwise_unchanged_and_moves_adapters() {
        let cfg = tiny();
        let base = base_tensors(&cfg);
        let (model, adapters) =
            load_lora_llama(base.clone(), &cfg, &spec(), 1, 64, DType::F32, &Device::Cpu).unwrap();
        let a0: Vec<Vec<f32>> = adapters
            .adapters
            .iter()
            .map(|(_, ad)| ad.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let ids = batch();
        let w = Tensor::ones((2, 12), DType::F32, &Device::Cpu).unwrap();
        let loss0: f32 = shifted_cross_entropy(&logits(&model, &ids), &ids, &w)
            .unwrap()
            .loss_sum
            .to_scalar()
            .unwrap();
        train(&model, &adapters, 3);
        let loss1: f32 = shifted_cross_entropy(&logits(&model, &ids), &ids, &w)
            .unwrap()
            .loss_sum
            .to_scalar()
            .unwrap();
        assert!(loss1 < loss0, "{loss1} !< {loss0}");
        // Every base projection weight is bitwise what was loaded.
        let mut model = model;
        for (path, linear) in model.projections_mut() {
            let now: Vec<u32> = linear
                .weight()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let was: Vec<u32> = base[&format!("{path}.weight")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert!(now == was, "{path} changed");
        }
        // Every adapter moved: B away from zero, A away from its init.
        for ((path, ad), a0) in adapters.adapters.iter().zip(&a0) {
            let b: f32 =
                ad.b.as_tensor()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
            assert!(b > 0.0, "{path} B did not move");
            let a: Vec<f32> = ad.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert!(a != *a0, "{path} A did not move");
        }
    }
}
