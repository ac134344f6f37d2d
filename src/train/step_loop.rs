//! The step loop every method shares: stop requests (cancel, or pause with a checkpoint), the
//! accumulation window ([`backward_window`]: forward and backward normalised by the window's
//! counted tokens, divergence guards, clipping), the AdamW update, step metrics, evaluation with
//! early stopping, and periodic checkpoints. What differs between methods (how rows become
//! batches, what trains and how a checkpoint keeps it) comes in through [`RowSet`] and
//! [`Trainee`].

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};

use super::checkpoint::{self, TrainerState};
use super::data::RowSampler;
use super::hparams::Resolved;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome};
use super::loss::shifted_cross_entropy;
use super::optim::{AdamW, accumulate, clip_factor, global_grad_norm};
use super::progress::{EvalMetrics, Progress, StepMetrics, StopReason};
use super::start::Plan;
use super::trainee::Trainee;
use crate::model::{Llama, ModelConfig};

/// One micro-batch ready for the model.
pub(super) struct Batch {
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

/// Training or validation rows.
pub(super) trait RowSet {
    fn len(&self) -> usize;
    fn batch(&self, indices: &[usize]) -> Result<Batch, TrainError>;
}

/// Everything the loop needs, resolved by the job's own setup.
pub(super) struct StepLoop<'a> {
    pub job: &'a TrainJob,
    pub hp: &'a Resolved,
    /// The trained model's config (its vocabulary bounds the divergence guard).
    pub cfg: &'a ModelConfig,
    pub trainee: &'a dyn Trainee,
    pub vars: Vec<Var>,
    pub opt: AdamW,
    pub state: TrainerState,
    pub train: &'a dyn RowSet,
    pub valid: &'a dyn RowSet,
    pub plan: Plan,
}

impl StepLoop<'_> {
    fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        Ok(checkpoint::save(
            &self.job.checkpoint_root(),
            self.trainee.checkpoint_weights()?,
            &self.opt,
            &self.state,
            &self.job.output_dir,
        )?)
    }

    /// Steps from the state's step to the end, an early stop, or a stop request. The model is
    /// not exported here; the caller does that when `stopped` is `None` or early stopping.
    pub fn run(mut self, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
        let hp = self.hp;
        let total_steps = self.plan.schedule.total_steps;
        // A window loss above this stops the job as diverged: 3x the loss of a uniform guess.
        let explode_at = (3.0 * (self.cfg.vocab_size as f64).ln()).max(10.0);
        self.state.total_steps = total_steps;
        let mut sampler =
            RowSampler::new(self.train.len(), self.state.seed, self.state.data_position);
        let mut outcome = TrainOutcome {
            steps_completed: self.state.step,
            total_steps,
            final_train_loss: None,
            final_valid_loss: None,
            trained_tokens: self.state.trained_tokens,
            num_parameters: self.cfg.num_parameters(),
            stopped: None,
            model_dir: None,
            last_checkpoint: None,
        };
        let ckpt_root = self.job.checkpoint_root();
        let loop_start = Instant::now();
        let first_step = self.state.step + 1;
        for step in first_step..=total_steps {
            match progress.should_stop() {
                Some(StopReason::Cancel) => {
                    outcome.stopped = Some(Stopped::Cancelled);
                    return Ok(outcome);
                }
                Some(StopReason::Pause) => {
                    let path = self.save_checkpoint()?;
                    progress.on_checkpoint(self.state.step, &path);
                    outcome.last_checkpoint = Some(path);
                    outcome.stopped = Some(Stopped::Paused);
                    return Ok(outcome);
                }
                None => {}
            }
            let t0 = Instant::now();
            let lr = self.plan.schedule.lr_at(step);
            self.trainee.set_mode(true, step);

            // 1) the accumulation window: all micro-batches, so the loss is normalised by its tokens
            let batches = (0..hp.gradient_accumulation_steps)
                .map(|_| self.train.batch(&sampler.next_rows(hp.batch_size)))
                .collect::<Result<Vec<_>, _>>()?;
            let window_tokens: usize = batches.iter().map(|b| b.counted_tokens).sum();
            let input_tokens: usize = batches.iter().map(|b| b.input_tokens).sum();
            let norm = window_tokens.max(1) as f64;

            // 2) forward + backward per micro-batch, gradients summed; 3) guards and clipping
            let micro: Vec<MicroBatch> = batches
                .iter()
                .map(|b| MicroBatch {
                    input_ids: &b.input_ids,
                    positions: &b.positions,
                    label_weights: &b.label_weights,
                    mask: b.mask.as_ref(),
                })
                .collect();
            let WindowStep {
                grads,
                train_loss,
                correct,
                grad_norm,
                clip_scale,
            } = backward_window(
                self.trainee.net(),
                &micro,
                norm,
                &self.vars,
                hp.max_grad_norm,
                explode_at,
                step,
            )?;

            // 4) the update, with the clipping factor applied to the gradients as it reads them
            self.opt.step_scaled(&grads, lr, clip_scale)?;
            drop(grads);
            self.state.step = step;
            self.state.data_position = sampler.position();
            self.state.trained_tokens += window_tokens as u64;

            let dt = t0.elapsed().as_secs_f64();
            let per_step = loop_start.elapsed().as_secs_f64() / (step - first_step + 1) as f64;
            let metrics = StepMetrics {
                step,
                total_steps,
                epoch: sampler.epoch(),
                train_loss,
                train_mean_token_accuracy: correct / norm,
                learning_rate: lr,
                grad_norm,
                tokens_per_second: input_tokens as f64 / dt,
                trained_tokens: self.state.trained_tokens,
                eta_seconds: per_step * (total_steps - step) as f64,
            };
            tracing::info!(
                step,
                loss = format_args!("{train_loss:.4}"),
                lr = format_args!("{lr:.3e}"),
                grad_norm = format_args!("{grad_norm:.3}"),
                tok_s = format_args!("{:.0}", metrics.tokens_per_second),
                "step"
            );
            progress.on_step(&metrics);
            outcome.steps_completed = step;
            outcome.final_train_loss = Some(train_loss);
            outcome.trained_tokens = self.state.trained_tokens;

            // 5) evaluation and early stopping
            let mut stop_early = false;
            if (step % self.plan.eval_every == 0 || step == total_steps) && self.valid.len() > 0 {
                self.trainee.set_mode(false, step);
                let (valid_loss, valid_acc) =
                    evaluate(self.trainee.net(), self.valid, hp.batch_size)?;
                let m = EvalMetrics {
                    step,
                    valid_loss,
                    valid_perplexity: valid_loss.exp(),
                    valid_mean_token_accuracy: valid_acc,
                };
                tracing::info!(
                    step,
                    valid_loss = format_args!("{valid_loss:.4}"),
                    ppl = format_args!("{:.2}", m.valid_perplexity),
                    "eval"
                );
                progress.on_eval(&m);
                outcome.final_valid_loss = Some(valid_loss);
                stop_early = self
                    .state
                    .record_eval(valid_loss, hp.early_stopping_patience);
            }

            // 6) checkpoint
            if step % self.plan.checkpoint_every == 0 && step < total_steps {
                let path = self.save_checkpoint()?;
                checkpoint::prune(&ckpt_root, hp.n_checkpoints)?;
                progress.on_checkpoint(step, &path);
                outcome.last_checkpoint = Some(path);
            }
            if stop_early {
                tracing::info!(step, "early stopping: validation loss stopped improving");
                outcome.stopped = Some(Stopped::EarlyStopped);
                break;
            }
        }
        self.trainee.set_mode(false, total_steps);
        Ok(outcome)
    }
}

