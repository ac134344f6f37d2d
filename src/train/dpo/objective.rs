//! The preference objective the step loop minimises: per micro-batch, the policy's summed
//! log-probs of every chosen and rejected output in one forward ([`model_row_log_probs`] over
//! `2b` rows), the loss of each pair from [`super::loss`] against the reference, and one backward
//! through `Σ ∂L/∂s · s` (the loss depends on the model only through the summed log-probs `s`,
//! so these are its exact gradients). The window's loss is the mean over its pairs plus the NLL
//! weight times the mean NLL over every chosen token of the window; both denominators are known
//! before the first micro-batch runs, so accumulation sums the right gradients.
//!
//! Metrics carry TRL's names: `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`,
//! `rewards/margins`, `logps/chosen`, `logps/rejected` (and `nll_loss` when an NLL term trains),
//! means over the window's pairs; `valid_`-prefixed on the validation pairs.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::data::{PreferencePair, collate_pairs};
use super::loss::{PairLogps, PreferenceLoss};
use super::reference::Reference;
use crate::model::Llama;
use crate::train::job::TrainError;
use crate::train::loss::model_row_log_probs;
use crate::train::objective::{Evaluation, Objective, Window};
use crate::train::optim::accumulate;

/// Pairs, their reference log-probs and the loss.
pub(super) struct PreferenceObjective<'a> {
    pub train: &'a [PreferencePair],
    pub valid: &'a [PreferencePair],
    /// `None` for the losses that need no reference (SimPO, ORPO).
    pub reference: Option<&'a Reference>,
    pub loss: PreferenceLoss,
    pub pad: u32,
    pub device: &'a Device,
}

/// Sums over pairs, for the means reported.
#[derive(Default)]
struct Tally {
    pairs: f64,
    loss: f64,
    chosen_reward: f64,
    rejected_reward: f64,
    accurate: f64,
    chosen_logps: f64,
    rejected_logps: f64,
    /// −Σ chosen log-probs, and the chosen tokens counted.
    chosen_nll: f64,
    chosen_tokens: f64,
    chosen_correct: f64,
}

impl Tally {
    /// The window's loss: mean pair loss plus `nll_weight` × mean chosen-token NLL.
    fn loss(&self, nll_weight: f64) -> f64 {
        self.loss / self.pairs.max(1.0) + nll_weight * self.nll()
    }

    fn nll(&self) -> f64 {
        self.chosen_nll / self.chosen_tokens.max(1.0)
    }

    fn metrics(&self, prefix: &str, nll_weight: f64) -> BTreeMap<String, f64> {
        let n = self.pairs.max(1.0);
        let mut m: BTreeMap<String, f64> = [
            ("rewards/chosen", self.chosen_reward / n),
            ("rewards/rejected", self.rejected_reward / n),
            ("rewards/accuracies", self.accurate / n),
            (
                "rewards/margins",
                (self.chosen_reward - self.rejected_reward) / n,
            ),
            ("logps/chosen", self.chosen_logps / n),
            ("logps/rejected", self.rejected_logps / n),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect();
        if nll_weight > 0.0 {
            m.insert(format!("{prefix}nll_loss"), self.nll());
        }
        m
    }
}

/// One micro-batch's forward: the (2b) summed log-probs with their graph, their values, and the
/// per-row counted tokens and correct predictions.
struct Forward {
    log_probs: Tensor,
    values: Vec<f64>,
    tokens: Vec<f64>,
    correct: Vec<f64>,
    input_tokens: usize,
}

impl PreferenceObjective<'_> {
    /// `train` keeps the graph for backward.
    fn forward(
        &self,
        net: &Llama,
        pairs: &[&PreferencePair],
        train: bool,
    ) -> Result<Forward, TrainError> {
        let b = collate_pairs(pairs, self.pad, self.device)?;
        let mut hidden = net.forward_hidden(&b.input_ids, &b.positions, None)?;
        if !train {
            hidden = hidden.detach();
        }
        let rows = model_row_log_probs(net, &hidden, &b.input_ids, &b.label_weights)?;
        let values = rows.log_probs.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Forward {
            log_probs: rows.log_probs,
            values,
            tokens: rows.tokens,
            correct: rows.correct,
            input_tokens: b.input_tokens,
        })
    }

    /// Pair `i` of a forward over `n` pairs, with its reference log-probs when the loss has one.
    fn pair_logps(&self, f: &Forward, i: usize, n: usize, refs: Option<[f64; 2]>) -> PairLogps {
        let [ref_chosen, ref_rejected] = refs.unwrap_or([0.0, 0.0]);
        PairLogps {
            chosen: f.values[i],
            rejected: f.values[n + i],
            ref_chosen,
            ref_rejected,
            chosen_len: f.tokens[i],
            rejected_len: f.tokens[n + i],
        }
    }

    /// Adds pair `i` of forward `f` to `tally`; returns its terms.
    fn tally(
        &self,
        tally: &mut Tally,
        f: &Forward,
        i: usize,
        n: usize,
        refs: Option<[f64; 2]>,
    ) -> super::loss::PairTerms {
        let p = self.pair_logps(f, i, n, refs);
        let t = self.loss.pair(&p);
        tally.pairs += 1.0;
        tally.loss += t.loss;
        tally.chosen_reward += t.chosen_reward;
        tally.rejected_reward += t.rejected_reward;
        tally.accurate += f64::from(u8::from(t.chosen_reward > t.rejected_reward));
        tally.chosen_logps += p.chosen;
        tally.rejected_logps += p.rejected;
        tally.chosen_nll -= p.chosen;
        tally.chosen_tokens += p.chosen_len;
        tally.chosen_correct += f.correct[i];
        t
    }
}

