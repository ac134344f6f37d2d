//! Pretraining (`method.type = "pretrain"`): `{"text": ...}` documents in, a model out. What
//! differs from the other methods: documents are tokenised and joined with EOS into full rows
//! (labels on every non-pad position), a preset starts from random weights with a BPE tokenizer
//! trained on the corpus, and every weight trains.

use std::time::Instant;

use candle_core::{DType, Device, Var};

use super::data::{self, PackedRows};
use super::domains;
use super::hparams::DEFAULT_MAX_SEQ_LEN;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome, spec_error};
use super::objective::{Batch, RowSet, TokenObjective};
use super::progress::Progress;
use super::samples::SamplePrompts;
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
    let needed = super::estimate::estimate(&cfg, hp, super::estimate::DataSize::Tokens(0), 1.0)
        .memory
        .total;
    if let Some(available) = crate::machine::available_memory_bytes()
        && needed > available
    {
        return Err(TrainError::TooLarge {
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        });
    }

    // --- data: each training file (domain) packed apart; validation rows from the validation
    // files, else held out of each training file ---------------------------------------------
    let t_data = Instant::now();
    let files = domains::training_files(job);
    let valid_files = domains::validation_files(job);
    let mut train_rows = PackedRows::empty(seq_len);
    let mut domain_tokens = Vec::new();
    let mut held_out = Vec::new();
    let mut tokens = 0usize;
    for (i, f) in files.iter().enumerate() {
        let stream = data::tokenize_file(&f.path, &start.tokenizer, specials.eos)?;
        tokens += stream.len();
        let rows = PackedRows::pack(&stream, seq_len, specials.pad);
        let rows = if valid_files.is_empty() {
            let (train, valid) =
                rows.split_validation(hp.validation_split, domains::holdout_seed(hp.seed, i));
            held_out.push((f.name.clone(), valid));
            train
        } else {
            rows
        };
        domain_tokens.push(domains::DomainTokens {
            tokens: (0..rows.len())
                .map(|r| rows.real_tokens(r) as u32)
                .collect(),
            lengths: (0..rows.len())
                .map(|r| rows.mean_document_length(r, specials.eos))
                .collect(),
        });
        train_rows.append(&rows);
    }
    let valid_sets = domains::validation_sets(held_out, &valid_files, |path| {
        let vs = data::tokenize_file(path, &start.tokenizer, specials.eos)?;
        Ok(PackedRows::pack(&vs, seq_len, specials.pad))
    })?;
    tracing::info!(
        tokens,
        train_rows = train_rows.len(),
        valid_rows = valid_sets.iter().map(|(_, v)| v.len()).sum::<usize>(),
        domains = files.len(),
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
    let mix = domains::mix_plan(job, hp, &files, domain_tokens);

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
    // Sample prompts: the job's own texts, else the first validation rows' beginnings.
    let first_rows: Vec<&[u32]> = valid_sets
        .first()
        .map(|(_, rows)| (0..rows.len()).map(|i| rows.row(i)).collect())
        .unwrap_or_default();
    let samples = SamplePrompts::for_documents(
        &hp.eval_prompts,
        &first_rows,
        hp.eval_samples,
        &start.tokenizer,
        (
            cfg.eos_token_id,
            hp.eval_max_tokens,
            cfg.max_position_embeddings,
        ),
    );
    let train_set = PretrainRows(&train_rows, device);
    let valid_rows: Vec<(Option<String>, PretrainRows)> = valid_sets
        .iter()
        .map(|(name, rows)| (name.clone(), PretrainRows(rows, device)))
        .collect();
    let valid: Vec<(Option<String>, &dyn RowSet)> = valid_rows
        .iter()
        .map(|(name, rows)| (name.clone(), rows as &dyn RowSet))
        .collect();
    let mut outcome = StepLoop {
        job,
        hp,
        cfg: &cfg,
        trainee: &trainee,
        vars,
        opt,
        state,
        objective: &TokenObjective::new(&train_set, valid, cfg.vocab_size),
        plan,
        mix: &mix,
        samples: samples.as_ref(),
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
