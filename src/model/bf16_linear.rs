//! The projection `x · Wᵀ` in the mixed-precision mode (`"precision": "bf16"`): both products of
//! backward too (`dx = dy · W`, `dW = dyᵀ · x`) run as bf16 products with f32 accumulation
//! ([`super::bf16_gemm`]), as PyTorch's CPU autocast runs a linear layer. The weights, their
//! gradients and the optimiser stay f32 (master weights); only the products' inputs are rounded.
//! A frozen weight (LoRA's base) gets no gradient: backward skips `dW` when the weight is not part
//! of the graph.
//!
//! On a GPU the same mode is [`cast_linear`]: both operands cast to bf16 and multiplied by cuBLAS
//! (bf16 inputs, f32 accumulation), the product cast back to f32, as PyTorch's CUDA autocast runs
//! a linear layer; its backward is candle's (the casts' gradients are casts), so every product of
//! backward is a bf16 product too. Unlike the CPU op, its output is rounded to bf16 before the
//! cast back, as autocast's is.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::bf16_gemm::{Mat, available, matmul};
use super::ops::contiguous;

/// Whether [`bf16_linear`] runs for `x`: a CPU f32 tensor on a processor with AVX512-BF16.
pub fn usable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && available()
}

/// `x (rows, in) · wᵀ` for `w (out, in)`, differentiable in both (in `w` only when it tracks a
/// graph), with bf16 products. Callers check [`usable`].
pub fn bf16_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Bf16Linear)
}

/// Whether [`cast_linear`] runs for `x`: an f32 tensor on a GPU (candle's bf16 kernels need compute
/// capability 8.0 or later, as every GPU Wick targets has).
pub fn cast_usable(x: &Tensor) -> bool {
    !x.device().is_cpu() && x.dtype() == DType::F32
}

/// `x (rows, in) · wᵀ` with both operands cast to bf16 and the product cast back to f32,
/// differentiable through the casts. Device-independent (tested on the CPU); used on GPUs.
pub fn cast_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::BF16)?
        .matmul(&w.to_dtype(DType::BF16)?.t()?)?
        .to_dtype(DType::F32)
}

struct Bf16Linear;

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous(v, l),
        _ => candle_core::bail!("bf16 linear: f32 operands only"),
    }
}

impl CustomOp2 for Bf16Linear {
    fn name(&self) -> &'static str {
        "bf16-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k, n) = super::ops::linear_dims("bf16 linear", xl, wl)?;
        let (x, w) = (f32s(xs, xl)?, f32s(ws, wl)?);
        // B = Wᵀ: element (p, j) is w[j·k + p].
        let y = matmul(
            Mat {
                data: x,
                rs: k,
                cs: 1,
            },
            Mat {
                data: w,
                rs: 1,
                cs: k,
            },
            rows,
            n,
            k,
        );
        Ok((CpuStorage::F32(y), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (
            candle_core::Storage::Cpu(gs),
            candle_core::Storage::Cpu(ws),
            candle_core::Storage::Cpu(xs),
        ) = (&*gs, &*ws, &*xs)
        else {
            candle_core::bail!("bf16 linear backward runs on the CPU");
        };
        let (g, wv) = (f32s(gs, gl)?, f32s(ws, wl)?);
        // dx = dy (rows, n) · W (n, k)
        let dx = matmul(
            Mat {
                data: g,
                rs: n,
                cs: 1,
            },
            Mat {
                data: wv,
                rs: k,
                cs: 1,
            },
            rows,
            k,
            n,
        );
        let dx = Tensor::from_vec(dx, (rows, k), x.device())?;
        if !w.track_op() {
            return Ok((Some(dx), None));
        }
        // dW = dyᵀ (n, rows) · x (rows, k)
        let dw = matmul(
            Mat {
                data: g,
                rs: 1,
                cs: n,
            },
            Mat {
                data: f32s(xs, xl)?,
                rs: k,
                cs: 1,
            },
            n,
            k,
            rows,
        );
        Ok((Some(dx), Some(Tensor::from_vec(dw, (n, k), w.device())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bf16_gemm::{from_bf16, to_bf16};
    use candle_core::{Device, Var};

    fn rounded(t: &Tensor) -> Tensor {
        let v: Vec<f32> = t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|x| from_bf16(to_bf16(x)))
            .collect();
        Tensor::from_vec(v, t.shape(), t.device()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Forward and both gradients against f32 products of bf16-rounded operands (what the bf16
    /// products compute, up to the order of f32 accumulation).
    #[test]
    fn forward_and_backward_equal_products_of_rounded_operands() {
        if !available() {
            eprintln!("skipped: no AVX512-BF16 on this processor");
            return;
        }
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (37, 45), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (19, 45), &dev).unwrap()).unwrap();
        let c = Tensor::randn(0f32, 1., (37, 19), &dev).unwrap();
        let y = bf16_linear(&x, &w).unwrap();
        let expect = rounded(&x).matmul(&rounded(&w).t().unwrap()).unwrap();
        assert!(max_diff(&y, &expect) < 1e-4);
        let grads = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        // d/dx = c · W, d/dW = cᵀ · x, each with the products' inputs rounded.
        let dx = rounded(&c).matmul(&rounded(&w)).unwrap();
        let dw = rounded(&c).t().unwrap().matmul(&rounded(&x)).unwrap();
        assert!(max_diff(grads.get(&x).unwrap(), &dx) < 1e-4);
        assert!(max_diff(grads.get(&w).unwrap(), &dw) < 1e-4);
        // A frozen weight: only the input's gradient.
        let frozen = w.as_tensor().detach();
        let g2 = (bf16_linear(&x, &frozen).unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g2.get(&x).unwrap(), &dx) < 1e-4);
        assert!(g2.get(&frozen).is_none());
        // And bf16 is not f32: the plain product differs by more than the tolerance above.
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&y, &plain) > 1e-3);
    }

    /// The GPU's path, run on the CPU: forward and both gradients are products of bf16-rounded
    /// operands, rounded to bf16 (within one bf16 rounding of the f32 reference: relative 2⁻⁸).
    #[test]
    fn cast_linear_is_a_product_of_rounded_operands_rounded() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (37, 45), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (19, 45), &dev).unwrap()).unwrap();
        let c = Tensor::randn(0f32, 1., (37, 19), &dev).unwrap();
        let y = cast_linear(&x, &w).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let close = |got: &Tensor, want: &Tensor| {
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = max_diff(got, want);
            assert!(
                d <= scale * 2f32.powi(-8) + 1e-6,
                "off by {d} (scale {scale})"
            );
            assert_eq!(max_diff(got, &rounded(got)), 0.0, "not rounded to bf16");
        };
        close(&y, &rounded(&x).matmul(&rounded(&w).t().unwrap()).unwrap());
        let grads = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = rounded(&c).matmul(&rounded(&w)).unwrap();
        let dw = rounded(&c).t().unwrap().matmul(&rounded(&x)).unwrap();
        close(grads.get(&x).unwrap(), &dx);
        close(grads.get(&w).unwrap(), &dw);
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&y, &plain) > 1e-3, "bf16 is not f32");
        assert!(!cast_usable(&x), "the CPU has its own bf16 op");
    }
}
