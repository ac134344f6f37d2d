//! The projection of a few rows, `x · Wᵀ` for `x` of at most [`FEW_ROWS`] rows: what decoding
//! does (one new token per sequence: sample generations at each evaluation, chat completions).
//! A general matmul packs the weight into panels on every call, reading and writing the whole
//! weight before reading it again, which for a few rows costs more than the products; here each
//! output is a dot product of an input row with a weight row, so the weight is read once, in
//! order. Backward is the plain matmuls, so a tiny training batch that lands here trains as before.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::contiguous;

/// Up to this many rows take the dot-product path.
pub const FEW_ROWS: usize = 8;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 64;

struct FewRowsMatmul;

impl CustomOp2 for FewRowsMatmul {
    fn name(&self) -> &'static str {
        "few-rows-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k, n) = super::ops::linear_dims("few-rows matmul", x_layout, w_layout)?;
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (x, w) else {
            candle_core::bail!("few-rows matmul runs in f32");
        };
        let (x, w) = (contiguous(x, x_layout)?, contiguous(w, w_layout)?);
        let dot = dot_kernel();
        // Outputs by weight row (n, rows), so each task fills a contiguous block.
        let mut by_weight_row = vec![0f32; n * rows];
        by_weight_row
            .par_chunks_mut(ROWS_PER_TASK * rows)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                for (j, outs) in out.chunks_exact_mut(rows).enumerate() {
                    let wj = &w[(first + j) * k..(first + j + 1) * k];
                    for (m, o) in outs.iter_mut().enumerate() {
                        *o = dot(&x[m * k..(m + 1) * k], wj);
                    }
                }
            });
        let mut out = vec![0f32; rows * n];
        for (j, outs) in by_weight_row.chunks_exact(rows).enumerate() {
            for (m, &v) in outs.iter().enumerate() {
                out[m * n + j] = v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // dy (rows, n): dx = dy · W, dW = dyᵀ · x.
        Ok((Some(grad.matmul(w)?), Some(grad.t()?.matmul(x)?)))
    }
}

/// The dot product with the widest vectors this processor has.
fn dot_kernel() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return |a, b| unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return |a, b| unsafe { dot_avx2(a, b) };
        }
    }
    dot
}

/// Sixteen running sums, so the compiler keeps them in vector registers.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (pa, pb) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += pa[i] * pb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

/// `x · wᵀ` for `x` (rows, in) and `w` (out, in) through the dot-product path when it applies (a
/// few rows, f32 on the CPU, contiguous weight); `None` otherwise.
pub fn few_rows_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let rows = x.dims2()?.0;
    if rows == 0
        || rows > FEW_ROWS
        || !x.device().is_cpu()
        || x.dtype() != DType::F32
        || w.dtype() != DType::F32
        || !w.is_contiguous()
    {
        return Ok(None);
    }
    x.contiguous()?.apply_op2(w, FewRowsMatmul).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{Device, Var};

    /// Equal to the matmul (sizes with and without a tail of 16, more weight rows than one task),
    /// with both gradients.
    #[test]
    fn equals_matmul_forward_and_backward() {
        let dev = Device::Cpu;
        for (rows, k, n) in [(1, 256, 200), (3, 37, 130), (8, 64, 64)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (rows, k), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 1., (n, k), &dev).unwrap()).unwrap();
            let plain = x.matmul(&w.t().unwrap()).unwrap();
            let few = few_rows_matmul(&x, &w).unwrap().expect("the path applies");
            assert!(max_abs_diff(&plain, &few) < 1e-4, "{rows}x{k}x{n}");
            let c = Tensor::randn(0f32, 1., (rows, n), &dev).unwrap();
            let grads = |y: &Tensor| (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let (gp, gf) = (grads(&plain), grads(&few));
            for v in [x.as_tensor(), w.as_tensor()] {
                assert!(max_abs_diff(gp.get(v).unwrap(), gf.get(v).unwrap()) < 1e-4);
            }
        }
        let many = Tensor::zeros((9, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        assert!(few_rows_matmul(&many, &w).unwrap().is_none());
    }
}
