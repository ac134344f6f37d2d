//! The step loop every method shares: stop requests (cancel, or pause with a checkpoint), the
//! accumulation window (the objective's forward and backward, then the divergence guards and
//! global-norm clipping), the AdamW update, step metrics, evaluation with early stopping, and
//! periodic checkpoints. What differs between methods (what the loss is and how rows become
//! batches, what trains and how a checkpoint keeps it) comes in through [`Objective`] and
//! [`Trainee`].

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Var;

use super::checkpoint::{self, TrainerState};
use super::hparams::Resolved;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome};
use super::mixture::{MixPlan, MixtureSampler};
use super::objective::Objective;
use super::optim::{AdamW, clip_factor, global_grad_norm};
use super::progress::{EvalMetrics, Progress, StepMetrics, StopReason};
use super::samples::SamplePrompts;
use super::start::Plan;
use super::trainee::Trainee;
use crate::model::ModelConfig;

/// The phase a job reports when it asked for bf16 on a processor without bf16 dot products.
pub const BF16_UNAVAILABLE: &str = "bf16_unavailable";

/// Everything the loop needs, resolved by the job's own setup.
pub(super) struct StepLoop<'a> {
    pub job: &'a TrainJob,
    pub hp: &'a Resolved,
    /// The trained model's config (for its parameter count).
    pub cfg: &'a ModelConfig,
    pub trainee: &'a dyn Trainee,
    pub vars: Vec<Var>,
    pub opt: AdamW,
    pub state: TrainerState,
    pub objective: &'a dyn Objective,
    pub plan: Plan,
    /// The order training items are dealt in (one file, or a mixture of named domains).
    pub mix: &'a MixPlan,
    /// Prompts the model answers at each evaluation, if any.
    pub samples: Option<&'a SamplePrompts>,
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
        self.state.total_steps = total_steps;
        debug_assert_eq!(self.mix.total_rows(), self.objective.train_len());
        let mut sampler = MixtureSampler::new(self.mix, self.state.seed, self.state.data_position);
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
        if hp.precision == crate::spec::Precision::Bf16 && !self.trainee.net().bf16() {
            tracing::warn!("bf16 requested, but this processor has no AVX512-BF16: running f32");
            progress.on_phase(BF16_UNAVAILABLE, 0, 0);
        }
        let ckpt_root = self.job.checkpoint_root();
        let loop_start = Instant::now();
        // The training process's memory and CPU use, reported with each step.
        let mut cpu_mark = (Instant::now(), crate::machine::cpu_seconds());
        let first_step = self.state.step + 1;
        // The step whose checkpoint is stored: a resumed run starts from one.
        let mut saved_step = (self.state.step > 0).then_some(self.state.step);
        for step in first_step..=total_steps {
            match progress.should_stop() {
                Some(StopReason::Cancel) => {
                    outcome.stopped = Some(Stopped::Cancelled);
                    return Ok(outcome);
                }
                Some(StopReason::Pause) => {
                    // A pause right after a checkpoint (or before the first step of a resumed
                    // run) has nothing new to save: the checkpoint of this step is stored already.
                    if saved_step != Some(self.state.step) {
                        let path = self.save_checkpoint()?;
                        progress.on_checkpoint(self.state.step, &path);
                        outcome.last_checkpoint = Some(path);
                    }
                    outcome.stopped = Some(Stopped::Paused);
                    return Ok(outcome);
                }
                None => {}
            }
            let t0 = Instant::now();
            let lr = self.plan.schedule.lr_at(step);
            self.trainee.set_mode(true, step);

            // 1) forward + backward over the accumulation window's micro-batches
            let micro: Vec<Vec<usize>> = (0..hp.gradient_accumulation_steps)
                .map(|_| sampler.next_rows(hp.batch_size))
                .collect();
            let window = self
                .objective
                .window(self.trainee.net(), &micro, &self.vars, step)?;
            let (train_loss, window_tokens) = (window.loss, window.counted_tokens);
            // 2) guards, and the factor that clips the gradients to the maximum norm
            if !train_loss.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    reason: format!("loss {train_loss}"),
                });
            }
            let grads = window.grads;
            let grad_norm = global_grad_norm(&grads, &self.vars)?;
            if !grad_norm.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    reason: format!("gradient norm {grad_norm}"),
                });
            }
            let clip_scale = clip_factor(grad_norm, hp.max_grad_norm);

            // 3) the update, with the clipping factor applied to the gradients as it reads them
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
                train_mean_token_accuracy: window.token_accuracy,
                learning_rate: lr,
                grad_norm,
                tokens_per_second: window.input_tokens as f64 / dt,
                trained_tokens: self.state.trained_tokens,
                eta_seconds: per_step * (total_steps - step) as f64,
                extra: window.extra,
            };
            let mut metrics = metrics;
            if let Some(rss) = crate::machine::rss_bytes() {
                metrics
                    .extra
                    .insert("process_rss_mib".into(), rss as f64 / 1048576.0);
            }
            let now = (Instant::now(), crate::machine::cpu_seconds());
            if let (Some(before), Some(after)) = (cpu_mark.1, now.1) {
                let wall = now.0.duration_since(cpu_mark.0).as_secs_f64();
                if wall > 0.0 {
                    metrics.extra.insert(
                        "process_cpu_percent".into(),
                        100.0 * (after - before) / wall,
                    );
                }
            }
            cpu_mark = now;
            for (name, tokens) in sampler.tokens_seen() {
                metrics
                    .extra
                    .insert(format!("tokens_seen/{name}"), tokens as f64);
            }
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

            // 4) evaluation and early stopping
            let mut stop_early = false;
            if (step % self.plan.eval_every == 0 || step == total_steps)
                && self.objective.valid_len() > 0
            {
                self.trainee.set_mode(false, step);
                let e = self.objective.evaluate(self.trainee.net(), hp.batch_size)?;
                let valid_loss = e.loss;
                let m = EvalMetrics {
                    step,
                    valid_loss,
                    valid_perplexity: e.perplexity,
                    valid_mean_token_accuracy: e.token_accuracy,
                    extra: e.extra,
                };
                tracing::info!(
                    step,
                    valid_loss = format_args!("{valid_loss:.4}"),
                    ppl = format_args!("{:.2}", m.valid_perplexity),
                    "eval"
                );
                progress.on_eval(&m);
                // Samples are for people to read: one that fails is logged, never the job's end.
                if let Some(prompts) = self.samples {
                    match prompts.generate(self.trainee.net(), step) {
                        Ok(s) => progress.on_samples(&s),
                        Err(e) => tracing::warn!(step, error = %e, "sample generation failed"),
                    }
                }
                outcome.final_valid_loss = Some(valid_loss);
                stop_early = self
                    .state
                    .record_eval(valid_loss, hp.early_stopping_patience);
            }

            // 5) checkpoint
            if step % self.plan.checkpoint_every == 0 && step < total_steps {
                let path = self.save_checkpoint()?;
                if !progress.takes_checkpoints() {
                    checkpoint::prune(&ckpt_root, hp.n_checkpoints)?;
                }
                progress.on_checkpoint(step, &path);
                outcome.last_checkpoint = Some(path);
                saved_step = Some(step);
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
