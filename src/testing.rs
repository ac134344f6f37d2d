//! Helpers shared by the crate's unit tests.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

/// The largest absolute elementwise difference of two tensors of the same shape, as f64.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .expect("tensors of the same shape")
}

/// The gradients of `Σ y ⊙ probe`: a random linear functional of an op's output, so comparing two
/// ops' gradients under it compares their full backward passes.
pub(crate) fn probe_grads(y: &Tensor, probe: &Tensor) -> GradStore {
    (y * probe)
        .and_then(|l| l.sum_all()?.backward())
        .expect("a differentiable output of the probe's shape")
}
