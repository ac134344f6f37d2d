//! What the step loop minimises, behind the [`Objective`] trait: one accumulation window's forward
//! and backward, and an evaluation pass. Pretraining and SFT share [`TokenObjective`] (token-level
//! cross-entropy over batches of rows, normalised by the window's counted tokens); preference
//! tuning brings its own (`super::dpo`).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::job::TrainError;
use super::loss::model_cross_entropy;
use super::optim::accumulate;
use crate::model::Llama;

/// One micro-batch of rows ready for the model.
pub(crate) struct Batch {
    pub input_ids: Tensor,     // (B, T) u32
    pub positions: Tensor,     // (B, T) u32
    pub label_weights: Tensor, // (B, T)
    /// Additive attention mask (block-diagonal for packed SFT rows); `None` is plain causal.
    pub mask: Option<Tensor>,
    /// Labels that count towards the loss.
    pub counted_tokens: usize,
    /// Real (non-padding) input tokens, for throughput.
    pub input_tokens: usize,
}

/// Training or validation rows of a token-level objective.
pub(super) trait RowSet {
    fn len(&self) -> usize;
    fn batch(&self, indices: &[usize]) -> Result<Batch, TrainError>;
}

/// What one accumulation window produced, before the guards and the update.
pub(super) struct Window {
    pub grads: GradStore,
    /// The window's loss (what its gradients are the gradients of), before the update.
    pub loss: f64,
    /// Correct next-token predictions among the counted tokens, as a fraction.
    pub token_accuracy: f64,
    /// Tokens the loss counted (trained tokens).
    pub counted_tokens: usize,
    /// Real input tokens, for throughput.
    pub input_tokens: usize,
    /// The objective's own metrics (DPO's rewards), under their reported names.
    pub extra: BTreeMap<String, f64>,
}

/// One pass over the validation rows.
pub(super) struct Evaluation {
    pub loss: f64,
    pub perplexity: f64,
    pub token_accuracy: f64,
    /// Under their reported names, `valid_` included.
    pub extra: BTreeMap<String, f64>,
}

/// How a method turns rows into a loss.
pub(super) trait Objective {
    /// Training items the sampler deals out (rows, or preference pairs).
    fn train_len(&self) -> usize;
    fn valid_len(&self) -> usize;
    /// Forward and backward over a window: `micro` holds each micro-batch's item indices. The
    /// gradients are those of the window's loss; a loss that blew up is an error here.
    fn window(
        &self,
        net: &Llama,
        micro: &[Vec<usize>],
        vars: &[Var],
        step: u64,
    ) -> Result<Window, TrainError>;
    fn evaluate(&self, net: &Llama, batch_size: usize) -> Result<Evaluation, TrainError>;
}

/// Token-level cross-entropy (pretraining and SFT): each micro-batch's loss summed and divided by
/// the window's counted tokens, so the summed gradients are those of the window's mean.
pub(super) struct TokenObjective<'a> {
    pub train: &'a dyn RowSet,
    /// Validation rows per domain: one unnamed set for a plain job; with several validation
    /// files (or a mixture's held-out rows), one per name, each also reported apart.
    pub valid: Vec<(Option<String>, &'a dyn RowSet)>,
    /// A window loss above this stops the job as diverged (3× the loss of a uniform guess).
    pub explode_at: f64,
}

impl<'a> TokenObjective<'a> {
    pub fn new(
        train: &'a dyn RowSet,
        valid: Vec<(Option<String>, &'a dyn RowSet)>,
        vocab_size: usize,
    ) -> Self {
        TokenObjective {
            train,
            valid,
            explode_at: (3.0 * (vocab_size as f64).ln()).max(10.0),
        }
    }
}

impl Objective for TokenObjective<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn valid_len(&self) -> usize {
        self.valid.iter().map(|(_, rows)| rows.len()).sum()
    }

