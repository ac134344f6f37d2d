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

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Var};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use tokenizers::Tokenizer;

use super::chat_tokens::{VOCAB_WEIGHTS, grow_vocab, register_chatml};
use super::data::DataError;
use super::hparams::DEFAULT_MAX_SEQ_LEN;
use super::job::{Stopped, TrainError, TrainJob, TrainOutcome};
use super::progress::Progress;
use super::sft_pack::{PackError, PackedRow, collate, pack_examples};
use super::start::{self, Plan};
use super::step_loop::{Batch, RowSet, StepLoop};
use super::trainee::{FullModel, LoraModel, Trainee};
use crate::chat::loss_mask::{ChatExample, ChatStats, Overlength, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::model::lora::LoraConfig;
use crate::model::{self, hf, peft};
use crate::spec::{self, LoraSpec};

fn data_err(path: &Path, line: usize, message: String) -> TrainError {
    TrainError::Data(DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })
}

fn pack_err(e: PackError) -> TrainError {
    match e {
        PackError::Candle(c) => TrainError::Candle(c),
        other => TrainError::Unsupported(other.to_string()),
    }
}

/// Reads a chat JSONL file and tokenizes every conversation with its loss mask.
pub fn read_chat_file(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_seq_len: usize,
    overlength: Overlength,
) -> Result<(Vec<ChatExample>, ChatStats), TrainError> {
    #[derive(serde::Deserialize)]
    struct Line {
        messages: Vec<TrainMessage>,
        #[serde(default)]
        tools: Option<serde_json::Value>,
    }
    let file = std::fs::File::open(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut examples = Vec::new();
    let mut stats = ChatStats::default();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).map_err(|e| data_err(path, i + 1, e.to_string()))?;
        let outcome = tokenize_chat(
            tokenizer,
            template,
            &parsed.messages,
            parsed.tools.as_ref(),
            max_seq_len,
            overlength,
        )
        .map_err(|e| data_err(path, i + 1, e.to_string()))?;
        stats.record(&outcome);
        examples.extend(outcome.example());
    }
    Ok((examples, stats))
}

/// The spec's overlength policy, as the loss-mask code takes it.
fn overlength(o: spec::Overlength) -> Overlength {
    match o {
        spec::Overlength::Truncate => Overlength::Truncate,
        spec::Overlength::Drop => Overlength::Drop,
    }
}

/// The spec's LoRA settings, as the model takes them.
fn lora_config(l: &LoraSpec) -> LoraConfig {
    LoraConfig {
        r: l.r,
        alpha: l.alpha,
        dropout: l.dropout,
        target_modules: l.target_modules.clone(),
        use_rslora: l.use_rslora,
    }
}

