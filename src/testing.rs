//! Helpers shared by the crate's unit tests.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

/// The largest absolute element of a tensor, as f64.
pub(crate) fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .and_then(|a| a.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .expect("a float tensor")
}

/// The largest absolute elementwise difference of two tensors of the same shape, as f64.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).expect("tensors of the same shape"))
}

/// The gradients of `Σ y ⊙ probe`: a random linear functional of an op's output, so comparing two
/// ops' gradients under it compares their full backward passes.
pub(crate) fn probe_grads(y: &Tensor, probe: &Tensor) -> GradStore {
    (y * probe)
        .and_then(|l| l.sum_all()?.backward())
        .expect("a differentiable output of the probe's shape")
}

/// Asserts that two gradient stores agree within `tol` (largest absolute difference) on each
/// named tensor.
pub(crate) fn assert_same_grads(a: &GradStore, b: &GradStore, of: &[(&str, &Tensor)], tol: f64) {
    for (name, t) in of {
        let d = max_abs_diff(
            a.get(t).expect("a gradient in the first store"),
            b.get(t).expect("a gradient in the second store"),
        );
        assert!(d < tol, "d{name} differs by {d}");
    }
}