/// One micro-batch of an accumulation window, as [`backward_window`] takes it.
struct MicroBatch<'a> {
    pub input_ids: &'a Tensor,     // (B, T)
    pub positions: &'a Tensor,     // (B, T)
    pub label_weights: &'a Tensor, // (B, T)
    /// Additive attention mask; `None` is plain causal attention.
    pub mask: Option<&'a Tensor>,
}

/// What one accumulation window produced, ready for the optimiser.
struct WindowStep {
    pub grads: candle_core::backprop::GradStore,
    /// Mean loss over the window's counted tokens, before the update.
    pub train_loss: f64,
    /// Correct next-token predictions among the counted tokens.
    pub correct: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor that clips the gradients to the maximum norm (1 when below it); the gradients
    /// themselves are left unscaled for [`AdamW::step_scaled`].
    pub clip_scale: f64,
}

/// Forward and backward over every micro-batch of a window, each loss divided by `norm` (the
/// window's counted tokens) so the summed gradients are those of the window's mean; then the
/// guards (a non-finite or exploding loss or gradient stops the job) and global-norm clipping.
/// Shared by pretraining and SFT, so both normalise and guard alike.
fn backward_window(
    net: &Llama,
    batches: &[MicroBatch],
    norm: f64,
    vars: &[Var],
    max_grad_norm: f64,
    explode_at: f64,
    step: u64,
) -> Result<WindowStep, TrainError> {
    let (mut loss_sum, mut correct) = (0.0, 0.0);
    let mut grads = None;
    for b in batches {
        let logits = net.forward(b.input_ids, b.positions, b.mask)?; // (B, T, V)
        let sums = shifted_cross_entropy(&logits, b.input_ids, b.label_weights)?;
        loss_sum += sums.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        correct += sums.correct;
        accumulate(&mut grads, (sums.loss_sum / norm)?.backward()?, vars)?;
    }
    let grads = grads.expect("at least one micro-batch");
    let train_loss = loss_sum / norm;
    if !train_loss.is_finite() || train_loss > explode_at {
        return Err(TrainError::Diverged {
            step,
            reason: format!("loss {train_loss} (limit {explode_at:.1}, 3·ln(vocab))"),
        });
    }
    let grad_norm = global_grad_norm(&grads, vars)?;
    if !grad_norm.is_finite() {
        return Err(TrainError::Diverged {
            step,
            reason: format!("gradient norm {grad_norm}"),
        });
    }
    Ok(WindowStep {
        grads,
        train_loss,
        correct,
        grad_norm,
        clip_scale: clip_factor(grad_norm, max_grad_norm),
    })
}

/// Mean loss and token accuracy over the counted tokens of every row of `rows`.
pub(super) fn evaluate(
    net: &Llama,
    rows: &dyn RowSet,
    batch_size: usize,
) -> Result<(f64, f64), TrainError> {
    let (mut loss, mut correct, mut tokens) = (0.0, 0.0, 0.0);
    let all: Vec<usize> = (0..rows.len()).collect();
    for idx in all.chunks(batch_size.max(1)) {
        let b = rows.batch(idx)?;
        let logits = net
            .forward(&b.input_ids, &b.positions, b.mask.as_ref())?
            .detach();
        let s = shifted_cross_entropy(&logits, &b.input_ids, &b.label_weights)?;
        loss += s.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        correct += s.correct;
        tokens += s.tokens;
    }
    let tokens = tokens.max(1.0);
    Ok((loss / tokens, correct / tokens))
}