/// Runs one supervised fine-tuning job to the end and writes the model (and adapter).
pub fn run(job: &TrainJob, progress: &mut dyn Progress) -> Result<TrainOutcome, TrainError> {
    let spec = &job.spec;
    let h = spec.hyperparameters();
    if model::preset(&spec.model).is_some() {
        return Err(TrainError::Unsupported(format!(
            "supervised fine-tuning needs a trained model folder; {:?} is a preset with random \
             weights (pretrain it first)",
            spec.model
        )));
    }
    let device = &job.device;
    let dtype = DType::F32;
    let mut start = start::start(job, dtype, device)?;
    let hp = start.hp.clone();
    // ChatML for a model without a template: its tokens, and rows for them (see chat_tokens).
    let added = register_chatml(&mut start.tokenizer, &job.output_dir)?;
    let grown = grow_vocab(
        &mut start.weights,
        &mut start.cfg,
        start.tokenizer.get_vocab_size(true),
    )?;
    let embed_key = peft::peft_key(VOCAB_WEIGHTS[0]);
    let train_vocab_rows = !added.is_empty()
        || grown
        || start
            .adapter
            .as_ref()
            .is_some_and(|a| a.contains_key(&embed_key));
    if !added.is_empty() || grown {
        tracing::info!(
            ?added,
            vocab = start.cfg.vocab_size,
            "registered ChatML tokens"
        );
    }
    let cfg = start.cfg.clone();
    // The start left the model's tokenizer files (chat template included) in output_dir.
    let template = ChatTemplate::from_model_dir(&job.output_dir)
        .map_err(|e| TrainError::Unsupported(e.to_string()))?;
    let specials = crate::tokenizer::special_ids(
        &start.tokenizer,
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )?;
    let seq_len = hp
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(cfg.max_position_embeddings))
        .min(cfg.max_position_embeddings);
    let overlength = overlength(h.overlength.unwrap_or_default());
    let packing = h.packing.unwrap_or(true);

    // --- data ----------------------------------------------------------------------------------
    let t_data = Instant::now();
    let (mut train, stats) = read_chat_file(
        &job.training_file,
        &start.tokenizer,
        &template,
        seq_len,
        overlength,
    )?;
    let valid = match &job.validation_file {
        Some(v) => read_chat_file(v, &start.tokenizer, &template, seq_len, overlength)?.0,
        None => {
            let n = (train.len() as f64 * hp.validation_split).floor() as usize;
            let mut order: Vec<usize> = (0..train.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(hp.seed));
            let mut held: Vec<usize> = order[..n.min(train.len().saturating_sub(1))].to_vec();
            held.sort_unstable();
            let valid = held.iter().map(|&i| train[i].clone()).collect();
            for &i in held.iter().rev() {
                train.remove(i);
            }
            valid
        }
    };
    let train_rows = pack_examples(&train, seq_len, packing).map_err(pack_err)?;
    let valid_rows = pack_examples(&valid, seq_len, packing).map_err(pack_err)?;
    tracing::info!(
        kept = stats.kept,
        truncated = stats.truncated,
        dropped_overlength = stats.dropped,
        no_trainable = stats.no_trainable,
        train_rows = train_rows.len(),
        valid_rows = valid_rows.len(),
        seconds = t_data.elapsed().as_secs_f64(),
        "chat data ready"
    );
    let total_steps = hp.total_steps(train_rows.len());
    if total_steps == 0 {
        return Err(TrainError::Data(DataError::Empty {
            path: job.training_file.clone(),
        }));
    }
    let plan = Plan::new(&hp, total_steps);

    // --- model: full (every weight a Var) or LoRA (frozen base, adapters only) -----------------
    let base_name = job.base_model_name.as_deref().unwrap_or(&spec.model);
    let tuned = match (&h.lora, &start.adapter, &start.state) {
        (Some(lspec), adapter, state) => {
            if state.is_some() && adapter.is_none() {
                return Err(TrainError::Unsupported(
                    "the checkpoint holds a full model, but the job trains LoRA adapters".into(),
                ));
            }
            let vocab_rows: &[&str] = if train_vocab_rows {
                &VOCAB_WEIGHTS
            } else {
                &[]
            };
            let m = LoraModel::new(
                start.weights.clone(),
                &cfg,
                &lora_config(lspec),
                hp.seed,
                seq_len,
                base_name,
                vocab_rows,
                adapter.as_ref(),
                device,
            )?;
            Tuned::Lora(m)
        }
        (None, Some(_), _) => {
            return Err(TrainError::Unsupported(
                "the checkpoint holds LoRA adapters, but the job fine-tunes the full model".into(),
            ));
        }
        // The variables are copies: the starting tensors need not stay alive beside them.
        (None, None, _) => Tuned::Full(FullModel::new(
            std::mem::take(&mut start.weights),
            &cfg,
            seq_len,
            dtype,
            device,
        )?),
    };
    let (trainee, named): (&dyn Trainee, _) = match &tuned {
        Tuned::Full(f) => (f, f.named_vars(&job.output_dir)?),
        Tuned::Lora(l) => (l, l.named_vars()),
    };
    let vars: Vec<Var> = named.iter().map(|(_, v, _)| v.clone()).collect();
    let num_trainable: u64 = vars.iter().map(|v| v.elem_count() as u64).sum();
    let (opt, state) = start::optimizer(
        named,
        &hp,
        total_steps,
        start.state.take(),
        start.optimizer.take(),
    )?;
    tracing::info!(
        parameters = cfg.num_parameters(),
        trainable = num_trainable,
        lora = matches!(tuned, Tuned::Lora(_)),
        packing,
        total_steps,
        seq_len,
        start_step = state.step,
        "supervised fine-tuning"
    );

    // --- the loop ------------------------------------------------------------------------------
    let (train_set, valid_set) = (
        SftRows::new(&train_rows, specials.pad, device),
        SftRows::new(&valid_rows, specials.pad, device),
    );
    let mut outcome = StepLoop {
        job,
        hp: &hp,
        cfg: &cfg,
        trainee,
        vars,
        opt,
        state,
        train: &train_set,
        valid: &valid_set,
        plan,
    }
    .run(progress)?;
    if matches!(outcome.stopped, Some(Stopped::Cancelled | Stopped::Paused)) {
        return Ok(outcome);
    }

    // --- export --------------------------------------------------------------------------------
    match &tuned {
        Tuned::Lora(l) => {
            peft::save_adapter(
                &job.output_dir.join("adapter"),
                &l.adapters,
                Some(base_name),
            )?;
            peft::save_merged(&job.output_dir, &cfg, &start.weights, &l.adapters)?;
        }
        Tuned::Full(f) => {
            hf::save_model_folder(&job.output_dir, &cfg, &f.weights())?;
        }
    }
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}

/// What a supervised job trains.
enum Tuned {
    Full(FullModel),
    Lora(LoraModel),
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
