//! Token-level cross-entropy on shifted labels, as transformers computes it: the logits at position
//! `t` predict the token at `t + 1`. Each label carries a weight (1 counted, 0 ignored), so padding
//! today and SFT's assistant-only mask later use the same function.
//!
//! The loss comes back *summed*, with the counted tokens beside it, so the caller can normalise
//! over every micro-batch of a gradient-accumulation window.

use candle_core::{CpuStorage, D, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::model::Llama;
use crate::model::head_loss::frozen_head_cross_entropy;
use crate::model::ops::{cross_entropy_rows, cuda_kernels_on, fused_available};

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

/// Per-row sums over one batch (preference tuning's sequence log-probabilities).
#[derive(Debug, Clone)]
pub struct RowSums {
    /// (B): Σ over the row of weight · log p(label), carrying the graph for backward.
    pub log_probs: Tensor,
    /// Σ weight per row.
    pub tokens: Vec<f64>,
    /// Σ weight · [argmax = label] per row.
    pub correct: Vec<f64>,
}

/// `logits` (B, T, V), `labels` (B, T) u32, `label_weights` (B, T) with the weight of each label
/// position (position 0 is never a label and is ignored).
pub fn shifted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<LossSums> {
    token_terms(logits, labels, label_weights)?.batch_sums()
}

/// The same inputs as [`shifted_cross_entropy`], summed per row instead of over the batch, with
/// the sign of a log-probability: row `b` gets `Σ_t w[b,t] · log p(labels[b,t] | tokens before)`.
pub fn shifted_row_log_probs(
    logits: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<RowSums> {
    token_terms(logits, labels, label_weights)?.row_sums()
}

/// [`shifted_cross_entropy`] of the logits `net` makes from its final hidden states `hidden`
/// (B, T, C, [`Llama::forward_hidden`]). A frozen head (LoRA's) goes through the fused head loss
/// ([`crate::model::head_loss`]): no (B, T, V) logits are kept, and only counted positions are
/// computed. A `hidden` without a graph (evaluation) computes no gradient.
pub fn model_cross_entropy(
    net: &Llama,
    hidden: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<LossSums> {
    model_token_terms(net, hidden, labels, label_weights)?.batch_sums()
}

/// [`shifted_row_log_probs`] from final hidden states, as [`model_cross_entropy`].
pub fn model_row_log_probs(
    net: &Llama,
    hidden: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<RowSums> {
    model_token_terms(net, hidden, labels, label_weights)?.row_sums()
}

fn model_token_terms(
    net: &Llama,
    hidden: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<TokenTerms> {
    match net.frozen_head() {
        Some(w) if fused_available(hidden) && hidden.dtype() == DType::F32 => {
            head_token_terms(hidden, w, labels, label_weights)
        }
        _ => token_terms(&net.head(hidden)?, labels, label_weights),
    }
}

/// The labelled positions of a batch: row `r`, position `p` predicts the label at `p + 1`; the last
/// position of a row predicts nothing (target 0, weight 0).
fn shifted_targets(labels: &Tensor, label_weights: &Tensor) -> Result<(Vec<u32>, Vec<f64>)> {
    let labels = labels.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let weights = label_weights.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let n: usize = labels.iter().map(Vec::len).sum();
    let mut targets = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for (ls, ws) in labels.iter().zip(&weights) {
        let t = ls.len();
        for p in 0..t {
            let next = p + 1 < t;
            targets.push(if next { ls[p + 1] } else { 0 });
            w.push(if next { ws[p + 1] } else { 0.0 });
        }
    }
    Ok((targets, w))
}

/// Per-row counted tokens and weighted hits, from flat per-position weights, argmaxes and
/// targets of rows of `t` positions.
fn row_counts(w: &[f64], best: &[u32], targets: &[u32], t: usize) -> (Vec<f64>, Vec<f64>) {
    let tokens = w.chunks(t).map(|row| row.iter().sum()).collect();
    let correct = (0..w.len() / t.max(1))
        .map(|r| {
            (r * t..(r + 1) * t)
                .filter(|&i| best[i] == targets[i])
                .map(|i| w[i])
                .sum()
        })
        .collect();
    (tokens, correct)
}

/// The fused path: the head's product and the cross-entropy over counted positions only.
fn head_token_terms(
    hidden: &Tensor,
    head: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<TokenTerms> {
    let (b, t, c) = hidden.dims3()?;
    let (targets, w) = shifted_targets(labels, label_weights)?;
    let counts: Vec<bool> = w.iter().map(|&x| x != 0.0).collect();
    let flat = hidden.reshape((b * t, c))?;
    let terms = frozen_head_cross_entropy(&flat, head, &targets, &counts)?;
    let weight_t = Tensor::from_slice(&w, b * t, hidden.device())?.to_dtype(DType::F32)?;
    let weighted = (terms.per_token * &weight_t)?.reshape((b, t))?;
    let (tokens, correct) = row_counts(&w, &terms.best, &targets, t);
    Ok(TokenTerms {
        weighted,
        tokens,
        correct,
    })
}

/// Weighted per-position cross-entropy, (B, T') with the graph, and per-row counts.
struct TokenTerms {
    weighted: Tensor,
    tokens: Vec<f64>,
    correct: Vec<f64>,
}

impl TokenTerms {
    /// Summed over the batch.
    fn batch_sums(self) -> Result<LossSums> {
        Ok(LossSums {
            loss_sum: self.weighted.sum_all()?,
            tokens: self.tokens.iter().sum(),
            correct: self.correct.iter().sum(),
        })
    }

    /// Summed per row, with a log-probability's sign.
    fn row_sums(self) -> Result<RowSums> {
        Ok(RowSums {
            log_probs: self.weighted.sum(1)?.neg()?,
            tokens: self.tokens,
            correct: self.correct,
        })
    }
}

fn token_terms(logits: &Tensor, labels: &Tensor, label_weights: &Tensor) -> Result<TokenTerms> {
    if fused_available(logits) && logits.is_contiguous() {
        return fused_token_terms(logits, labels, label_weights);
    }
    composite_token_terms(logits, labels, label_weights)
}

/// Any device: the (B·(T−1), V) logits that have a label, log-softmax and gather.
fn composite_token_terms(
    logits: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<TokenTerms> {
    let (b, t, v) = logits.dims3()?;
    let n = b * (t - 1);
    let logits = logits.narrow(1, 0, t - 1)?.reshape((n, v))?; // (N, V)
    let targets = labels.narrow(1, 1, t - 1)?.reshape(n)?; // (N)
    let weights = label_weights
        .narrow(1, 1, t - 1)?
        .reshape(n)?
        .to_dtype(logits.dtype())?; // (N)
    let per_token = if cuda_kernels_on(&logits) {
        // A GPU with Wick's kernels: never the (N, V) log-probs.
        cross_entropy_rows(&logits.contiguous()?, &targets.contiguous()?)?
    } else {
        candle_nn::ops::log_softmax(&logits, D::Minus1)? // (N, V)
            .gather(&targets.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?
    }; // (N)
    let weighted = (per_token * &weights)?.reshape((b, t - 1))?;
    let w64 = weights.to_dtype(DType::F64)?.reshape((b, t - 1))?;
    let tokens = w64.sum(1)?.to_vec1::<f64>()?;
    let hits = logits
        .detach()
        .argmax(D::Minus1)?
        .eq(&targets)?
        .to_dtype(DType::F64)?
        .reshape((b, t - 1))?;
    let correct = (hits * w64)?.sum(1)?.to_vec1::<f64>()?;
    Ok(TokenTerms {
        weighted,
        tokens,
        correct,
    })
}

/// The CPU path: cross-entropy over every position of the logits as they lie, the last position
/// of each row given weight 0, so the (B·(T−1), V) slice is never copied out (nor, backward,
/// copied back into a zero tensor of the logits' size); argmax in one parallel pass.
fn fused_token_terms(
    logits: &Tensor,
    labels: &Tensor,
    label_weights: &Tensor,
) -> Result<TokenTerms> {
    let (b, t, v) = logits.dims3()?;
    let n = b * t;
    let (targets, w) = shifted_targets(labels, label_weights)?;
    let flat = logits.reshape((n, v))?;
    let device = logits.device();
    let target_t = Tensor::from_vec(targets.clone(), n, device)?;
    let weight_t = Tensor::from_slice(&w, n, device)?.to_dtype(logits.dtype())?;
    let per_token = cross_entropy_rows(&flat, &target_t)?; // (N)
    let weighted = (per_token * &weight_t)?.reshape((b, t))?;
    let best = row_argmax(&flat)?;
    let (tokens, correct) = row_counts(&w, &best, &targets, t);
    Ok(TokenTerms {
        weighted,
        tokens,
        correct,
    })
}

/// The index of each row's largest value (the first of equal ones, as candle's argmax), for a
/// contiguous CPU f32/f64 (N, V) tensor.
fn row_argmax(x: &Tensor) -> Result<Vec<u32>> {
    fn rows<R: PartialOrd + Copy + Send + Sync>(xs: &[R], v: usize) -> Vec<u32> {
        xs.par_chunks(v)
            .map(|row| {
                let mut best = 0;
                for (j, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = j;
                    }
                }
                best as u32
            })
            .collect()
    }
    let (_, v) = x.dims2()?;
    let (storage, layout) = x.storage_and_layout();
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("argmax expects contiguous logits");
    };
    Ok(match &*storage {
        Storage::Cpu(CpuStorage::F32(xs)) => rows(&xs[a..b], v),
        Storage::Cpu(CpuStorage::F64(xs)) => rows(&xs[a..b], v),
        _ => candle_core::bail!("argmax of CPU f32/f64 logits only"),
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

    #[test]
    fn the_cpu_path_matches_the_composite_one_with_gradients() {
        let dev = Device::Cpu;
        let (b, t, v) = (3, 9, 13);
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f64, 2.0, (b, t, v), &dev).unwrap())
            .unwrap();
        let labels: Vec<u32> = (0..b * t).map(|i| ((i * 5) % v) as u32).collect();
        let labels = Tensor::from_vec(labels, (b, t), &dev).unwrap();
        let w: Vec<f64> = (0..b * t).map(|i| [1.0, 0.0, 0.5][i % 3]).collect();
        let w = Tensor::from_vec(w, (b, t), &dev).unwrap();
        let fused = fused_token_terms(&x, &labels, &w).unwrap();
        let composite = composite_token_terms(&x, &labels, &w).unwrap();
        let (lf, lc): (f64, f64) = (
            fused.weighted.sum_all().unwrap().to_scalar().unwrap(),
            composite.weighted.sum_all().unwrap().to_scalar().unwrap(),
        );
        assert!((lf - lc).abs() < 1e-12, "{lf} vs {lc}");
        assert_eq!(fused.tokens, composite.tokens);
        assert_eq!(fused.correct, composite.correct);
        // Per-row sums, as preference tuning reads them, agree too, gradients included.
        let rows = |t: &TokenTerms| t.weighted.sum(1).unwrap();
        let d = crate::testing::max_abs_diff(&rows(&fused), &rows(&composite));
        assert!(d < 1e-12, "row sums differ by {d}");
        let probe = Tensor::new(&[0.5f64, -2.0, 1.5], &dev).unwrap();
        let gf = (rows(&fused) * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (rows(&composite) * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = crate::testing::max_abs_diff(gf.get(&x).unwrap(), gc.get(&x).unwrap());
        assert!(d < 1e-13, "gradients differ by {d}");
    }
}
