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
//! Not yet: pausing and resuming a supervised job (no checkpoints are written).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Var};
use candle_nn::VarBuilder;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use tokenizers::Tokenizer;

use crate::chat::loss_mask::{ChatExample, ChatStats, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::model::{self, Llama, lora, peft};

use super::data::{DataError, RowSampler};
use super::hparams::{DEFAULT_MAX_SEQ_LEN, Resolved};
use super::loss::shifted_cross_entropy;
use super::optim::AdamW;
use super::progress::{EvalMetrics, Progress, StepMetrics, StopReason};
use super::schedule::Schedule;
use super::sft_pack::{PackError, PackedRow, collate, pack_examples};
use super::trainer::{
    MicroBatch, Stopped, TrainError, TrainJob, TrainOutcome, WindowStep, backward_window,
    prepare_start,
};

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
    if job.resume_from.is_some() {
        return Err(TrainError::Unsupported(
            "resuming a supervised job is not implemented yet".into(),
        ));
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
    let start = prepare_start(job, &hp, dtype, device)?;
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

    // --- model: full (every weight a Var) or LoRA (frozen base, adapters only) -----------------
    let (net, params, adapters, varmap) = match &h.lora {
        Some(lspec) => {
            let (net, adapters) = lora::load_lora_llama(
                start.weights.clone(),
                &cfg,
                lspec,
                hp.seed,
                seq_len,
                dtype,
                device,
            )?;
            let params: Vec<(String, Var, bool)> = adapters
                .named_vars()
                .into_iter()
                .map(|(n, v)| (n, v, true))
                .collect();
            (net, params, Some(adapters), None)
        }
        None => {
            let varmap = model::varmap_from_tensors(start.weights.clone(), dtype)?;
            let net = Llama::load_with_context(
                VarBuilder::from_varmap(&varmap, dtype, device),
                &cfg,
                seq_len,
            )?;
            let named = model::named_vars(&cfg, &varmap)
                .map_err(|name| TrainError::Unsupported(format!("no variable {name}")))?;
            let params = named
                .into_iter()
                .map(|(n, v, k)| (n, v, k.decays()))
                .collect();
            (net, params, None, Some(varmap))
        }
    };
    let vars: Vec<Var> = params.iter().map(|(_, v, _)| v.clone()).collect();
    let num_trainable: u64 = vars.iter().map(|v| v.elem_count() as u64).sum();
    let mut opt = AdamW::new(params, hp.adamw)?;
    let mut sampler = RowSampler::new(train_rows.len(), hp.seed, 0);
    let set_training = |on: bool| {
        if let Some(a) = &adapters {
            a.set_training(on);
        }
    };
    tracing::info!(
        parameters = cfg.num_parameters(),
        trainable = num_trainable,
        lora = adapters.is_some(),
        packing,
        total_steps,
        seq_len,
        "supervised fine-tuning"
    );

    // --- the loop ------------------------------------------------------------------------------
    let mut outcome = TrainOutcome {
        steps_completed: 0,
        total_steps,
        final_train_loss: None,
        final_valid_loss: None,
        trained_tokens: 0,
        num_parameters: cfg.num_parameters(),
        stopped: None,
        model_dir: None,
        last_checkpoint: None,
    };
    let explode_at = (3.0 * (cfg.vocab_size as f64).ln()).max(10.0);
    let (mut best, mut bad_evals) = (None::<f64>, 0u32);
    let loop_start = Instant::now();
    for step in 1..=total_steps {
        match progress.should_stop() {
            Some(StopReason::Cancel) => {
                outcome.stopped = Some(Stopped::Cancelled);
                return Ok(outcome);
            }
            Some(StopReason::Pause) => {
                return Err(TrainError::Unsupported(
                    "pausing a supervised job is not implemented yet".into(),
                ));
            }
            None => {}
        }
        let t0 = Instant::now();
        let lr = schedule.lr_at(step);
        set_training(true);
        let batches = (0..hp.gradient_accumulation_steps)
            .map(|_| {
                let rows: Vec<PackedRow> = sampler
                    .next_rows(hp.batch_size)
                    .into_iter()
                    .map(|i| train_rows[i].clone())
                    .collect();
                collate(&rows, specials.pad, dtype, device).map_err(pack_err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let window_tokens: usize = batches.iter().map(|b| b.tokens).sum();
        let norm = window_tokens.max(1) as f64;
        let micro: Vec<MicroBatch> = batches
            .iter()
            .map(|b| MicroBatch {
                input_ids: &b.input_ids,
                positions: &b.positions,
                label_weights: &b.label_weights,
                mask: Some(&b.mask),
            })
            .collect();
        let WindowStep {
            grads,
            train_loss,
            correct,
            grad_norm,
        } = backward_window(
            &net,
            &micro,
            norm,
            &vars,
            hp.max_grad_norm,
            explode_at,
            step,
        )?;
        opt.step(&grads, lr)?;
        outcome.trained_tokens += window_tokens as u64;
        let dt = t0.elapsed().as_secs_f64();
        let per_step = loop_start.elapsed().as_secs_f64() / step as f64;
        let metrics = StepMetrics {
            step,
            total_steps,
            epoch: sampler.epoch(),
            train_loss,
            train_mean_token_accuracy: correct / norm,
            learning_rate: lr,
            grad_norm,
            tokens_per_second: window_tokens as f64 / dt,
            trained_tokens: outcome.trained_tokens,
            eta_seconds: per_step * (total_steps - step) as f64,
        };
        progress.on_step(&metrics);
        outcome.steps_completed = step;
        outcome.final_train_loss = Some(train_loss);

        if (step % eval_every == 0 || step == total_steps) && !valid_rows.is_empty() {
            set_training(false);
            let (valid_loss, valid_acc) =
                evaluate_sft(&net, &valid_rows, hp.batch_size, specials.pad, device)?;
            progress.on_eval(&EvalMetrics {
                step,
                valid_loss,
                valid_perplexity: valid_loss.exp(),
                valid_mean_token_accuracy: valid_acc,
            });
            outcome.final_valid_loss = Some(valid_loss);
            if best.is_none_or(|b| valid_loss < b) {
                best = Some(valid_loss);
                bad_evals = 0;
            } else {
                bad_evals += 1;
            }
            if hp.early_stopping_patience.is_some_and(|p| bad_evals >= p) {
                outcome.stopped = Some(Stopped::EarlyStopped);
                break;
            }
        }
    }

    // --- export --------------------------------------------------------------------------------
    set_training(false);
    match (&adapters, &varmap) {
        (Some(adapters), _) => {
            peft::save_adapter(
                &job.output_dir.join("adapter"),
                adapters,
                Some(spec.model.as_str()),
            )
            .map_err(|e| TrainError::Unsupported(e.to_string()))?;
            peft::save_merged(&job.output_dir, &cfg, &start.weights, adapters)
                .map_err(|e| TrainError::Unsupported(e.to_string()))?;
        }
        (None, Some(varmap)) => {
            let weights = varmap
                .data()
                .lock()
                .expect("varmap lock")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect();
            crate::model::hf::save_model_folder(&job.output_dir, &cfg, &weights)?;
        }
        (None, None) => unreachable!("either LoRA or full weights"),
    }
    outcome.model_dir = Some(job.output_dir.clone());
    Ok(outcome)
}

/// Mean loss and token accuracy over the assistant tokens of every validation row.
pub fn evaluate_sft(
    net: &Llama,
    rows: &[PackedRow],
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> Result<(f64, f64), TrainError> {
    let (mut loss, mut correct, mut tokens) = (0.0, 0.0, 0.0);
    for chunk in rows.chunks(batch_size.max(1)) {
        let b = collate(chunk, pad, DType::F32, device).map_err(pack_err)?;
        let logits = net
            .forward(&b.input_ids, &b.positions, Some(&b.mask))?
            .detach();
        let s = shifted_cross_entropy(&logits, &b.input_ids, &b.label_weights)?;
        loss += s.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        correct += s.correct;
        tokens += s.tokens;
    }
    let tokens = tokens.max(1.0);
    Ok((loss / tokens, correct / tokens))
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
        let w = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
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
}
