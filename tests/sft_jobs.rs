//! Whole supervised fine-tuning jobs on tiny models, through `train::run_job` as a worker runs
//! them: LoRA (adapter and merged model), full fine-tuning, pause and resume equal to an
//! uninterrupted run, and ChatML registered for models without a chat template.

#[path = "common/chat_model.rs"]
mod chat_model;

use std::path::Path;

use candle_core::{DType, Device};
use chat_model::{TOPICS, assert_same_weights, max_abs_diff, model_dir, same, tensors};
use tokenizers::Tokenizer;
use wick::model::ModelConfig;
use wick::model::hf;
use wick::train::chat_tokens::has_chat_template;
use wick::train::{NoProgress, RecordingProgress, StopReason, Stopped, TrainJob, run_job};

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
    chat_model::job(dir, "supervised", "train.jsonl", hyper, out)
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
    let a = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu)
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
    // A QLoRA job keeps its quantised base beside its work for the resume, and drops it at the end.
    let quantised = hyper["lora"]["quantization"].is_string();
    let cache = dir
        .path()
        .join("split")
        .join(wick::model::quantized_cache::FILE);
    assert_eq!(cache.is_file(), quantised);
    let mut rest = RecordingProgress::default();
    let mut resumed = job(dir.path(), hyper, "split");
    resumed.resume_from = Some(ckpt);
    let out = run_job(&resumed, &mut rest).unwrap();
    assert_eq!(out.steps_completed, 6);
    assert!(!cache.exists());
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
    assert_same_weights(&dir.path().join("whole"), &dir.path().join("split"), 1e-5);
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
    let vm = wick::model::init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
    let w = wick::model::varmap_tensors(&vm);
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
            hyper["lora"] = serde_json::json!({"r": 4, "alpha": 8, "target_modules": ["q_proj"]});
        }
        run_job(&job(dir.path(), hyper, "out"), &mut NoProgress).unwrap();
        let out = dir.path().join("out");
        // The tokenizer saved with the model has both tokens, after the old vocabulary.
        let tok = wick::tokenizer::load(&out.join("tokenizer.json")).unwrap();
        let v = base_cfg.vocab_size as u32;
        let (start, end) = (
            tok.token_to_id(wick::tokenizer::IM_START),
            tok.token_to_id(wick::tokenizer::IM_END),
        );
        assert_eq!((start, end), (Some(v), Some(v + 1)));
        assert!(has_chat_template(&out));
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
            max_abs_diff(&im_end_row, &mean) > 0.0,
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
            let t =
                candle_core::safetensors::load(a.join("adapter_model.safetensors"), &Device::Cpu)
                    .unwrap();
            assert!(t.contains_key("base_model.model.model.embed_tokens.weight"));
            assert_eq!(t.contains_key("base_model.model.lm_head.weight"), !tied);
        }
        // The model loads for chat and renders ChatML with the new single tokens.
        let m = wick::infer::engine::LoadedModel::load(&out, wick::devices::DeviceId::Cpu).unwrap();
        let ids = m
            .chat_prompt(&[wick::chat::template::ChatMessage::new("user", "More?")])
            .unwrap();
        assert_eq!(ids[0], v, "{ids:?}");
    }
}

/// Activation recompute changes memory, not the numbers: a packed LoRA job with dropout and
/// gradient accumulation gives the same per-step losses and the same adapter with and without it.
#[test]
fn gradient_checkpointing_gives_the_same_losses_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_chats(&dir.path().join("train.jsonl"));
    let run = |recompute: bool, out: &str| {
        let hyper = serde_json::json!({
            "batch_size": 2, "max_seq_len": 128, "max_steps": 4, "learning_rate": 1e-2,
            "gradient_accumulation_steps": 2, "gradient_checkpointing": recompute,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.2}
        });
        let mut progress = RecordingProgress::default();
        run_job(&job(dir.path(), hyper, out), &mut progress).unwrap();
        progress.steps
    };
    let plain = run(false, "plain");
    let recomputed = run(true, "recomputed");
    assert_eq!(plain.len(), 4);
    assert_eq!(plain.len(), recomputed.len());
    for (a, b) in plain.iter().zip(&recomputed) {
        assert!(
            (a.train_loss - b.train_loss).abs() <= 1e-6
                && (a.grad_norm - b.grad_norm).abs() <= 1e-6,
            "step {}: loss {} vs {}, gradient norm {} vs {}",
            a.step,
            a.train_loss,
            b.train_loss,
            a.grad_norm,
            b.grad_norm
        );
    }
    assert_same_weights(
        &dir.path().join("plain"),
        &dir.path().join("recomputed"),
        1e-6,
    );
}

