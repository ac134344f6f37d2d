//! Helpers shared by the crate's unit tests.

use candle_core::{DType, Tensor};

/// The largest absolute elementwise difference of two tensors of the same shape, as f64.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .expect("tensors of the same shape")
}