impl Objective for PreferenceObjective<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn valid_len(&self) -> usize {
        self.valid.len()
    }

    fn window(
        &self,
        net: &Llama,
        micro: &[Vec<usize>],
        vars: &[Var],
        _step: u64,
    ) -> Result<Window, TrainError> {
        // The denominators of both means, over the whole window.
        let n_pairs: usize = micro.iter().map(Vec::len).sum();
        let chosen_tokens: usize = micro
            .iter()
            .flatten()
            .map(|&i| PreferencePair::counted(&self.train[i].chosen))
            .sum();
        let (pairs_f, tokens_f) = (n_pairs.max(1) as f64, chosen_tokens.max(1) as f64);
        let nll_weight = self.loss.nll_weight();
        let mut tally = Tally::default();
        let (mut grads, mut counted, mut input_tokens) = (None, 0.0, 0);
        for indices in micro {
            let pairs: Vec<&PreferencePair> = indices.iter().map(|&i| &self.train[i]).collect();
            let f = self.forward(net, &pairs, true)?;
            let n = pairs.len();
            let mut coef = vec![0.0; 2 * n];
            for (i, &global) in indices.iter().enumerate() {
                let refs = self.reference.map(|r| r.train[global]);
                let t = self.tally(&mut tally, &f, i, n, refs);
                coef[i] = t.d_chosen / pairs_f - nll_weight / tokens_f;
                coef[n + i] = t.d_rejected / pairs_f;
            }
            counted += f.tokens.iter().sum::<f64>();
            input_tokens += f.input_tokens;
            let coef = Tensor::from_vec(coef, 2 * n, self.device)?.to_dtype(f.log_probs.dtype())?;
            let surrogate = (&f.log_probs * coef)?.sum_all()?;
            accumulate(&mut grads, net.backward(&surrogate)?, vars)?;
        }
        Ok(Window {
            grads: grads.expect("at least one micro-batch"),
            loss: tally.loss(nll_weight),
            token_accuracy: tally.chosen_correct / tally.chosen_tokens.max(1.0),
            counted_tokens: counted as usize,
            input_tokens,
            extra: tally.metrics("", nll_weight),
        })
    }

    fn evaluate(&self, net: &Llama, batch_size: usize) -> Result<Evaluation, TrainError> {
        let nll_weight = self.loss.nll_weight();
        let mut tally = Tally::default();
        let all: Vec<usize> = (0..self.valid.len()).collect();
        for indices in all.chunks(batch_size.max(1)) {
            let pairs: Vec<&PreferencePair> = indices.iter().map(|&i| &self.valid[i]).collect();
            let f = self.forward(net, &pairs, false)?;
            for (i, &global) in indices.iter().enumerate() {
                let refs = self.reference.map(|r| r.valid[global]);
                self.tally(&mut tally, &f, i, pairs.len(), refs);
            }
        }
        Ok(Evaluation {
            loss: tally.loss(nll_weight),
            // Of the preferred outputs: how well the model still predicts what it should say.
            perplexity: tally.nll().exp(),
            token_accuracy: tally.chosen_correct / tally.chosen_tokens.max(1.0),
            extra: tally.metrics("valid_", nll_weight),
        })
    }
}
