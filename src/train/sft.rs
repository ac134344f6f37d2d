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
//! Checkpoints, pause and resume work as in pretraining (the shared `step_loop`); a LoRA
//! checkpoint keeps only the adapters.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Var};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use tokenizers::Tokenizer;

use crate::chat::loss_mask::{ChatExample, ChatStats, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::model::{self, peft};

use super::chat_tokens::{VOCAB_WEIGHTS, grow_vocab, register_chatml};
use super::checkpoint::TrainerState;
use super::data::DataError;
use super::hparams::{DEFAULT_MAX_SEQ_LEN, Resolved};
use super::optim::AdamW;
use super::progress::Progress;
use super::schedule::Schedule;
use super::sft_pack::{PackError, PackedRow, collate, pack_examples};
use super::step_loop::{Batch, RowSet, StepLoop, Trainee};
use super::trainee::{FullModel, LoraModel};
use super::trainer::{Stopped, TrainError, TrainJob, TrainOutcome, prepare_start};

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
    overlength: crate::spec::Overlength,
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

/// Runs one supervised fine-tuning job to the end and writes the model (and adapter).
pub fn run_sft_job(
    job: &TrainJob,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    let spec = &job.spec;
    let h = spec.hyperparameters();
    if model::preset(&spec.model).is_some() {
        return Err(TrainError::Unsupported(format!(
            "supervised fine-tuning needs a trained model folder; {:?} is a preset with random \
             weights (pretrain it first)",
            spec.model
        )));
    }
    for f in std::iter::once(&job.training_file).chain(job.validation_file.as_ref()) {
        if !f.is_file() {
            return Err(TrainError::MissingFile(f.clone()));
        }
    }
    let device = &job.device;
    let dtype = DType::F32;
    std::fs::create_dir_all(&job.output_dir).map_err(|source| TrainError::Io {
        path: job.output_dir.clone(),
        source,
    })?;
    let hp = Resolved::from_spec(spec, false);
    let mut start = prepare_start(job, &hp, dtype, device)?;
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
    // prepare_start left the model's tokenizer files (chat template included) in output_dir.
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
    let overlength = h.overlength.unwrap_or_default();
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
    let warmup = hp.warmup_for(total_steps);
    let schedule = Schedule {
        peak_lr: hp.learning_rate,
        warmup_steps: warmup,
        total_steps,
        kind: hp.lr_scheduler,
        min_lr_ratio: hp.min_lr_ratio,
    };
    let eval_every = hp.eval_every.unwrap_or((total_steps / 10).max(1));
    let checkpoint_every = hp.checkpoint_every.unwrap_or((total_steps / 4).max(1));

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
                lspec,
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
    let mut opt = AdamW::new(named, hp.adamw)?;
    let state = start
        .state
        .take()
        .unwrap_or_else(|| TrainerState::new(total_steps, hp.seed));
    if let Some(moments) = start.optimizer.take() {
        opt.load_state(moments, state.step)?;
    }
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
        trainee,
        vars,
        opt,
        state,
        train: &train_set,
        valid: &valid_set,
        schedule,
        eval_every,
        checkpoint_every,
        explode_at: (3.0 * (cfg.vocab_size as f64).ln()).max(10.0),
        num_parameters: cfg.num_parameters(),
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
            crate::model::hf::save_model_folder(&job.output_dir, &cfg, &f.weights())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::model::hf;
    use crate::spec::JobSpec;
    use crate::train::{NoProgress, run_job};

    const TOPICS: [&str; 5] = ["cats", "rain", "tea", "maps", "bread"];

    /// A tiny pretrained-looking model folder: trained BPE tokenizer (ChatML template) and random
    /// weights.
    fn model_dir(dir: &Path) -> ModelConfig {
        let texts: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "Tell me about {} please. Sure, {} are nice.",
                    TOPICS[i % 5],
                    TOPICS[i % 5]
                )
            })
            .collect();
        let tokenizer = crate::tokenizer::train_bpe(texts.iter(), 300).unwrap();
        let mut cfg = ModelConfig::llama(tokenizer.get_vocab_size(true), 32, 64, 2, 4, 2, 128);
        cfg.eos_token_id = Some(0);
        cfg.bos_token_id = Some(0);
        cfg.pad_token_id = Some(1);
        let vm = model::init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
        let w = model::varmap_tensors(&vm);
        hf::save_model_folder(dir, &cfg, &w).unwrap();
        crate::tokenizer::save_trained(&tokenizer, dir, 128).unwrap();
        cfg
    }

    fn write_chats(path: &Path) {
        let mut out = String::new();
        for i in 0..24 {
            let t = TOPICS[i % 5];
            let line = serde_json::json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": format!("Tell me about {t} please.")},
                {"role": "assistant", "content": format!("Sure, {t} are nice."), "weight": i % 2},
                {"role": "user", "content": "More?"},
                {"role": "assistant", "content": format!("{t} {t}.")},
            ]});
            out += &(line.to_string() + "\n");
        }
        // A tool-calling conversation, as OpenAI's format writes it.
        out += r#"{"messages": [{"role": "user", "content": "Tell me about tea please."}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "about", "arguments": "{\"topic\": \"tea\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "tea are nice."}, {"role": "assistant", "content": "Sure, tea are nice."}], "tools": [{"type": "function", "function": {"name": "about"}}]}"#;
        out += "\n";
        std::fs::write(path, out).unwrap();
    }

    fn job(dir: &Path, hyper: serde_json::Value, out: &str) -> TrainJob {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "model": dir.join("base").to_str().unwrap(), "training_file": "train.jsonl", "seed": 3,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        }))
        .unwrap();
        TrainJob {
            spec,
            training_file: dir.join("train.jsonl"),
            validation_file: None,
            output_dir: dir.join(out),
            resume_from: None,
            device: Device::Cpu,
            base_model_name: None,
        }
    }

    fn tensors(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
    }

    fn same(a: &candle_core::Tensor, b: &candle_core::Tensor) -> bool {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn supervised_lora_job_writes_adapter_and_merged_model() {
        let dir = tempfile::tempdir().unwrap();
        model_dir(&dir.path().join("base"));
        write_chats(&dir.path().join("train.jsonl"));
        let hyper = serde_json::json!({
            "batch_size": 2, "max_seq_len": 128, "max_steps": 3, "learning_rate": 1e-2,
            "validation_split": 0.25,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
        });
        let out = run_job(&job(dir.path(), hyper, "out"), &mut NoProgress).unwrap();
        assert_eq!(out.steps_completed, 3);
        assert!(out.final_train_loss.unwrap().is_finite());
        assert!(out.final_valid_loss.is_some());
        let adapter = dir.path().join("out/adapter");
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["r"], 4);
        let a =
            candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu)
                .unwrap();
        assert_eq!(a.len(), 2 * 2 * 2, "2 layers x q,v x A,B");
        // The merged model: q/v changed, everything else bitwise the base.
        let base = tensors(&dir.path().join("base"));
        let merged = tensors(&dir.path().join("out"));
        assert_eq!(base.len(), merged.len());
        for (name, t) in &base {
            let lora = name.contains("q_proj") || name.contains("v_proj");
            assert_eq!(!lora, same(t, &merged[name]), "{name}");
        }
        assert!(dir.path().join("out/tokenizer.json").is_file());
    }

    #[test]
    fn supervised_full_job_trains_every_weight() {
        let dir = tempfile::tempdir().unwrap();
        model_dir(&dir.path().join("base"));
        write_chats(&dir.path().join("train.jsonl"));
        let hyper = serde_json::json!({
            "batch_size": 2, "max_seq_len": 128, "max_steps": 2, "learning_rate": 1e-3,
            "packing": false, "overlength": "drop"
        });
        let out = run_job(&job(dir.path(), hyper, "full"), &mut NoProgress).unwrap();
        assert_eq!(out.steps_completed, 2);
        assert!(!dir.path().join("full/adapter").exists());
        let base = tensors(&dir.path().join("base"));
        let tuned = tensors(&dir.path().join("full"));
        for (name, t) in &base {
            assert!(!same(t, &tuned[name]), "{name} did not change");
        }
    }

    /// Pauses after 3 of 6 steps, resumes from the pause checkpoint, and checks every step's loss
    /// and the final weights against an uninterrupted run.
    fn paused_and_resumed_equals_uninterrupted(hyper: serde_json::Value, lora: bool) {
        use crate::train::{RecordingProgress, StopReason};
        let dir = tempfile::tempdir().unwrap();
        model_dir(&dir.path().join("base"));
        write_chats(&dir.path().join("train.jsonl"));
        let mut whole = RecordingProgress::default();
        run_job(&job(dir.path(), hyper.clone(), "whole"), &mut whole).unwrap();
        let mut first = RecordingProgress {
            stop_after: Some((3, StopReason::Pause)),
            ..Default::default()
        };
        let paused = run_job(&job(dir.path(), hyper.clone(), "split"), &mut first).unwrap();
        assert_eq!(paused.stopped, Some(Stopped::Paused));
        let ckpt = paused.last_checkpoint.clone().unwrap();
        assert_eq!(
            ckpt.join("adapter/adapter_model.safetensors").is_file(),
            lora,
            "a LoRA checkpoint keeps the adapter, a full one the model"
        );
        assert_eq!(ckpt.join("model.safetensors").is_file(), !lora);
        let mut rest = RecordingProgress::default();
        let mut resumed = job(dir.path(), hyper, "split");
        resumed.resume_from = Some(ckpt);
        let out = run_job(&resumed, &mut rest).unwrap();
        assert_eq!(out.steps_completed, 6);
        let steps: Vec<_> = first.steps.iter().chain(&rest.steps).collect();
        assert_eq!(steps.len(), whole.steps.len());
        for (a, b) in whole.steps.iter().zip(steps) {
            assert_eq!(a.step, b.step);
            assert!(
                (a.train_loss - b.train_loss).abs() < 1e-6,
                "step {}: uninterrupted {} vs resumed {}",
                a.step,
                a.train_loss,
                b.train_loss
            );
        }
        let (w, r) = (
            tensors(&dir.path().join("whole")),
            tensors(&dir.path().join("split")),
        );
        for (name, t) in &w {
            assert!(crate::testing::max_abs_diff(t, &r[name]) < 1e-5, "{name}");
        }
    }

    #[test]
    fn paused_lora_job_resumes_as_if_never_stopped() {
        paused_and_resumed_equals_uninterrupted(
            serde_json::json!({
                "batch_size": 2, "max_seq_len": 128, "max_steps": 6, "learning_rate": 1e-2,
                "gradient_accumulation_steps": 2,
                "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]}
            }),
            true,
        );
    }

    #[test]
    fn paused_full_job_resumes_as_if_never_stopped() {
        paused_and_resumed_equals_uninterrupted(
            serde_json::json!({"batch_size": 2, "max_seq_len": 128, "max_steps": 6, "learning_rate": 1e-3}),
            false,
        );
    }

    /// A base model whose tokenizer has no ChatML tokens and no chat template (word-level, as
    /// some base models come).
    fn model_without_chatml(dir: &Path, tied: bool) -> ModelConfig {
        let mut words: Vec<String> = ["[UNK]", "</s>", "Be", "brief.", "Tell", "me", "about"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        for t in TOPICS {
            words.extend([format!("{t}"), format!("{t}."), format!("Sure, {t}")]);
        }
        words.extend(
            [
                "please.",
                "Sure,",
                "are",
                "nice.",
                "More?",
                "system",
                "user",
                "assistant",
            ]
            .map(String::from),
        );
        words.sort();
        words.dedup();
        let vocab = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::whitespace::WhitespaceSplit,
        ));
        std::fs::create_dir_all(dir).unwrap();
        tok.save(dir.join("tokenizer.json"), false).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token": "</s>", "unk_token": "[UNK]"}"#,
        )
        .unwrap();
        let mut cfg = ModelConfig::llama(words.len(), 32, 64, 2, 4, 2, 128);
        cfg.tie_word_embeddings = tied;
        cfg.eos_token_id = tok.token_to_id("</s>");
        let vm = model::init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
        let w = model::varmap_tensors(&vm);
        hf::save_model_folder(dir, &cfg, &w).unwrap();
        cfg
    }

    #[test]
    fn chatml_tokens_are_registered_trained_and_saved_for_models_without_a_template() {
        for (tied, lora) in [(true, true), (false, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let base_cfg = model_without_chatml(&dir.path().join("base"), tied);
            write_chats(&dir.path().join("train.jsonl"));
            let mut hyper = serde_json::json!({"batch_size": 2, "max_seq_len": 128,
                "max_steps": 4, "learning_rate": 1e-2});
            if lora {
                hyper["lora"] =
                    serde_json::json!({"r": 4, "alpha": 8, "target_modules": ["q_proj"]});
            }
            run_job(&job(dir.path(), hyper, "out"), &mut NoProgress).unwrap();
            let out = dir.path().join("out");
            // The tokenizer saved with the model has both tokens, after the old vocabulary.
            let tok = crate::tokenizer::load(&out.join("tokenizer.json")).unwrap();
            let v = base_cfg.vocab_size as u32;
            let (start, end) = (
                tok.token_to_id(crate::tokenizer::IM_START),
                tok.token_to_id(crate::tokenizer::IM_END),
            );
            assert_eq!((start, end), (Some(v), Some(v + 1)));
            assert!(super::super::chat_tokens::has_chat_template(&out));
            let cfg = hf::read_config(&out).unwrap();
            assert_eq!(cfg.vocab_size, base_cfg.vocab_size + 2);
            // Old rows of the embedding moved only by training; the new rows started at the mean
            // and were trained (they differ from the mean of the base rows).
            let base = tensors(&dir.path().join("base"));
            let tuned = tensors(&out);
            let emb = &tuned["model.embed_tokens.weight"];
            assert_eq!(emb.dims()[0], base_cfg.vocab_size + 2);
            let mean = base["model.embed_tokens.weight"].mean_keepdim(0).unwrap();
            let im_end_row = emb.narrow(0, base_cfg.vocab_size + 1, 1).unwrap();
            assert!(
                crate::testing::max_abs_diff(&im_end_row, &mean) > 0.0,
                "the <|im_end|> row was trained"
            );
            if lora {
                let a = out.join("adapter");
                let cfg: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(a.join("adapter_config.json")).unwrap(),
                )
                .unwrap();
                let want = if tied {
                    serde_json::json!(["embed_tokens"])
                } else {
                    serde_json::json!(["embed_tokens", "lm_head"])
                };
                assert_eq!(cfg["modules_to_save"], want);
                let t = candle_core::safetensors::load(
                    a.join("adapter_model.safetensors"),
                    &Device::Cpu,
                )
                .unwrap();
                assert!(t.contains_key("base_model.model.model.embed_tokens.weight"));
                assert_eq!(t.contains_key("base_model.model.lm_head.weight"), !tied);
            }
            // The model loads for chat and renders ChatML with the new single tokens.
            let m = crate::infer::engine::LoadedModel::load(&out).unwrap();
            let ids = m
                .chat_prompt(&[crate::chat::template::ChatMessage::new("user", "More?")])
                .unwrap();
            assert_eq!(ids[0], v, "{ids:?}");
        }
    }
}
