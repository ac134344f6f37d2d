//! Pretraining (`method.type = "pretrain"`): `{"text": ...}` documents in, a model out. What
//! differs from the other methods: documents are tokenised and joined with EOS into full rows
//! (labels on every non-pad position), a preset starts from random weights with a BPE tokenizer
//! trained on the corpus, and every weight trains.

use std::time::Instant;

use candle_core::{DType, Device, Var};

use super::data::{self, PackedRows};
use super::hparams::DEFAULT_MAX_SEQ_LEN;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome, spec_error};
use super::objective::{Batch, RowSet, TokenObjective};
use super::progress::Progress;
use super::start::{self, Plan};
use super::step_loop::StepLoop;
use super::trainee::FullModel;
use crate::model::hf;
use crate::tokenizer as tok;

/// Runs one pretraining job to the end (or until `progress` asks it to stop) and writes the model.
pub fn run(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    let spec = &job.spec;
    if spec.hyperparameters().lora.is_some() {
        return Err(TrainError::Unsupported(
            "LoRA is only supported for method.type \"supervised\"; omit lora for pretraining"
                .into(),
        ));
    }
    let device = &job.device;
    let dtype = DType::F32;

    // --- tokenizer and starting weights ---------------------------------------------------------
    let start = start::start(job, dtype, device)?;
    let hp = &start.hp;
    let cfg = start.cfg;
    let specials = tok::special_ids(
        &start.tokenizer,
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )?;
    let seq_len = hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings));
    if seq_len > cfg.max_position_embeddings {
        return Err(spec_error(
            spec,
            "max_seq_len",
            format!(
                "max_seq_len {seq_len} exceeds the model's max_position_embeddings {}",
                cfg.max_position_embeddings
            ),
        ));
    }

    // Out-of-memory aborts the process (it cannot be caught), so refuse jobs that cannot fit.
    let needed = super::estimate::estimate(&cfg, hp, 0, 1.0).memory.total;
    if let Some(available) = crate::machine::available_memory_bytes()
        && needed > available
    {
        return Err(TrainError::TooLarge {
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        });
    }

    // --- data ----------------------------------------------------------------------------------
    let t_data = Instant::now();
    let stream = data::tokenize_file(&job.training_file, &start.tokenizer, specials.eos)?;
    let all_rows = PackedRows::pack(&stream, seq_len, specials.pad);
    let (train_rows, valid_rows) = match &job.validation_file {
        Some(v) => {
            let vs = data::tokenize_file(v, &start.tokenizer, specials.eos)?;
            (all_rows, PackedRows::pack(&vs, seq_len, specials.pad))
        }
        None => all_rows.split_validation(hp.validation_split, hp.seed),
    };
    tracing::info!(
        tokens = stream.len(),
        train_rows = train_rows.len(),
        valid_rows = valid_rows.len(),
        seconds = t_data.elapsed().as_secs_f64(),
        "data ready"
    );
    let total_steps = hp.total_steps(train_rows.len());
    if total_steps == 0 {
        return Err(spec_error(
            spec,
            "max_steps",
            "the job would run zero steps: the training file has no full row".into(),
        ));
    }
    let plan = Plan::new(hp, total_steps);

    // --- model and optimiser -------------------------------------------------------------------
    let mut trainee = FullModel::new(start.weights, &cfg, seq_len, dtype, device)?;
    trainee
        .net
        .set_gradient_checkpointing(hp.gradient_checkpointing);
    trainee
        .net
        .set_bf16(hp.precision == crate::spec::Precision::Bf16);
    let named = trainee.named_vars(&job.output_dir)?;
    let vars: Vec<Var> = named.iter().map(|(_, v, _)| v.clone()).collect();
    let (opt, state) = start::optimizer(named, hp, total_steps, start.state, start.optimizer)?;
    tracing::info!(
        parameters = cfg.num_parameters(),
        total_steps,
        warmup = plan.schedule.warmup_steps,
        seq_len,
        batch = hp.batch_size,
        accumulation = hp.gradient_accumulation_steps,
        start_step = state.step,
        "training"
    );

    // --- the loop ------------------------------------------------------------------------------
    let (train_set, valid_set) = (
        PretrainRows(&train_rows, device),
        PretrainRows(&valid_rows, device),
    );
    let mut outcome = StepLoop {
        job,
        hp,
        cfg: &cfg,
        trainee: &trainee,
        vars,
        opt,
        state,
        objective: &TokenObjective::new(&train_set, &valid_set, cfg.vocab_size),
        plan,
    }
    .run(progress)?;
    if matches!(outcome.stopped, Some(Stopped::Cancelled | Stopped::Paused)) {
        return Ok(outcome);
    }

    // --- export --------------------------------------------------------------------------------
    hf::save_model_folder(&job.output_dir, &cfg, &trainee.weights())?;
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}

/// Pretraining rows on a device, as the step loop takes them.
struct PretrainRows<'a>(&'a PackedRows, &'a Device);

impl RowSet for PretrainRows<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<Batch, TrainError> {
        let b = self.0.batch(indices, self.1)?;
        Ok(Batch {
            input_tokens: b.counted_tokens + indices.len(),
            input_ids: b.input_ids,
            positions: b.positions,
            label_weights: b.label_weights,
            mask: None,
            counted_tokens: b.counted_tokens,
        })
    }
}