    fn window(
        &self,
        net: &Llama,
        micro: &[Vec<usize>],
        vars: &[Var],
        step: u64,
    ) -> Result<Window, TrainError> {
        // All micro-batches first, so the loss is normalised by the whole window's tokens.
        let batches = micro
            .iter()
            .map(|rows| self.train.batch(rows))
            .collect::<Result<Vec<_>, _>>()?;
        let counted_tokens: usize = batches.iter().map(|b| b.counted_tokens).sum();
        let input_tokens = batches.iter().map(|b| b.input_tokens).sum();
        let norm = counted_tokens.max(1) as f64;
        let (mut loss_sum, mut correct) = (0.0, 0.0);
        let mut grads = None;
        for b in &batches {
            let hidden = net.forward_hidden(&b.input_ids, &b.positions, b.mask.as_ref())?;
            let sums = model_cross_entropy(net, &hidden, &b.input_ids, &b.label_weights)?;
            loss_sum += sums.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            correct += sums.correct;
            accumulate(&mut grads, net.backward(&(sums.loss_sum / norm)?)?, vars)?;
        }
        let loss = loss_sum / norm;
        if loss > self.explode_at {
            return Err(TrainError::Diverged {
                step,
                reason: format!("loss {loss} (limit {:.1}, 3·ln(vocab))", self.explode_at),
            });
        }
        Ok(Window {
            grads: grads.expect("at least one micro-batch"),
            loss,
            token_accuracy: correct / norm,
            counted_tokens,
            input_tokens,
            extra: BTreeMap::new(),
        })
    }

    /// The loss over every validation token of every domain, and per named domain its own
    /// `valid_loss/<name>`, `valid_perplexity/<name>` and `valid_mean_token_accuracy/<name>`.
    fn evaluate(&self, net: &Llama, batch_size: usize) -> Result<Evaluation, TrainError> {
        let mut all = EvalSums::default();
        let mut extra = BTreeMap::new();
        for (name, rows) in &self.valid {
            let sums = evaluate_rows(net, *rows, batch_size)?;
            if let Some(name) = name {
                let (loss, accuracy) = sums.means();
                extra.insert(format!("valid_loss/{name}"), loss);
                extra.insert(format!("valid_perplexity/{name}"), loss.exp());
                extra.insert(format!("valid_mean_token_accuracy/{name}"), accuracy);
            }
            all.add(&sums);
        }
        let (loss, token_accuracy) = all.means();
        Ok(Evaluation {
            loss,
            perplexity: loss.exp(),
            token_accuracy,
            extra,
        })
    }
}

/// Summed validation loss, correct predictions and counted tokens.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EvalSums {
    pub loss: f64,
    pub correct: f64,
    pub tokens: f64,
}

impl EvalSums {
    fn add(&mut self, o: &EvalSums) {
        self.loss += o.loss;
        self.correct += o.correct;
        self.tokens += o.tokens;
    }

    /// Mean loss and token accuracy over the counted tokens.
    pub fn means(&self) -> (f64, f64) {
        let tokens = self.tokens.max(1.0);
        (self.loss / tokens, self.correct / tokens)
    }
}

/// Loss, correct predictions and counted tokens over every row of `rows`.
pub(super) fn evaluate_rows(
    net: &Llama,
    rows: &dyn RowSet,
    batch_size: usize,
) -> Result<EvalSums, TrainError> {
    let (mut loss, mut correct, mut tokens) = (0.0, 0.0, 0.0);
    let all: Vec<usize> = (0..rows.len()).collect();
    for idx in all.chunks(batch_size.max(1)) {
        let b = rows.batch(idx)?;
        let hidden = net
            .forward_hidden(&b.input_ids, &b.positions, b.mask.as_ref())?
            .detach();
        let s = model_cross_entropy(net, &hidden, &b.input_ids, &b.label_weights)?;
        loss += s.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        correct += s.correct;
        tokens += s.tokens;
    }
    Ok(EvalSums {
        loss,
        correct,
        tokens,
    })
}
