//! Preference tuning (`method.type = "dpo"`): preference pairs in, an aligned model out, through
//! the same start, step loop, checkpoints and export as SFT ([`super::chat_model`],
//! [`super::step_loop`]). By role:
//! - [`data`]: OpenAI's preference lines, tokenized as SFT renders an assistant turn, and pairs
//!   batched (chosen and rejected in one forward);
//! - [`loss`]: the per-pair losses (`sigmoid` DPO, `ipo`, `simpo`, `orpo`) and their derivatives;
//! - [`reference`]: the starting model's log-probs, computed once and kept with the job;
//! - `objective`: the window's loss and gradients, and TRL's metrics.
//!
//! Hyperparameters beyond SFT's: `beta` (`"auto"`: the loss type's default), `loss_type`,
//! `rpo_alpha` (an NLL term on the preferred outputs) and `simpo_gamma`. `batch_size` counts
//! pairs. Defaults differ from SFT's where preference tuning wants it: learning rate 1e-6 for
//! the full model (TRL's `DPOConfig` default) and 1e-5 for LoRA, no packing (each output is its
//! own row).

pub mod data;
pub mod loss;
mod objective;
pub mod reference;

use std::time::Instant;

use candle_core::Var;

use self::data::{PreferencePair, read_preference_file};
use self::loss::PreferenceLoss;
use self::objective::PreferenceObjective;
use self::reference::Reference;
use super::chat_model::{Tuned, chat_start};
use super::data::{held_out_indices, hold_out};
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome};
use super::mixture::MixPlan;
use super::objective::Objective as _;
use super::progress::Progress;
use super::samples::SamplePrompts;
use super::start;
use super::step_loop::StepLoop;
use crate::spec::{Auto, Hyperparameters};

/// The loss settings of `h`, defaults resolved.
pub fn preference_loss(h: &Hyperparameters) -> PreferenceLoss {
    let kind = h.loss_type.unwrap_or_default();
    PreferenceLoss {
        kind,
        beta: h.beta.unwrap_or(Auto::Auto).or(kind.default_beta()),
        simpo_gamma: h.simpo_gamma.unwrap_or(0.5),
        rpo_alpha: h.rpo_alpha.unwrap_or(0.0),
    }
}

/// Runs one preference-tuning job to the end and writes the model (and adapter).
pub fn run(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    let h = job.spec.hyperparameters();
    let device = &job.device;
    let loss = preference_loss(&h);
    let mut cs = chat_start(job, "preference tuning")?;
    let hp = cs.start.hp.clone();

    // --- data ----------------------------------------------------------------------------------
    let t_data = Instant::now();
    let read = |path| {
        read_preference_file(
            path,
            &cs.start.tokenizer,
            &cs.template,
            cs.seq_len,
            cs.overlength,
        )
    };
    let (mut train, stats, lines) = read(&job.training_file)?;
    // Sample prompts: the first validation pairs (of the validation file, else those held out).
    let sample_source = match &job.validation_file {
        Some(v) => (v.clone(), None),
        None => {
            let held = held_out_indices(train.len(), hp.validation_split, hp.seed);
            let held_lines: Vec<usize> = held.iter().map(|&i| lines[i]).collect();
            (job.training_file.clone(), Some(held_lines))
        }
    };
    let valid: Vec<PreferencePair> = match &job.validation_file {
        Some(v) => read(v)?.0,
        None => hold_out(&mut train, hp.validation_split, hp.seed),
    };
    let samples = SamplePrompts::for_pairs(
        &hp.eval_prompts,
        &sample_source.0,
        sample_source.1.as_deref(),
        hp.eval_samples,
        &cs.start.tokenizer,
        &cs.template,
        (
            cs.cfg.eos_token_id,
            hp.eval_max_tokens,
            cs.cfg.max_position_embeddings,
        ),
    )?;
    tracing::info!(
        kept = stats.kept,
        truncated = stats.truncated,
        dropped = stats.dropped,
        train_pairs = train.len(),
        valid_pairs = valid.len(),
        seconds = t_data.elapsed().as_secs_f64(),
        "preference data ready"
    );
    let plan = start::plan_for(&hp, train.len(), job)?;
    let total_steps = plan.schedule.total_steps;

    // --- model ---------------------------------------------------------------------------------
    let resumed = cs.start.state.is_some();
    let tuned = Tuned::new(job, &mut cs, &h)?;
    let trainee = tuned.trainee();

    // --- the reference: read back when resuming, else the model as it starts -------------------
    let reference = if loss.kind.needs_reference() {
        let stored = [job.resume_from.as_deref(), Some(job.output_dir.as_path())]
            .into_iter()
            .flatten()
            .find_map(|dir| Reference::load(dir, train.len(), valid.len()).transpose())
            .transpose()?;
        let r = match stored {
            Some(r) => r,
            None if resumed => {
                return Err(TrainError::Unsupported(format!(
                    "the checkpoint has no {} for this data; start the job again",
                    reference::FILE
                )));
            }
            None => {
                let t0 = Instant::now();
                trainee.set_mode(false, 0);
                let r = Reference::compute(
                    trainee.net(),
                    &train,
                    &valid,
                    hp.batch_size,
                    cs.specials.pad,
                    device,
                    progress,
                )?;
                tracing::info!(
                    pairs = train.len() + valid.len(),
                    seconds = t0.elapsed().as_secs_f64(),
                    "reference log-probs"
                );
                r
            }
        };
        r.save(&job.output_dir)?;
        Some(r)
    } else {
        None
    };

    let named = tuned.named_vars(job)?;
    let vars: Vec<Var> = named.iter().map(|(_, v, _)| v.clone()).collect();
    let (opt, state) = start::optimizer(
        named,
        &hp,
        total_steps,
        cs.start.state.take(),
        cs.start.optimizer.take(),
    )?;
    let cfg = cs.cfg.clone();
    tracing::info!(
        parameters = cfg.num_parameters(),
        lora = tuned.is_lora(),
        loss_type = loss.kind.as_str(),
        beta = loss.beta,
        total_steps,
        seq_len = cs.seq_len,
        start_step = state.step,
        "preference tuning"
    );

    // --- the loop ------------------------------------------------------------------------------
    let objective = PreferenceObjective {
        train: &train,
        valid: &valid,
        reference: reference.as_ref(),
        loss,
        pad: cs.specials.pad,
        device,
    };
    let mix = MixPlan::single(objective.train_len());
    let mut outcome = StepLoop {
        job,
        hp: &hp,
        cfg: &cfg,
        trainee,
        vars,
        opt,
        state,
        objective: &objective,
        plan,
        mix: &mix,
        samples: samples.as_ref(),
    }
    .run(progress)?;
    if matches!(outcome.stopped, Some(Stopped::Cancelled | Stopped::Paused)) {
        return Ok(outcome);
    }

    // --- export --------------------------------------------------------------------------------
    tuned.export(job, &cs)?;
    // The reference is job state (the checkpoints keep it), not part of the model.
    let stored = job.output_dir.join(reference::FILE);
    if stored.is_file() {
        std::fs::remove_file(&stored).map_err(|source| TrainError::Io {
            path: stored.clone(),
            source,
        })?;
    }
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}
