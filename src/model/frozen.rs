//! The matmul of a frozen weight, `x · Wᵀ`, whose backward pass returns only the input's
//! gradient. candle's own matmul backward computes the gradients of both operands, so under LoRA
//! every frozen base projection would still pay for `xᵀ · dy` (about a third of a step's FLOPs)
//! and throw it away. Forward is the same CPU gemm candle's matmul runs.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k, n) = super::ops::linear_dims("frozen matmul", x_layout, w_layout)?;
        let w_t = w_layout.transpose(0, 1)?; // (k, n), a view
        let out = x.matmul(w, (1, rows, n, k), x_layout, &w_t)?;
        Ok((out, Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Nothing to return where x learns nothing (the first layer's input, from a frozen
        // embedding).
        if !x.track_op() {
            return Ok((None, None));
        }
        Ok((Some(grad.matmul(w)?), None)) // (rows, n) · (n, k)
    }
}

/// `x · wᵀ` for `x` (rows, in) and `w` (out, in), where only `x` gets a gradient. Off the CPU it
/// is the plain matmul, whose backward skips the frozen operand's product too (a patch of the
/// vendored candle's backward: `vendor/README.md`).
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.matmul(&w.t()?);
    }
    x.contiguous()?.apply_op2(w, FrozenMatmul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn equals_matmul_and_gives_only_the_input_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (6, 5), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1., (3, 5), &dev).unwrap();
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        let frozen = frozen_matmul(&x, &w).unwrap();
        assert!(max_abs_diff(&plain, &frozen) < 1e-6);
        // d(sum(y · c))/dx through both paths.
        let c = Tensor::randn(0f32, 1., (6, 3), &dev).unwrap();
        let g_plain = (&plain * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_frozen = (&frozen * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (g_plain.get(&x).unwrap(), g_frozen.get(&x).unwrap());
        assert!(max_abs_diff(a, b) < 1e-5);
        assert!(
            g_frozen.get(&w).is_none(),
            "the frozen weight gets no gradient"
        );
    }

    /// The plain matmul that a GPU runs: candle's backward (patched) computes the product for
    /// the input's gradient only when the other operand is outside the graph, and still both
    /// when both are variables.
    #[test]
    fn composite_backward_skips_a_frozen_operand() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (6, 5), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1., (4, 5), &dev).unwrap();
        let wt = w.t().unwrap();
        assert!(!wt.track_op());
        let y = x.matmul(&wt).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        // d/dx Σ(x·wᵀ) = 1 · w: every row of the gradient is the column sums of wᵀ.
        let want = Tensor::ones((6, 4), candle_core::DType::F32, &dev)
            .unwrap()
            .matmul(&w)
            .unwrap();
        assert!(max_abs_diff(g.get(&x).unwrap(), &want) < 1e-5);
        assert!(g.get(&wt).is_none(), "no product for the frozen operand");
        let wv = Var::from_tensor(&w).unwrap();
        let wvt = wv.t().unwrap();
        let g = x
            .matmul(&wvt)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // (candle drops the gradients of intermediate nodes such as `wvt` once used.)
        assert!(g.get(&wv).is_some() && g.get(&x).is_some());
    }
}