/// QLoRA: the same job as LoRA with the base's projections in NF4 (double quantisation on), and
/// in int8. The first step's loss is the dequantised base's (the adapters start at zero), close
/// to LoRA's on the f32 base; it trains; the adapter has LoRA's tensors; the merged model is the
/// dequantised base plus the adapter, near the f32 merge; and a paused job resumes as if never
/// stopped.
#[test]
fn qlora_job_trains_on_an_nf4_base_and_merges_from_it() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_chats(&dir.path().join("train.jsonl"));
    let lora = serde_json::json!({"r": 4, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj", "down_proj"]});
    let hyper = |q: Option<&str>| {
        let mut l = lora.clone();
        if let Some(q) = q {
            l["quantization"] = q.into();
            l["double_quant"] = (q == "nf4").into();
        }
        serde_json::json!({"batch_size": 2, "max_seq_len": 128, "max_steps": 6,
            "learning_rate": 1e-2, "lora": l})
    };
    let mut plain = RecordingProgress::default();
    run_job(&job(dir.path(), hyper(None), "lora"), &mut plain).unwrap();
    let mut q = RecordingProgress::default();
    run_job(&job(dir.path(), hyper(Some("nf4")), "qlora"), &mut q).unwrap();
    let mut q8 = RecordingProgress::default();
    run_job(&job(dir.path(), hyper(Some("int8")), "int8"), &mut q8).unwrap();
    let (l0, q0) = (plain.steps[0].train_loss, q.steps[0].train_loss);
    assert!(l0 != q0, "the NF4 base is not the f32 one");
    assert!(
        (l0 - q0).abs() < 0.05 * l0,
        "first losses {l0} (LoRA) vs {q0} (QLoRA)"
    );
    let last = q.steps.last().unwrap().train_loss;
    assert!(last < q0, "QLoRA loss did not fall: {q0} -> {last}");
    // int8 codes are finer than NF4's: its base is nearer the f32 one.
    let i0 = q8.steps[0].train_loss;
    assert!(
        l0 != i0 && (l0 - i0).abs() < 0.01 * l0,
        "first losses {l0} vs {i0} (int8)"
    );
    let last = q8.steps.last().unwrap().train_loss;
    assert!(last < i0, "int8 QLoRA loss did not fall: {i0} -> {last}");

    let names = |d: &str| {
        let mut n: Vec<String> = candle_core::safetensors::load(
            dir.path().join(d).join("adapter/adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
        .into_keys()
        .collect();
        n.sort();
        n
    };
    assert_eq!(names("qlora"), names("lora"));
    assert_eq!(names("int8"), names("lora"));

    // Merged: every projection is the dequantised base (+ the adapter where there is one), a
    // quantisation step away from the f32 base; embeddings and norms are the base's, bitwise.
    let base = tensors(&dir.path().join("base"));
    let merged = tensors(&dir.path().join("qlora"));
    let merged8 = tensors(&dir.path().join("int8"));
    assert_eq!(base.len(), merged.len());
    assert_eq!(base.len(), merged8.len());
    for (name, t) in &base {
        assert_eq!(
            !name.contains("_proj."),
            same(t, &merged8[name]),
            "{name} (int8)"
        );
        let projection = name.contains("_proj.");
        assert_eq!(!projection, same(t, &merged[name]), "{name}");
        if projection {
            let scale = t
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let diff = max_abs_diff(t, &merged[name]);
            assert!(
                diff < 0.5 * scale,
                "{name}: merged differs from the base by {diff}"
            );
            // Without an adapter, the merged weight is exactly the dequantised base.
            let adapted = ["q_proj", "v_proj", "down_proj"]
                .iter()
                .any(|p| name.contains(p));
            if !adapted {
                let (o, i) = t.dims2().unwrap();
                let w = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let deq = wick::model::nf4::Nf4::quantize(&w, (o, i), true).dequantize();
                let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>();
                assert_eq!(
                    values(&merged[name]).unwrap(),
                    deq,
                    "{name}: not the dequantised base"
                );
                let deq8 = wick::model::int8::Int8::quantize(&w, (o, i)).dequantize();
                assert_eq!(
                    values(&merged8[name]).unwrap(),
                    deq8,
                    "{name}: not the int8 base"
                );
            }
        }
    }
    // Pause and resume equal the uninterrupted run (quantisation is deterministic, so the
    // resumed job rebuilds the same base).
    paused_and_resumed_equals_uninterrupted(hyper(Some("nf4")), true);
}

/// A QLoRA job on a bf16 model folder (as published checkpoints are) keeps the embeddings in
/// bf16 (its products widen them a block at a time): its losses are bitwise those of the same job
/// on an f32 folder holding the same values, and the merged model writes them back in bf16.
#[test]
fn qlora_keeps_a_bf16_files_embeddings_in_bf16() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = model_dir(&a.path().join("base"));
    // Every weight rounded to bf16: the f32 folder and the bf16 one hold the same values.
    let rounded: std::collections::HashMap<String, candle_core::Tensor> =
        tensors(&a.path().join("base"))
            .into_iter()
            .map(|(n, t)| (n, t.to_dtype(DType::BF16).unwrap()))
            .collect();
    let widened = rounded
        .iter()
        .map(|(n, t)| (n.clone(), t.to_dtype(DType::F32).unwrap()))
        .collect();
    hf::save_model_folder(&a.path().join("base"), &cfg, &widened).unwrap();
    std::fs::create_dir_all(b.path().join("base")).unwrap();
    for f in std::fs::read_dir(a.path().join("base")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, b.path().join("base").join(f.file_name().unwrap())).unwrap();
    }
    hf::save_model_folder(&b.path().join("base"), &cfg, &rounded).unwrap();
    // With a validation split: evaluation (the loss without a gradient) and sample replies
    // (generation through the bf16 head) run too.
    let hyper = serde_json::json!({"batch_size": 2, "max_seq_len": 128, "max_steps": 4,
        "learning_rate": 1e-2, "validation_split": 0.25, "eval_every": 2, "eval_max_tokens": 4,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "quantization": "nf4"}});
    let mut runs = Vec::new();
    for dir in [a.path(), b.path()] {
        write_chats(&dir.join("train.jsonl"));
        let mut p = RecordingProgress::default();
        run_job(&job(dir, hyper.clone(), "out"), &mut p).unwrap();
        runs.push(p);
    }
    assert_eq!(runs[0].steps.len(), runs[1].steps.len());
    for (x, y) in runs[0].steps.iter().zip(&runs[1].steps) {
        assert_eq!(
            (x.train_loss, x.grad_norm),
            (y.train_loss, y.grad_norm),
            "step {}",
            x.step
        );
    }
    let evals = |p: &RecordingProgress| -> Vec<(u64, f64)> {
        p.evals.iter().map(|e| (e.step, e.valid_loss)).collect()
    };
    assert!(!runs[0].evals.is_empty());
    assert_eq!(evals(&runs[0]), evals(&runs[1]));
    let replies = |p: &RecordingProgress| -> Vec<String> {
        p.samples
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.completion.clone()))
            .collect()
    };
    assert!(!replies(&runs[0]).is_empty());
    assert_eq!(replies(&runs[0]), replies(&runs[1]));
    let (ma, mb) = (
        tensors(&a.path().join("out")),
        tensors(&b.path().join("out")),
    );
    let embed = "model.embed_tokens.weight";
    assert_eq!(mb[embed].dtype(), DType::BF16);
    assert!(same(&ma[embed], &mb[embed].to_dtype(DType::F32).unwrap()));
    for (name, t) in &ma {
        if name != embed && !name.starts_with("lm_head") {
            assert!(same(t, &mb[name]), "{name}");
        }
    }
}

