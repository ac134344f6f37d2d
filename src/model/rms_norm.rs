//! Fused RMSNorm with its backward pass, for the CPU (and, with the `cuda` feature, the GPU:
//! [`super::cuda_ops`], off unless [`super::ops::cuda_kernels_on`]).
//!
//! `y = x · r · w` with `r = 1 / √(mean(x²) + ε)` over each row of the last dimension. Candle's
//! own fast `rms_norm` has no backward (a model built on it silently gets no gradients), and the
//! differentiable composite (`sqr`, `mean_keepdim`, `+ ε`, `sqrt`, `recip`, two broadcast
//! multiplies) makes about six single-threaded passes forward and more backward, keeping each
//! intermediate for backward. This op makes one parallel pass forward and one backward, keeping
//! nothing but its input:
//!
//! - `x̂ = x · r`, `dw = Σ_rows g ⊙ x̂`,
//! - `dx = r · (g ⊙ w − x̂ · mean(g ⊙ w ⊙ x̂))` per row.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{Real, contiguous};

/// Rows per rayon task in the backward pass (each task sums its own share of `dw`).
const ROWS_PER_TASK: usize = 64;

/// RMSNorm of `x` (..., C) with weight `w` (C), differentiable in both.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let c = w.dim(0)?;
    if x.dim(candle_core::D::Minus1)? != c || w.rank() != 1 {
        candle_core::bail!(
            "rms_norm: input {:?} does not end in the weight's size {:?}",
            x.dims(),
            w.dims()
        );
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps, c })
}

fn forward<R: Real>(x: &[R], w: &[R], c: usize, eps: f64) -> Vec<R> {
    let (inv_c, eps) = (R::of(1.0 / c as f64), R::of(eps));
    let mut out = vec![R::ZERO; x.len()];
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, xs)| {
            let r = R::of(1.0).div((sum_sq(xs) * inv_c).add(eps).sqrt());
            for ((o, &xv), &wv) in o.iter_mut().zip(xs).zip(w) {
                *o = xv * r * wv;
            }
        });
    out
}

fn sum_sq<R: Real>(xs: &[R]) -> R {
    xs.iter().fold(R::ZERO, |a, &v| a.add(v * v))
}

/// `dx` for every row followed by one row of `dw`: (N + 1) × C values.
fn backward<R: Real>(x: &[R], w: &[R], g: &[R], c: usize, eps: f64) -> Vec<R> {
    let (inv_c, eps) = (R::of(1.0 / c as f64), R::of(eps));
    let n = x.len() / c;
    let mut out = vec![R::ZERO; (n + 1) * c];
    let (dx, dw_out) = out.split_at_mut(n * c);
    let task = ROWS_PER_TASK * c;
    let dw = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(g.par_chunks(task)))
        .map(|(dxs, (xs, gs))| {
            let mut dw = vec![R::ZERO; c];
            for (dx, (xs, gs)) in dxs.chunks_mut(c).zip(xs.chunks(c).zip(gs.chunks(c))) {
                let r = R::of(1.0).div((sum_sq(xs) * inv_c).add(eps).sqrt());
                let mut dot = R::ZERO;
                for j in 0..c {
                    let xhat = xs[j] * r;
                    dw[j] = dw[j].add(gs[j] * xhat);
                    dot = dot.add(gs[j] * w[j] * xhat);
                }
                let mean = dot * inv_c;
                for j in 0..c {
                    dx[j] = r * (gs[j] * w[j] - xs[j] * r * mean);
                }
            }
            dw
        })
        .collect::<Vec<_>>();
    // The tasks' partial sums added in task order: rayon's `reduce` pairs them as its splits
    // fell, so the last bits of `dw` would depend on scheduling (and a resumed job would drift
    // from an uninterrupted one).
    for part in dw {
        for (a, b) in dw_out.iter_mut().zip(part) {
            *a = a.add(b);
        }
    }
    out
}

struct RmsNormOp {
    eps: f64,
    c: usize,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, eps) = (self.c, self.eps);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(forward(contiguous(x, l1)?, contiguous(w, l2)?, c, eps))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(forward(contiguous(x, l1)?, contiguous(w, l2)?, c, eps))
            }
            _ => candle_core::bail!("rms_norm supports f32 and f64 on CPU, input and weight alike"),
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
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = super::cuda_ops::rms_norm_fwd(s1, l1, s2, l2, self.c, self.eps)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count() / self.c;
        let both = x.apply_op3_no_bwd(
            w,
            &grad_res.contiguous()?,
            &RmsNormGrad {
                eps: self.eps,
                c: self.c,
            },
        )?; // (N + 1, C)
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = both.narrow(0, n, 1)?.reshape(self.c)?;
        Ok((Some(dx), Some(dw)))
    }
}

struct RmsNormGrad {
    eps: f64,
    c: usize,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
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
        let (c, eps) = (self.c, self.eps);
        let n = l1.shape().elem_count() / c;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => {
                CpuStorage::F32(backward(
                    contiguous(x, l1)?,
                    contiguous(w, l2)?,
                    contiguous(g, l3)?,
                    c,
                    eps,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => {
                CpuStorage::F64(backward(
                    contiguous(x, l1)?,
                    contiguous(w, l2)?,
                    contiguous(g, l3)?,
                    c,
                    eps,
                ))
            }
            _ => candle_core::bail!("rms_norm backward supports f32 and f64 on CPU"),
        };
        Ok((out, Shape::from((n + 1, c))))
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
        let n = l1.shape().elem_count() / self.c;
        let both = super::cuda_ops::rms_norm_bwd((s1, l1), (s2, l2), (s3, l3), self.c, self.eps)?;
        Ok((both, Shape::from((n + 1, self.c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{D, DType, Device, Var};

    /// The differentiable composite the model used before, as the reference.
    fn composite(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
        let inv_rms = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps)
            .unwrap()
            .sqrt()
            .unwrap()
            .recip()
            .unwrap();
        x.broadcast_mul(&inv_rms).unwrap().broadcast_mul(w).unwrap()
    }

    #[test]
    fn matches_the_composite_forward_and_backward() {
        let dev = Device::Cpu;
        // 150 rows: more than two backward tasks, the last one partial.
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.5, (3, 50, 7), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.3, 7, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (3, 50, 7), &dev).unwrap();
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let reference = composite(x.as_tensor(), w.as_tensor(), 1e-5);
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 1e-13, "forward differs by {d}");
        let g1 = crate::testing::probe_grads(&fused, &probe);
        let g2 = crate::testing::probe_grads(&reference, &probe);
        let of = [("x", x.as_tensor()), ("w", w.as_tensor())];
        crate::testing::assert_same_grads(&g1, &g2, &of, 1e-12);
    }

    #[test]
    fn f32_agrees_with_f64_and_bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (4, 16), &dev).unwrap();
        let w = Tensor::randn(1f64, 0.2, 16, &dev).unwrap();
        let y64 = rms_norm(&x, &w, 1e-6).unwrap();
        let y32 = rms_norm(
            &x.to_dtype(DType::F32).unwrap(),
            &w.to_dtype(DType::F32).unwrap(),
            1e-6,
        )
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
        assert!(max_abs_diff(&y64, &y32) < 1e-5);
        assert!(rms_norm(&x, &w.narrow(0, 0, 8).unwrap(), 1e-6).is_err());
    }
}
