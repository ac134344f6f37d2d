//! Rotary position embeddings in the rotate-half convention of Hugging Face's Llama: the cos/sin
//! tables, the per-row rotation the fused CPU attention applies ([`Rope::rows`]), and the same
//! rotation in differentiable candle ops (`narrow`, `cat`, `mul`) for the composite path, since
//! candle's fused `rope` kernels have no backward pass, and the same rotation as one op with its
//! backward ([`rotary`], with a CUDA kernel).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention::RopeRows;
use super::config::{ModelConfig, RopeScaling};
use super::ops::{Real, contiguous};

/// Precomputed cos/sin tables for positions `0..max_len`, as tensors for the composite ops and
/// as host values for the fused attention.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor, // (max_len, head_dim / 2)
    sin: Tensor, // (max_len, head_dim / 2)
    host_cos: Arc<Vec<f32>>,
    host_sin: Arc<Vec<f32>>,
}

/// The inverse frequencies `1 / theta^(2i/d)`, with the config's scaling applied, for tables of
/// positions below `max_len` (dynamic NTK scaling depends on it), as transformers'
/// `ROPE_INIT_FUNCTIONS` compute them.
pub fn inverse_frequencies(cfg: &ModelConfig, max_len: usize) -> Vec<f64> {
    let d = cfg.head_dim;
    let with_base = |theta: f64| -> Vec<f64> {
        (0..d / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64))
            .collect()
    };
    let base = with_base(cfg.rope_theta);
    match cfg.rope_scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        // Dynamic NTK: past the original context the base grows with the sequence length. A
        // table serves sequences up to `max_len`, the length transformers scales for when a
        // sequence reaches it (shorter ones, in transformers, get less scaling).
        Some(RopeScaling::Dynamic { factor }) => {
            let original = cfg.max_position_embeddings as f64;
            let seq = (max_len as f64).max(original);
            if seq <= original {
                return base;
            }
            let scale =
                (factor * seq / original - (factor - 1.0)).powf(d as f64 / (d as f64 - 2.0));
            with_base(cfg.rope_theta * scale)
        }
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            truncate,
            ..
        }) => {
            let (dim, theta) = (d as f64, cfg.rope_theta);
            let old = original_max_position_embeddings as f64;
            // The dimension that turns `rotations` times over the original context.
            let dim_for = |rotations: f64| {
                dim * (old / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (dim_for(beta_fast), dim_for(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001; // as transformers, against a zero-width ramp
            }
            base.iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp; // share of the unscaled (extrapolated) frequency
                    (f / factor) * (1.0 - keep) + f * keep
                })
                .collect()
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = original_max_position_embeddings as f64;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// The factor transformers multiplies cos and sin by (YaRN's attention factor; 1 otherwise), so
/// that every attention score is scaled by its square.
pub fn attention_scaling(cfg: &ModelConfig) -> f64 {
    match cfg.rope_scaling {
        Some(RopeScaling::Yarn {
            attention_factor, ..
        }) => attention_factor,
        _ => 1.0,
    }
}

impl Rope {
    /// Tables for positions below `max_len`, in `dtype` on `device`.
    pub fn new(cfg: &ModelConfig, max_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv = inverse_frequencies(cfg, max_len);
        let scale = attention_scaling(cfg) as f32;
        let half = inv.len();
        // Computed in f32 like transformers does, so positions far from 0 round the same way.
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for p in 0..max_len {
            for &f in &inv {
                let angle = (p as f32) * (f as f32);
                cos.push((angle.cos() * scale) as f64);
                sin.push((angle.sin() * scale) as f64);
            }
        }
        let host_cos: Vec<f32> = cos.iter().map(|&c| c as f32).collect();
        let host_sin: Vec<f32> = sin.iter().map(|&s| s as f32).collect();
        let cos = Tensor::from_vec(cos, (max_len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_len, half), device)?.to_dtype(dtype)?;
        Ok(Rope {
            cos,
            sin,
            host_cos: Arc::new(host_cos),
            host_sin: Arc::new(host_sin),
        })
    }

    /// The rotation of each row of `positions` (B, T) u32, for the fused attention.
    pub fn rows(&self, positions: &Tensor) -> Result<RopeRows> {
        let positions = positions.flatten_all()?.to_vec1::<u32>()?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.max_len()) {
            candle_core::bail!(
                "position {p} is past the model's {} positions",
                self.max_len()
            );
        }
        Ok(RopeRows {
            positions,
            cos: self.host_cos.clone(),
            sin: self.host_sin.clone(),
            half: self.cos.dims()[1],
        })
    }

    /// Number of positions the tables cover.
    pub fn max_len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// cos and sin for the given position ids, shaped to broadcast over heads: (B, 1, T, head_dim).
    pub fn cos_sin(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let pick = |table: &Tensor| -> Result<Tensor> {
            let half = table.index_select(&flat, 0)?.reshape((b, 1, t, ()))?; // (B, 1, T, hd/2)
            Tensor::cat(&[&half, &half], D::Minus1)?
                .detach()
                .contiguous() // (B, 1, T, hd)
        };
        Ok((pick(&self.cos)?, pick(&self.sin)?))
    }
}

/// Rotates `x` (B, H, T, hd) by the angles whose cos/sin are given (B, 1, T, hd).
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?; // rotate_half(x)
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// [`apply_rotary`] as one op with its backward, for the composite attention path (packed SFT on
/// the CPU, every attention on a GPU with Wick's kernels): `x` (B, H, T, hd), `cos`/`sin`
/// (B, 1, T, hd) whose halves repeat (as [`Rope::cos_sin`] builds them). Backward is the same
/// rotation by −sin. The same arithmetic as [`apply_rotary`], `x·cos + rotate_half(x)·sin`, so
/// the results are equal to the bit.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    if cos.dims() != [b, 1, t, hd] || sin.dims() != [b, 1, t, hd] || hd % 2 != 0 {
        candle_core::bail!(
            "rotary: x {:?} needs cos and sin of ({b}, 1, {t}, {hd}), got {:?} and {:?}",
            x.dims(),
            cos.dims(),
            sin.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rotary {
            heads: h,
            negate_sin: false,
        },
    )
}

