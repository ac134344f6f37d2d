//! The Llama-family model: configuration and presets, the network, RoPE, and Hugging Face I/O.
//!
//! Parameters live in a candle [`VarMap`] keyed by Hugging Face tensor names; the network reads them
//! through a `VarBuilder`, so the same code builds a trainable model (from a `VarMap`) or a frozen
//! one (from plain tensors).

pub mod attention;
pub mod bf16_gemm;
pub mod bf16_linear;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_ops;
pub mod fast_exp;
pub mod few_rows;
pub mod frozen;
pub mod gemm;
pub mod generate;
pub mod gguf;
pub mod gguf_export;
pub mod head_loss;
pub mod hf;
pub mod int8;
pub mod llama;
pub mod lora;
pub mod lora_delta;
pub mod nf4;
pub mod ops;
pub mod peft;
pub mod quantized;
pub mod quantized_cache;
pub mod quantized_linear;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng, rngs::StdRng};

pub use config::{Architecture, ModelConfig, PRESETS, ParamKind, RopeScaling, preset};
pub use llama::Llama;

/// Fresh weights as transformers initialises a Llama: normal(0, `initializer_range`) for matrices,
/// ones for norms, zeros for biases. Deterministic in `seed`.
pub fn init_varmap(
    cfg: &ModelConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<VarMap> {
    let mut rng = StdRng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        for (name, shape, kind) in cfg.parameter_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match kind {
                ParamKind::Norm => vec![1.0; n],
                ParamKind::Bias => vec![0.0; n],
                ParamKind::Embedding | ParamKind::Linear => (0..n)
                    .map(|_| (normal(&mut rng) * cfg.initializer_range) as f32)
                    .collect(),
            };
            let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

/// The current tensors of every variable of `varmap`, by name (shared storage, not copies).
pub fn varmap_tensors(
    varmap: &candle_nn::VarMap,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// A `VarMap` holding the given tensors as trainable variables.
pub fn varmap_from_tensors(
    tensors: impl IntoIterator<Item = (String, Tensor)>,
    dtype: DType,
) -> candle_core::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        for (name, t) in tensors {
            data.insert(name, Var::from_tensor(&t.to_dtype(dtype)?)?);
        }
    }
    Ok(varmap)
}

/// The model's variables in the config's fixed parameter order, with their roles.
pub fn named_vars(
    cfg: &ModelConfig,
    varmap: &VarMap,
) -> Result<Vec<(String, Var, ParamKind)>, String> {
    let data = varmap.data().lock().expect("varmap lock");
    cfg.parameter_shapes()
        .into_iter()
        .map(|(name, _, kind)| match data.get(&name) {
            Some(v) => Ok((name, v.clone(), kind)),
            None => Err(name),
        })
        .collect()
}

/// One standard normal sample (Box-Muller), so initialisation depends only on the seed.
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
