//! Supervised fine-tuning jobs (`method.type = "supervised"`): chat JSONL in, a fine-tuned model
//! out. The same loop as pretraining (accumulation window normalised by its counted tokens,
//! clipping, AdamW, schedule, evaluation), with SFT's own data path and, optionally, LoRA:
//!
//! - each line `{"messages": [{role, content, weight?}, ...]}` is rendered with the model's chat
//!   template and masked to its assistant tokens ([`crate::chat::loss_mask`]);
//! - examples are packed padding-free ([`super::sft_pack`]) unless `packing` is false;
//! - with `lora`, only the adapters train and the job writes the PEFT adapter to
//!   `output_dir/adapter` plus the merged model to `output_dir`; without it, the full model.
//!
//! The start (files, hyperparameters, resume), the step loop, checkpoints, pause and resume are
//! shared with pretraining ([`super::start`], [`super::step_loop`]); a LoRA checkpoint keeps only
//! the adapters.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Var};
use tokenizers::Tokenizer;

use super::chat_model::{Tuned, chat_start};
use super::data::{DataError, for_each_jsonl_line, held_out_indices, hold_out};
use super::domains;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome};
use super::objective::{Batch, RowSet, TokenObjective};
use super::progress::Progress;
use super::samples::SamplePrompts;
use super::sft_pack::{PackError, PackedRow, collate, pack_examples};
use super::start;
use super::step_loop::StepLoop;
use crate::chat::loss_mask::{ChatExample, ChatStats, Overlength, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::datasets::convert;

fn pack_err(e: PackError) -> TrainError {
    match e {
        PackError::Candle(c) => TrainError::Candle(c),
        other => TrainError::Unsupported(other.to_string()),
    }
}

/// Reads a chat JSONL file (OpenAI's chat lines, or ShareGPT or Alpaca lines, converted as the
/// upload validator converts them) and tokenizes every conversation with its loss mask; also
/// the (1-based) line of each example kept.
pub fn read_chat_file(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_seq_len: usize,
    overlength: Overlength,
) -> Result<(Vec<ChatExample>, ChatStats, Vec<usize>), TrainError> {
    #[derive(serde::Deserialize)]
    struct Line {
        messages: Vec<TrainMessage>,
        #[serde(default)]
        tools: Option<serde_json::Value>,
    }
    let mut examples = Vec::new();
    let mut stats = ChatStats::default();
    let mut lines = Vec::new();
    for_each_jsonl_line(path, |n, line| {
        let err = |m: String| TrainError::Data(DataError::line(path, n, m));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let chat = convert::to_chat_line(value).map_err(|e| err(e.to_string()))?;
        let parsed: Line = serde_json::from_value(chat).map_err(|e| err(e.to_string()))?;
        let outcome = tokenize_chat(
            tokenizer,
            template,
            &parsed.messages,
            parsed.tools.as_ref(),
            max_seq_len,
            overlength,
        )
        .map_err(|e| err(e.to_string()))?;
        stats.record(&outcome);
        if let Some(ex) = outcome.example() {
            examples.push(ex);
            lines.push(n);
        }
        Ok::<_, TrainError>(())
    })?;
    Ok((examples, stats, lines))
}

/// Runs one supervised fine-tuning job to the end and writes the model (and adapter).
pub fn run(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    let h = job.spec.hyperparameters();
    let device = &job.device;
    let mut cs = chat_start(job, "supervised fine-tuning")?;
    let hp = cs.start.hp.clone();
    let (seq_len, overlength) = (cs.seq_len, cs.overlength);
    let packing = h.packing.unwrap_or(true);

    // --- data: each training file (domain) packed apart; validation examples from the
    // validation files, else held out of each training file ---------------------------------
    let t_data = Instant::now();
    let files = domains::training_files(job);
    let valid_files = domains::validation_files(job);
    let read =
        |path: &Path| read_chat_file(path, &cs.start.tokenizer, &cs.template, seq_len, overlength);
    let mut train_rows = Vec::new();
    let mut domain_tokens = Vec::new();
    let mut held_out = Vec::new();
    let mut stats = ChatStats::default();
    // Sample prompts: the first validation examples (of the first validation file, else those
    // held out of the first training file).
    let mut sample_source: Option<(std::path::PathBuf, Option<Vec<usize>>)> =
        valid_files.first().map(|f| (f.path.clone(), None));
    for (i, f) in files.iter().enumerate() {
        let (mut examples, s, lines) = read(&f.path)?;
        stats.kept += s.kept;
        stats.truncated += s.truncated;
        stats.dropped += s.dropped;
        stats.no_trainable += s.no_trainable;
        if valid_files.is_empty() {
            if sample_source.is_none() {
                let seed = domains::holdout_seed(hp.seed, i);
                let held = held_out_indices(examples.len(), hp.validation_split, seed);
                sample_source = Some((
                    f.path.clone(),
                    Some(held.iter().map(|&k| lines[k]).collect()),
                ));
            }
            let valid = hold_out(
                &mut examples,
                hp.validation_split,
                domains::holdout_seed(hp.seed, i),
            );
            held_out.push((
                f.name.clone(),
                pack_examples(&valid, seq_len, packing).map_err(pack_err)?,
            ));
        }
        let rows = pack_examples(&examples, seq_len, packing).map_err(pack_err)?;
        domain_tokens.push(domains::DomainTokens {
            tokens: rows.iter().map(|r| r.input_ids.len() as u32).collect(),
            lengths: rows
                .iter()
                .map(|r| r.input_ids.len() as f64 / r.lengths.len().max(1) as f64)
                .collect(),
        });
        train_rows.extend(rows);
    }
    let samples = match &sample_source {
        Some((path, lines)) => SamplePrompts::for_chats(
            &hp.eval_prompts,
            path,
            lines.as_deref(),
            hp.eval_samples,
            &cs.start.tokenizer,
            &cs.template,
            (
                cs.cfg.eos_token_id,
                hp.eval_max_tokens,
                cs.cfg.max_position_embeddings,
            ),
        )?,
        None => None,
    };
    let valid_sets = domains::validation_sets(held_out, &valid_files, |path| {
        pack_examples(&read(path)?.0, seq_len, packing).map_err(pack_err)
    })?;
    tracing::info!(
        kept = stats.kept,
        truncated = stats.truncated,
        dropped_overlength = stats.dropped,
        no_trainable = stats.no_trainable,
        train_rows = train_rows.len(),
        valid_rows = valid_sets.iter().map(|(_, v)| v.len()).sum::<usize>(),
        domains = files.len(),
        seconds = t_data.elapsed().as_secs_f64(),
        "chat data ready"
    );
    let plan = start::plan_for(&hp, train_rows.len(), job)?;
    let total_steps = plan.schedule.total_steps;
    let mix = domains::mix_plan(job, &hp, &files, domain_tokens);

    // --- model: full (every weight a Var) or LoRA (frozen base, adapters only) -----------------
    let tuned = Tuned::new(job, &mut cs, &h)?;
    let named = tuned.named_vars(job)?;
    let vars: Vec<Var> = named.iter().map(|(_, v, _)| v.clone()).collect();
    let num_trainable: u64 = vars.iter().map(|v| v.elem_count() as u64).sum();
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
        trainable = num_trainable,
        lora = tuned.is_lora(),
        packing,
        total_steps,
        seq_len,
        start_step = state.step,
        "supervised fine-tuning"
    );

    // --- the loop ------------------------------------------------------------------------------
    let train_set = SftRows::new(&train_rows, cs.specials.pad, device);
    let valid_rows: Vec<(Option<String>, SftRows)> = valid_sets
        .iter()
        .map(|(name, rows)| (name.clone(), SftRows::new(rows, cs.specials.pad, device)))
        .collect();
    let valid: Vec<(Option<String>, &dyn RowSet)> = valid_rows
        .iter()
        .map(|(name, rows)| (name.clone(), rows as &dyn RowSet))
        .collect();
    let mut outcome = StepLoop {
        job,
        hp: &hp,
        cfg: &cfg,
        trainee: tuned.trainee(),
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
    tuned.export(job, &cs)?;
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}

/// Packed chat rows on a device, as the step loop takes them.
struct SftRows<'a> {
    rows: &'a [PackedRow],
    pad: u32,
    device: &'a Device,
}

impl<'a> SftRows<'a> {
    fn new(rows: &'a [PackedRow], pad: u32, device: &'a Device) -> Self {
        SftRows { rows, pad, device }
    }
}

impl RowSet for SftRows<'_> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<Batch, TrainError> {
        let rows: Vec<PackedRow> = indices.iter().map(|&i| self.rows[i].clone()).collect();
        let input_tokens = rows.iter().map(|r| r.input_ids.len()).sum();
        let b = collate(&rows, self.pad, DType::F32, self.device).map_err(pack_err)?;
        Ok(Batch {
            input_ids: b.input_ids,
            positions: b.positions,
            label_weights: b.label_weights,
            mask: Some(b.mask),
            counted_tokens: b.tokens,
            input_tokens,
        })
    }
}