struct Rotary {
    heads: usize,
    /// Backward: rotate by −sin.
    negate_sin: bool,
}

fn rotate<R: Real + std::ops::Neg<Output = R> + std::ops::Add<Output = R>>(
    x: &[R],
    cos: &[R],
    sin: &[R],
    (heads, t, hd): (usize, usize, usize),
    negate_sin: bool,
) -> Vec<R> {
    let half = hd / 2;
    let mut out = vec![R::ZERO; x.len()];
    out.par_chunks_mut(hd)
        .zip(x.par_chunks(hd))
        .enumerate()
        .for_each(|(row, (o, xs))| {
            // Row (b, h, t): its angles are row (b, t) of the tables.
            let (b, ti) = (row / (heads * t), row % t);
            let at = (b * t + ti) * hd;
            let (c, s) = (&cos[at..at + hd], &sin[at..at + hd]);
            for i in 0..hd {
                let r = if i < half {
                    -xs[i + half]
                } else {
                    xs[i - half]
                };
                let si = if negate_sin { -s[i] } else { s[i] };
                o[i] = xs[i] * c[i] + r * si;
            }
        });
    out
}

impl CustomOp3 for Rotary {
    fn name(&self) -> &'static str {
        "rotary"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        let shape = (self.heads, dims[2], dims[3]);
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(c), CpuStorage::F32(s)) => {
                CpuStorage::F32(rotate(
                    contiguous(x, l1)?,
                    contiguous(c, l2)?,
                    contiguous(s, l3)?,
                    shape,
                    self.negate_sin,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(c), CpuStorage::F64(s)) => {
                CpuStorage::F64(rotate(
                    contiguous(x, l1)?,
                    contiguous(c, l2)?,
                    contiguous(s, l3)?,
                    shape,
                    self.negate_sin,
                ))
            }
            _ => candle_core::bail!("rotary supports f32 and f64 on CPU, all three alike"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = l1.shape().dims();
        let y = super::cuda_ops::rotary(
            (s1, l1),
            (s2, l2),
            (s3, l3),
            (self.heads, dims[2], dims[3]),
            self.negate_sin,
        )?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad_res.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rotary {
                heads: self.heads,
                negate_sin: !self.negate_sin,
            },
        )?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_preserves_norm_and_is_identity_at_position_zero() {
        let cfg = ModelConfig::llama(16, 16, 32, 1, 2, 2, 64);
        let rope = Rope::new(&cfg, 64, DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::arange(0f64, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 1, 8))
            .unwrap();
        let pos0 = Tensor::new(&[[0u32]], &Device::Cpu).unwrap();
        let (c, s) = rope.cos_sin(&pos0).unwrap();
        let y = apply_rotary(&x, &c, &s).unwrap();
        let diff: f64 = (y - &x)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-12);
        let pos = Tensor::new(&[[37u32]], &Device::Cpu).unwrap();
        let (c, s) = rope.cos_sin(&pos).unwrap();
        let y = apply_rotary(&x, &c, &s).unwrap();
        let n = |t: &Tensor| -> f64 { t.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap() };
        // cos/sin are computed in f32 as transformers does, so cos² + sin² = 1 only to ~1e-7.
        assert!((n(&y) / n(&x) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        // Reference rule: transformers `_compute_llama3_parameters`.
        let mut cfg = ModelConfig::llama(16, 128, 32, 1, 2, 2, 64);
        cfg.rope_theta = 500_000.0;
        let plain = inverse_frequencies(&cfg, 64);
        cfg.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        let scaled = inverse_frequencies(&cfg, 64);
        assert_eq!(scaled[0], plain[0]);
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 32.0).abs() < 1e-18);
    }

    /// The one-op rotation equals the composite one to the bit, forward and backward (its
    /// backward, the rotation by −sin, against candle's gradient of the composite), f32 and f64.
    #[test]
    fn rotary_op_equals_the_composite_rotation_forward_and_backward() {
        use candle_core::Var;
        let cfg = ModelConfig::llama(16, 32, 32, 1, 4, 2, 64);
        for dtype in [DType::F32, DType::F64] {
            let dev = Device::Cpu;
            let rope = Rope::new(&cfg, 64, dtype, &dev).unwrap();
            let pos = Tensor::new(&[[3u32, 9, 0, 41, 17], [5, 6, 7, 8, 63]], &dev).unwrap();
            let (c, s) = rope.cos_sin(&pos).unwrap(); // (2, 1, 5, hd)
            let hd = c.dim(3).unwrap();
            let x = Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (2, 3, 5, hd), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let probe = Tensor::randn(0f32, 1.0, (2, 3, 5, hd), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let op = rotary(&x, &c, &s).unwrap();
            let composite = apply_rotary(&x, &c, &s).unwrap();
            let max_diff = |a: &Tensor, b: &Tensor| -> f64 {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            };
            assert_eq!(max_diff(&op, &composite), 0.0, "{dtype:?} forward");
            let g_op = (op * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_comp = (composite * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (a, b) = (g_op.get(&x).unwrap(), g_comp.get(&x).unwrap());
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
            assert!(
                max_diff(a, b) < tol,
                "{dtype:?} backward: {}",
                max_diff(a, b)
            );
            // And it rotates: not the identity.
            assert!(max_diff(&rotary(&x, &c, &s).unwrap(), &x) > 0.1);
        }
        let bad = Tensor::zeros((1, 2, 5, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(rotary(&bad, &bad, &bad).is_err());
    }
}
