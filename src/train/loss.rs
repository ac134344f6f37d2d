//! Token-level cross-entropy on shifted labels, as transformers computes it: the logits at position
//! `t` predict the token at `t + 1`. Each label carries a weight (1 counted, 0 ignored), so padding
//! today and SFT's assistant-only mask later use the same function.
//!
//! The loss comes back *summed*, with the counted tokens beside it, so the caller can normalise
//! over every micro-batch of a gradient-accumulation window.

use candle_core::{D, DType, Result, Tensor};

use crate::model::ops::{cross_entropy_rows, fused_available};

/// Sums over one batch.
#[derive(Debug, Clone)]
pub struct LossSums {
    /// Σ weight · (−log p(label)), a scalar that carries the graph for backward.
    pub loss_sum: Tensor,
    /// Σ weight: the number of counted label tokens.
    pub tokens: f64,
    /// Σ weight · [argmax = label].
    pub correct: f64,
}

/// `logits` (B, T, V), `labels` (B, T) u32, `label_weights` (B, T) with the weight of each label
/// position (position 0 is never a label and is ignored).
pub fn shifted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<LossSums> {
    let (b, t, v) = logits.dims3()?;
    let n = b * (t - 1);
    let logits = logits.narrow(1, 0, t - 1)?.reshape((n, v))?; // (N, V)
    let targets = labels.narrow(1, 1, t - 1)?.reshape(n)?; // (N)
    let weights = label_weights
        .narrow(1, 1, t - 1)?
        .reshape(n)?
        .to_dtype(logits.dtype())?; // (N)
    let per_token = if fused_available(&logits) {
        cross_entropy_rows(&logits, &targets)? // (N), fused forward and backward
    } else {
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?; // (N, V)
        log_probs
            .gather(&targets.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()? // (N)
    };
    let loss_sum = (per_token * &weights)?.sum_all()?;
    let tokens = weights
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    let hits = logits
        .detach()
        .argmax(D::Minus1)?
        .eq(&targets)?
        .to_dtype(DType::F64)?;
    let correct = (hits * weights.to_dtype(DType::F64)?)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(LossSums {
        loss_sum,
        tokens,
        correct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computed_cross_entropy_and_ignores_masked_labels() {
        let dev = Device::Cpu;
        // One row, T = 3, V = 2. Predictions at t=0 and t=1 for labels 1 and 0.
        let logits = Tensor::new(&[[[0.0f64, 0.0], [2.0, 0.0], [5.0, 5.0]]], &dev).unwrap();
        let labels = Tensor::new(&[[0u32, 1, 0]], &dev).unwrap();
        let w = Tensor::new(&[[0f64, 1.0, 1.0]], &dev).unwrap();
        let s = shifted_cross_entropy(&logits, &labels, &w).unwrap();
        // -log softmax([0,0])[1] = ln 2; -log softmax([2,0])[0] = ln(1 + e^-2)
        let expected = 2f64.ln() + (1.0 + (-2f64).exp()).ln();
        let got: f64 = s.loss_sum.to_scalar().unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert_eq!(s.tokens, 2.0);
        // argmax of [0,0] is index 0 (label 1: miss); argmax [2,0] = 0 (label 0: hit)
        assert_eq!(s.correct, 1.0);
        // Masking the second label leaves only ln 2.
        let w = Tensor::new(&[[0f64, 1.0, 0.0]], &dev).unwrap();
        let s = shifted_cross_entropy(&logits, &labels, &w).unwrap();
        assert!((s.loss_sum.to_scalar::<f64>().unwrap() - 2f64.ln()).abs() < 1e-12);
        assert_eq!(s.tokens, 1.0);
    }
}
