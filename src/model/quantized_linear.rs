//! The projection `x · Wᵀ` of a frozen quantised weight ([`super::quantized`]: NF4 or int8),
//! QLoRA's base: forward and the input-only backward (`dx = dy · W`) dequantise `W` on the fly,
//! 128 of its rows at a time, into a scratch block each parallel task owns, so no f32 copy of the
//! weight exists beyond that block. The weight is frozen: backward gives no gradient for it. Work
//! is split by rows of `x` (of `dy`): each task dequantises every block once per call, a cost of
//! `out · in` lookups against `2 · rows · out · in` multiply-adds.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{Dst, View, matmul};
use super::ops::contiguous;
use super::quantized::QuantWeight;

/// Rows of `W` dequantised at a time.
const W_ROWS: usize = 128;
/// Rows of `x` per parallel task, at least: a task dequantises the whole weight once, so the
/// rows are split into one task per thread where there are more.
const X_ROWS: usize = 256;

/// `x (rows, in) · Wᵀ` for the quantised weight `w` (out, in), differentiable in `x` only. CPU,
/// f32.
pub fn quantized_linear(x: &Tensor, w: &Arc<QuantWeight>) -> Result<Tensor> {
    let (_, k) = x.dims2()?;
    if k != w.shape().1 {
        candle_core::bail!(
            "quantised linear: x is (_, {k}) but the weight is {:?}",
            w.shape()
        );
    }
    x.contiguous()?.apply_op1(QuantizedLinear { w: w.clone() })
}

struct QuantizedLinear {
    w: Arc<QuantWeight>,
}

/// `y (rows × out) = x · Wᵀ`, or with `transposed`, `dx (rows × in) = dy · W`, for the quantised
/// `w` (out, in); [`super::lora_delta`] runs it as the base of an adapted projection.
pub(super) fn product(w: &QuantWeight, a: &[f32], rows: usize, transposed: bool) -> Vec<f32> {
    let (out, cols) = w.shape();
    // NF4's block statistics, dequantised once per call.
    let reader = w.rows();
    let width = if transposed { cols } else { out };
    let mut y = vec![0f32; rows * width];
    let dst = Dst::rows(&mut y, 0, width);
    let x_rows = rows
        .div_ceil(rayon::current_num_threads().max(1))
        .max(X_ROWS);
    (0..rows.div_ceil(x_rows)).into_par_iter().for_each(|t| {
        let r0 = t * x_rows;
        let m = x_rows.min(rows - r0);
        let mut scratch = vec![0f32; W_ROWS * cols];
        for o0 in (0..out).step_by(W_ROWS) {
            let n = W_ROWS.min(out - o0);
            reader.read(o0, &mut scratch[..n * cols]);
            // SAFETY: this task alone writes rows r0..r0+m of the output.
            unsafe {
                if transposed {
                    // dx[r0.., :] += dy[r0.., o0..o0+n] · W[o0..o0+n, :]
                    matmul(
                        dst.at(r0 * cols),
                        View::rows(a, r0 * out + o0, out),
                        View::rows(&scratch, 0, cols),
                        (m, cols, n),
                        1.0,
                        o0 > 0,
                    );
                } else {
                    // y[r0.., o0..o0+n] = x[r0.., :] · W[o0..o0+n, :]ᵀ
                    matmul(
                        dst.at(r0 * out + o0),
                        View::rows(a, r0 * cols, cols),
                        View::rows_t(&scratch, 0, cols),
                        (m, n, cols),
                        1.0,
                        false,
                    );
                }
            }
        }
    });
    y
}

impl CustomOp1 for QuantizedLinear {
    fn name(&self) -> &'static str {
        "quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("quantised linear: f32 inputs only");
        };
        let (rows, _) = l.shape().dims2()?;
        let y = product(&self.w, contiguous(v, l)?, rows, false);
        Ok((CpuStorage::F32(y), Shape::from((rows, self.w.shape().0))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Nothing to return where x learns nothing (the first layer's input, from a frozen
        // embedding).
        if !x.track_op() {
            return Ok(None);
        }
        let grad = grad.contiguous()?;
        let (rows, _) = grad.dims2()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let dx = product(&self.w, &g, rows, true);
        Ok(Some(Tensor::from_vec(
            dx,
            (rows, self.w.shape().1),
            grad.device(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Quantization;
    use crate::testing::{max_abs_diff, probe_grads};
    use candle_core::{Device, Var};

    /// Forward and the input gradient equal the dense products with the dequantised weight, for
    /// NF4 (with double quantisation) and int8, on shapes with partial blocks of `W` rows and of
    /// `x` rows.
    #[test]
    fn equals_the_dense_product_of_the_dequantised_weight() {
        let dev = Device::Cpu;
        let cases = [(5, 7, 64), (300, 200, 96), (40, 129, 70)];
        for (&(rows, out, k), kind) in cases
            .iter()
            .flat_map(|c| [(c, Quantization::Nf4), (c, Quantization::Int8)])
        {
            let w: Vec<f32> = (0..out * k)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
                .collect();
            let q = Arc::new(QuantWeight::quantize(&w, (out, k), kind, true));
            let dense = Tensor::from_vec(q.dequantize(), (out, k), &dev).unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (rows, k), &dev).unwrap()).unwrap();
            let c = Tensor::randn(0f32, 1., (rows, out), &dev).unwrap();
            let y = quantized_linear(&x, &q).unwrap();
            let y_ref = x.matmul(&dense.t().unwrap()).unwrap();
            assert!(
                max_abs_diff(&y, &y_ref) < 1e-4,
                "({rows},{out},{k}) forward"
            );
            let (g, g_ref) = (probe_grads(&y, &c), probe_grads(&y_ref, &c));
            let d = max_abs_diff(g.get(&x).unwrap(), g_ref.get(&x).unwrap());
            assert!(d < 1e-4, "({rows},{out},{k}) dx");
        }
    }
}