/// ShareGPT and Alpaca files train exactly as the chat files they convert to: the same
/// conversations in the three formats give bitwise the same losses, step by step.
#[test]
fn sharegpt_and_alpaca_files_train_as_their_chat_form() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    let (mut chat, mut sharegpt, mut alpaca) = (String::new(), String::new(), String::new());
    for i in 0..12 {
        let t = TOPICS[i % 5];
        let (q, a) = (format!("Tell me about {t}."), format!("{t} are nice, {i}."));
        let line = |v: serde_json::Value| v.to_string() + "\n";
        chat += &line(serde_json::json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": format!("{q}\nPlease.")},
            {"role": "assistant", "content": a},
        ]}));
        sharegpt += &line(serde_json::json!({"system": "Be brief.", "conversations": [
            {"from": "human", "value": format!("{q}\nPlease.")},
            {"from": "gpt", "value": a},
        ]}));
        alpaca += &line(serde_json::json!({
            "instruction": q, "input": "Please.", "output": a, "system": "Be brief."
        }));
    }
    let hyper = serde_json::json!({"batch_size": 2, "max_seq_len": 64, "max_steps": 3,
                                   "learning_rate": 1e-2, "validation_split": 0.0});
    let losses = |name: &str, data: &str| {
        std::fs::write(dir.path().join(name), data).unwrap();
        let mut p = RecordingProgress::default();
        let j = chat_model::job(dir.path(), "supervised", name, hyper.clone(), name);
        run_job(
            &TrainJob {
                output_dir: dir.path().join(format!("out-{name}")),
                ..j
            },
            &mut p,
        )
        .unwrap();
        p.steps.iter().map(|s| s.train_loss).collect::<Vec<f64>>()
    };
    let reference = losses("chat.jsonl", &chat);
    assert_eq!(reference.len(), 3);
    assert_eq!(losses("sharegpt.jsonl", &sharegpt), reference);
    assert_eq!(losses("alpaca.jsonl", &alpaca), reference);
}

/// The estimate counts a supervised job's rows as the trainer packs them (templates, packing,
/// the held-out split), so its step count is the run's.
#[test]
fn the_estimate_counts_the_steps_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_chats(&dir.path().join("train.jsonl"));
    for packing in [true, false] {
        let hyper = serde_json::json!({
            "batch_size": 2, "n_epochs": 2, "max_seq_len": 128, "learning_rate": 1e-3,
            "validation_split": 0.25, "packing": packing
        });
        let j = job(dir.path(), hyper, &format!("est-{packing}"));
        let mut spec = j.spec.clone();
        spec.training_file = j.training_file.display().to_string();
        let e = wick::train::job_estimate::estimate_job(&spec, &[j.training_file.as_path()], true)
            .unwrap();
        assert!(e.rows_counted);
        let out = run_job(&j, &mut NoProgress).unwrap();
        assert_eq!(e.total_steps, out.total_steps, "packing {packing}");
    }
}

/// A small model's default LoRA learning rate (by its size, `hparams::auto_learning_rate`) moves
/// the loss much further than the 2e-4 that suits billion-parameter models.
#[test]
fn the_default_lora_learning_rate_fits_a_small_model() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_chats(&dir.path().join("train.jsonl"));
    let run = |lr: Option<f64>, out: &str| {
        let mut hyper = serde_json::json!({"batch_size": 4, "max_seq_len": 128, "max_steps": 20,
                                           "validation_split": 0.0, "lora": {"r": 8, "alpha": 16}});
        if let Some(lr) = lr {
            hyper["learning_rate"] = lr.into();
        }
        let mut p = RecordingProgress::default();
        run_job(&job(dir.path(), hyper, out), &mut p).unwrap();
        let losses: Vec<f64> = p.steps.iter().map(|s| s.train_loss).collect();
        (
            p.steps[0].learning_rate,
            losses[0] - losses[losses.len() - 1],
        )
    };
    let (_, drop_old) = run(Some(2e-4), "old");
    let (lr, drop_auto) = run(None, "auto");
    // Step 1 is in the warmup; the peak is the default itself.
    assert!(lr > 0.0 && lr <= 3e-3, "{lr}");
    assert!(
        drop_auto > 3.0 * drop_old,
        "auto {drop_auto} vs 2e-4 {drop_old}"
    );
}

/// At each evaluation the model answers its sample prompts greedily: by default the first
/// held-out conversations (their assistant reply the reference), or the job's own prompts;
/// the answers are the same in a rerun and change as the model learns.
#[test]
fn evaluations_sample_answers_to_held_out_prompts() {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_chats(&dir.path().join("train.jsonl"));
    let run = |extra: serde_json::Value, out: &str| {
        let mut hyper = serde_json::json!({"batch_size": 2, "max_seq_len": 128, "max_steps": 12,
            "learning_rate": 1e-2, "validation_split": 0.25, "eval_every": 6, "eval_max_tokens": 8});
        for (k, v) in extra.as_object().unwrap() {
            hyper[k] = v.clone();
        }
        let mut p = RecordingProgress::default();
        run_job(&job(dir.path(), hyper, out), &mut p).unwrap();
        p
    };
    let p = run(serde_json::json!({}), "a");
    assert_eq!(p.samples.len(), p.evals.len());
    assert_eq!(
        p.samples.iter().map(|s| s.step).collect::<Vec<_>>(),
        [6, 12]
    );
    let first = &p.samples[0].samples;
    assert_eq!(first.len(), 3, "eval_samples defaults to 3");
    // Held-out conversations of the training file: prompts and replies as the file has them.
    let text = std::fs::read_to_string(dir.path().join("train.jsonl")).unwrap();
    for s in first {
        assert!(text.contains(&s.prompt), "{}", s.prompt);
        let reference = s.reference.as_deref().unwrap();
        assert!(text.contains(reference), "{reference}");
        assert!(s.tokens <= 8);
    }
    // Greedy: a rerun answers the same, word for word (only the time taken differs).
    let answers = |p: &RecordingProgress| -> Vec<Vec<wick::train::progress::Sample>> {
        p.samples.iter().map(|s| s.samples.clone()).collect()
    };
    assert_eq!(answers(&run(serde_json::json!({}), "b")), answers(&p));
    let own = run(
        serde_json::json!({"eval_prompts": ["Tell me about tea please."]}),
        "d",
    );
    assert_eq!(own.samples[0].samples.len(), 1);
    assert_eq!(
        own.samples[0].samples[0].prompt,
        "Tell me about tea please."
    );
    assert_eq!(own.samples[0].samples[0].reference, None);
    let none = run(serde_json::json!({"eval_samples": 0}), "e");
    assert!(none.samples.is_empty());
}
