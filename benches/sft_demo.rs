//! The SFT demo (issue 5's figures): learning is real, and what LoRA costs against full
//! fine-tuning on the same model.
//!
//! 1. Wick pretrains a tiny model (`wick-llama-1m`, BPE trained on the corpus) on plain sentences
//!    about small numbers, which never show the answer format.
//! 2. A generated instruction set with a strict answer format: two kinds of question
//!    ("What is 3 plus 4?", "Which is larger, 7 or 3?"), answered exactly `Answer: <number>` and
//!    nothing else, then the end-of-turn token.
//! 3. Held-out prompts (number pairs never seen in training) are answered greedily before and
//!    after LoRA fine-tuning: exact-format accuracy (the whole reply matches `Answer: <digits>` and
//!    the model stopped by itself) and exact-answer accuracy (the number is also right).
//! 4. Tokens/s of LoRA vs full fine-tuning, same base, data and settings, in this process.
//! 5. Preference tuning (DPO) of the fully fine-tuned model on the training prompts: the right
//!    answer preferred over the model's own wrong greedy reply (or, where it was right, a near
//!    miss: the sum off by one, the smaller number). Held-out preference accuracy (the model gives
//!    the right answer a higher log-prob than the other) and exact answers, before and after DPO,
//!    beside a control that trains as many more epochs of LoRA SFT on the right answers instead;
//!    DPO tokens/s against full SFT's.
//!
//! `cargo bench --bench sft_demo` (figures in docs/benchmarks.md). `-- --keep DIR` keeps the
//! models in DIR, `-- --preset NAME` pretrains another architecture than `wick-llama-1m`,
//! `-- --strict-held-out` keeps the held-out number pairs out of the pretraining text too;
//! `-- --dpo-only DIR` reruns stage 5 alone on them (`WICK_DPO_HP`, a JSON object,
//! overrides its hyperparameters, `WICK_DPO_ALL_MISSES=1` adds a pair for every near miss).
//! `-- --speed` runs only a
//! throughput comparison: LoRA vs full fine-tuning, 30 steps each, on two model sizes built with
//! random weights (no pretraining needed to time a step), back to back in this process.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use wick::chat::loss_mask::Overlength;
use wick::chat::template::ChatMessage;
use wick::chat::template::ChatTemplate;
use wick::infer::engine::{FinishReason, GenerateParams, LoadedModel};
use wick::model::Llama;
use wick::spec::JobSpec;
use wick::train::dpo::data::read_preference_file;
use wick::train::dpo::reference::sequence_logps;
use wick::train::{RecordingProgress, TrainJob, run_job};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A question of the instruction set and its one right answer.
fn question(kind: usize, a: u32, b: u32) -> (String, String) {
    match kind {
        0 => (
            format!("What is {a} plus {b}?"),
            format!("Answer: {}", a + b),
        ),
        _ => (
            format!("Which is larger, {a} or {b}?"),
            format!("Answer: {}", a.max(b)),
        ),
    }
}

/// Number pairs, split so held-out prompts never appear in training.
fn pairs() -> (Vec<(usize, u32, u32)>, Vec<(usize, u32, u32)>) {
    let mut all = Vec::new();
    for kind in 0..2 {
        for a in 0..20u32 {
            for b in 0..20u32 {
                if kind == 1 && a == b {
                    continue;
                }
                all.push((kind, a, b));
            }
        }
    }
    // A fixed, seedless shuffle: every 7th pair is held out.
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, p) in all.into_iter().enumerate() {
        if i % 7 == 3 { &mut held } else { &mut train }.push(p);
    }
    (train, held)
}

/// Near misses of the right answer, closest first: the sum off by one (either way), or the
/// smaller number.
fn near_misses(kind: usize, a: u32, b: u32) -> Vec<String> {
    match kind {
        0 => [a + b + 1, (a + b).wrapping_sub(1)]
            .into_iter()
            .filter(|&n| n != u32::MAX)
            .map(|n| format!("Answer: {n}"))
            .collect(),
        _ => vec![format!("Answer: {}", a.min(b))],
    }
}

/// One preference line: the prompt as the chats ask it, the right answer over `miss`.
fn preference_line(kind: usize, a: u32, b: u32, miss: &str) -> serde_json::Value {
    let (q, right) = question(kind, a, b);
    serde_json::json!({
        "input": {"messages": [
            {"role": "system", "content": "Reply with the answer only."},
            {"role": "user", "content": q}]},
        "preferred_output": [{"role": "assistant", "content": right}],
        "non_preferred_output": [{"role": "assistant", "content": miss}]})
}

/// The fraction of the pairs in `pairs_file` whose preferred output the model in `dir` gives the
/// higher summed log-prob.
fn preference_accuracy(dir: &Path, pairs_file: &Path) -> f64 {
    let dev = Device::Cpu;
    let cfg = wick::model::hf::read_config(dir).unwrap();
    let weights = wick::model::hf::load_weights(dir, &cfg, candle_core::DType::F32, &dev).unwrap();
    let net = Llama::load(
        candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &dev),
        &cfg,
    )
    .unwrap();
    let tokenizer = wick::tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let template = ChatTemplate::from_model_dir(dir).unwrap();
    let (pairs, ..) =
        read_preference_file(pairs_file, &tokenizer, &template, 128, Overlength::Truncate).unwrap();
    let pad = cfg.pad_token_id.unwrap_or(0);
    let logps = sequence_logps(&net, &pairs, 32, pad, &dev, &mut |_| {}).unwrap();
    logps.iter().filter(|[c, r]| c > r).count() as f64 / logps.len() as f64
}

fn write_lines(path: &Path, lines: impl Iterator<Item = serde_json::Value>) {
    let text: String = lines.map(|l| l.to_string() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn chat_line(q: &str, a: &str) -> serde_json::Value {
    serde_json::json!({"messages": [
        {"role": "system", "content": "Reply with the answer only."},
        {"role": "user", "content": q},
        {"role": "assistant", "content": a}]})
}

fn spec(model: &str, method: serde_json::Value) -> JobSpec {
    serde_json::from_value(
        serde_json::json!({"model": model, "training_file": "t", "seed": 11, "method": method}),
    )
    .unwrap()
}

fn run(dir: &Path, spec: JobSpec, train: &str, out: &str) -> (f64, RecordingProgress) {
    let job = TrainJob {
        spec,
        training_file: dir.join(train),
        validation_file: None,
        output_dir: dir.join(out),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: Some("demo-base".into()),
    };
    let mut progress = RecordingProgress::default();
    let t = Instant::now();
    run_job(&job, &mut progress).unwrap();
    (t.elapsed().as_secs_f64(), progress)
}

/// The greedy replies of the model in `dir` to `prompts`, and whether each stopped by itself.
fn greedy_replies(dir: &Path, prompts: &[(usize, u32, u32)]) -> Vec<(String, bool)> {
    let model = LoadedModel::load(dir, wick::devices::DeviceId::Cpu).unwrap();
    let params = GenerateParams {
        max_tokens: 12,
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
        stop: vec![],
    };
    prompts
        .iter()
        .map(|&(kind, a, b)| {
            let (q, _) = question(kind, a, b);
            let prompt = model
                .chat_prompt(&[
                    ChatMessage::new("system", "Reply with the answer only."),
                    ChatMessage::new("user", q),
                ])
                .unwrap();
            let g = model.generate(&prompt, &params, |_| true).unwrap();
            (g.text, g.finish_reason == FinishReason::Stop)
        })
        .collect()
}

/// Exact-format and exact-answer accuracy of the model in `dir` on `held`, greedy decoding.
fn accuracy(dir: &Path, held: &[(usize, u32, u32)]) -> (f64, f64, Vec<String>) {
    let replies = greedy_replies(dir, held);
    let (mut format_ok, mut answer_ok, mut samples) = (0, 0, Vec::new());
    for (i, (&(kind, a, b), (text, stopped))) in held.iter().zip(&replies).enumerate() {
        let (q, want) = question(kind, a, b);
        let digits = text.strip_prefix("Answer: ").unwrap_or("");
        let formatted =
            *stopped && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
        format_ok += usize::from(formatted);
        answer_ok += usize::from(formatted && *text == want);
        if i < 4 {
            let how = if *stopped { "stop" } else { "length" };
            samples.push(format!("{q} -> {text:?} ({how})"));
        }
    }
    let n = held.len() as f64;
    (format_ok as f64 / n, answer_ok as f64 / n, samples)
}

fn mean_tokens_per_second(p: &RecordingProgress) -> f64 {
    // Skip the first steps (allocator and thread-pool warm-up).
    let tail: Vec<f64> = p
        .steps
        .iter()
        .skip(5)
        .map(|s| s.tokens_per_second)
        .collect();
    tail.iter().sum::<f64>() / tail.len().max(1) as f64
}

/// The median step's tokens/s after the first 5 (steadier than the mean on a shared host).
fn median_tokens_per_second(p: &RecordingProgress) -> f64 {
    let mut tail: Vec<f64> = p
        .steps
        .iter()
        .skip(5)
        .map(|s| s.tokens_per_second)
        .collect();
    tail.sort_by(|a, b| a.total_cmp(b));
    tail.get(tail.len() / 2).copied().unwrap_or(0.0)
}

/// A random-weight model folder of the given shape, with a BPE tokenizer trained on `texts`.
fn random_model(dir: &Path, texts: &[String], hidden: usize, layers: usize) {
    use wick::model::{ModelConfig, hf, init_varmap};
    let tok = wick::tokenizer::train_bpe(texts.iter(), 512).unwrap();
    let mut cfg = ModelConfig::llama(
        tok.get_vocab_size(true),
        hidden,
        hidden * 3,
        layers,
        8,
        4,
        256,
    );
    cfg.eos_token_id = Some(0);
    cfg.pad_token_id = Some(1);
    let vm = init_varmap(&cfg, 1, candle_core::DType::F32, &Device::Cpu).unwrap();
    let w = wick::model::varmap_tensors(&vm);
    hf::save_model_folder(dir, &cfg, &w).unwrap();
    wick::tokenizer::save_trained(&tok, dir, 256).unwrap();
}

fn speed_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (train, _) = pairs();
    write_lines(
        &dir.join("chat.jsonl"),
        train.iter().map(|&(k, a, b)| {
            let (q, ans) = question(k, a, b);
            chat_line(&q, &ans)
        }),
    );
    let texts: Vec<String> = train
        .iter()
        .map(|&(k, a, b)| {
            let (q, ans) = question(k, a, b);
            format!("Reply with the answer only. {q} {ans}")
        })
        .collect();
    // `--speed 512` (or 128) runs one model size; `--only lora|full` one method (for profiling).
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let size: Option<usize> = after("--speed").and_then(|s| s.parse().ok());
    let only = after("--only");
    for (hidden, layers) in [(128, 2), (512, 8)] {
        if size.is_some_and(|s| s != hidden) {
            continue;
        }
        let folder = dir.join(format!("base-{hidden}"));
        random_model(&folder, &texts, hidden, layers);
        let base = folder.display().to_string();
        let mut rates = Vec::new();
        for lora in [true, false] {
            if only.as_deref().is_some_and(|o| (o == "lora") != lora) {
                continue;
            }
            let mut h = serde_json::json!({"max_steps": 30, "batch_size": 8, "max_seq_len": 128,
                "learning_rate": 1e-4, "checkpoint_every": 100000, "eval_every": 100000,
                "validation_split": 0.0});
            if lora {
                h["lora"] = serde_json::json!({"r": 16, "alpha": 32, "dropout": 0.05,
                    "target_modules": ["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]});
            }
            let spec = spec(
                &base,
                serde_json::json!({"type": "supervised", "supervised": {"hyperparameters": h}}),
            );
            let (secs, p) = run(dir, spec, "chat.jsonl", &format!("out-{hidden}-{lora}"));
            let tps = median_tokens_per_second(&p);
            println!(
                "hidden {hidden}, {layers} layers: {} {tps:.0} tok/s (median step; {secs:.1} s for 30 steps)",
                if lora {
                    "LoRA r16 all 7 targets"
                } else {
                    "full"
                }
            );
            rates.push(tps);
        }
        if rates.len() == 2 {
            println!("hidden {hidden}: LoRA/full {:.2}x", rates[0] / rates[1]);
        }
    }
}

fn main() {
    // As `wick train` and a worker's training child do.
    wick::allocator::keep_freed_memory();
    // SAFETY: the bench has started no thread yet.
    unsafe { wick::threads::one_candle_thread() };
    if std::env::args().any(|a| a == "--speed") {
        return speed_only();
    }
    let arg_after = |flag: &str| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == flag)
            .map(|i| std::path::PathBuf::from(&args[i + 1]))
    };
    // `--dpo-only DIR`: stage 5 alone, on the models a `--keep DIR` run left.
    if let Some(dir) = arg_after("--dpo-only") {
        let (_, held) = pairs();
        let (_, full_ans, _) = accuracy(&dir.join("full"), &held);
        return preference_stage(&dir, &held, full_ans, f64::NAN);
    }
    let keep = arg_after("--keep");
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let (train, held) = pairs();

    // 1. Pretraining text: the same numbers and words, never the answer format. Every ordered
    // pair of 0-19 five times (each sentence kind at least once: 400 ≡ 1 mod 3), so the base
    // knows the sums as a pretrained model would; `--strict-held-out` leaves out the pairs of
    // the held-out prompts (either kind), so nothing about them is ever seen.
    let strict = std::env::args().any(|a| a == "--strict-held-out");
    let unseen: std::collections::HashSet<(u32, u32)> =
        held.iter().map(|&(_, a, b)| (a, b)).collect();
    let corpus = (0..2000u32).filter_map(|i| {
        let (a, b) = (i % 20, (i / 20) % 20);
        if strict && unseen.contains(&(a, b)) {
            return None;
        }
        let text = match i % 3 {
            0 => format!(
                "{a} plus {b} is {}. The sum of {a} and {b} is {}.",
                a + b,
                a + b
            ),
            1 => format!(
                "Which is larger, {a} or {b}? Of {a} and {b}, {} is larger.",
                a.max(b)
            ),
            _ => format!(
                "Answer with care. {b} and {a} are numbers; {} is their sum.",
                a + b
            ),
        };
        Some(serde_json::json!({ "text": text }))
    });
    write_lines(&dir.join("corpus.jsonl"), corpus);
    // `--preset NAME`: a larger architecture than the default 1M one.
    let preset = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--preset")
            .map_or("wick-llama-1m".to_string(), |i| args[i + 1].clone())
    };
    let (t_pre, pre) = run(
        dir,
        spec(
            &preset,
            serde_json::json!({"type": "pretrain", "pretrain": {"hyperparameters": {
            "vocab_size": 512, "max_seq_len": 128, "batch_size": 8, "max_steps": 300,
            "learning_rate": 3e-3, "warmup_steps": 20, "checkpoint_every": 100000}}}),
        ),
        "corpus.jsonl",
        "base",
    );
    println!(
        "pretrain: {} steps in {t_pre:.1} s, final loss {:.3}",
        pre.steps.len(),
        pre.steps.last().unwrap().train_loss
    );

    // 2. The instruction set.
    write_lines(
        &dir.join("chat.jsonl"),
        train.iter().map(|&(k, a, b)| {
            let (q, ans) = question(k, a, b);
            chat_line(&q, &ans)
        }),
    );
    println!(
        "instruction set: {} training chats, {} held-out prompts",
        train.len(),
        held.len()
    );

    // 3. Before and after.
    let (before_fmt, before_ans, before_samples) = accuracy(&dir.join("base"), &held);
    println!(
        "before SFT: exact format {:.1}%, exact answer {:.1}%",
        100.0 * before_fmt,
        100.0 * before_ans
    );
    for s in before_samples {
        println!("  {s}");
    }
    let base = dir.join("base").display().to_string();
    let sft = |lora: Option<serde_json::Value>| {
        let mut h = serde_json::json!({"n_epochs": 6, "batch_size": 8, "max_seq_len": 128,
            "learning_rate": 5e-3, "warmup_ratio": 0.05, "checkpoint_every": 100000});
        if let Some(l) = lora {
            h["lora"] = l;
        } else {
            h["learning_rate"] = serde_json::json!(1e-3);
        }
        spec(
            &base,
            serde_json::json!({"type": "supervised", "supervised": {"hyperparameters": h}}),
        )
    };
    let lora = serde_json::json!({"r": 16, "alpha": 32, "dropout": 0.05,
        "target_modules": ["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]});
    let (t_lora, p_lora) = run(dir, sft(Some(lora)), "chat.jsonl", "lora");
    let (after_fmt, after_ans, after_samples) = accuracy(&dir.join("lora"), &held);
    println!(
        "after LoRA SFT ({} steps, {t_lora:.1} s): exact format {:.1}%, exact answer {:.1}%",
        p_lora.steps.len(),
        100.0 * after_fmt,
        100.0 * after_ans
    );
    for s in after_samples {
        println!("  {s}");
    }

    // 4. Full fine-tuning of the same base, for speed (and its accuracy for comparison).
    let (t_full, p_full) = run(dir, sft(None), "chat.jsonl", "full");
    let (full_fmt, full_ans, _) = accuracy(&dir.join("full"), &held);
    let (lora_tps, full_tps) = (
        mean_tokens_per_second(&p_lora),
        mean_tokens_per_second(&p_full),
    );
    println!(
        "after full SFT ({} steps, {t_full:.1} s): exact format {:.1}%, exact answer {:.1}%",
        p_full.steps.len(),
        100.0 * full_fmt,
        100.0 * full_ans
    );
    println!(
        "throughput: LoRA {lora_tps:.0} tok/s, full {full_tps:.0} tok/s (LoRA/full {:.2}x)",
        lora_tps / full_tps
    );

    // 5. Preference tuning of the fully fine-tuned model.
    preference_stage(dir, &held, full_ans, full_tps);
    if let Some(keep) = keep {
        println!("models kept in {}", keep.display());
    }
}

/// Stage 5: DPO of the fully fine-tuned model in `dir/full` on the training prompts, the right
/// answer over the model's own mistake or a near miss; held-out preference and exact-answer
/// accuracy before and after, and DPO's throughput against `sft_tps`.
fn preference_stage(dir: &Path, held: &[(usize, u32, u32)], sft_ans: f64, sft_tps: f64) {
    let (train, _) = pairs();
    // The non-preferred output of each prompt is the SFT model's own greedy reply when it is
    // wrong (the mistakes DPO should unlearn, as preference data is usually gathered), else a
    // near miss.
    // With `all`, every near miss gives a pair too, beside the model's own mistake.
    let lines = |prompts: &[(usize, u32, u32)], all: bool| -> Vec<serde_json::Value> {
        let replies = greedy_replies(&dir.join("full"), prompts);
        prompts
            .iter()
            .zip(replies)
            .flat_map(|(&(k, a, b), (reply, _))| {
                let right = question(k, a, b).1;
                let mut misses = Vec::new();
                if reply != right && !reply.trim().is_empty() {
                    misses.push(reply);
                }
                for m in near_misses(k, a, b) {
                    if (all || misses.is_empty()) && !misses.contains(&m) {
                        misses.push(m);
                    }
                }
                misses
                    .into_iter()
                    .map(move |m| preference_line(k, a, b, &m))
            })
            .collect()
    };
    let all = std::env::var("WICK_DPO_ALL_MISSES").is_ok();
    write_lines(&dir.join("prefs.jsonl"), lines(&train, all).into_iter());
    write_lines(
        &dir.join("held_prefs.jsonl"),
        lines(held, false).into_iter(),
    );
    let sft_pref = preference_accuracy(&dir.join("full"), &dir.join("held_prefs.jsonl"));
    println!(
        "after full SFT: held-out preference accuracy {:.1}% ({} pairs), exact answer {:.1}%",
        100.0 * sft_pref,
        held.len(),
        100.0 * sft_ans
    );
    let hyper: serde_json::Value = match std::env::var("WICK_DPO_HP") {
        // For experiments: hyperparameters merged over the defaults below.
        Ok(extra) => serde_json::from_str(&extra).unwrap(),
        Err(_) => serde_json::json!({}),
    };
    // Chosen by the runs in docs/benchmarks.md: without the NLL term (rpo_alpha) DPO moves
    // the preference but loses the answer format; rpo_alpha 2 over 10 epochs ranked best.
    let mut h = serde_json::json!({
        "beta": 0.5, "rpo_alpha": 2.0, "n_epochs": 10, "batch_size": 8, "max_seq_len": 128,
        "learning_rate": 2e-3, "warmup_ratio": 0.05, "checkpoint_every": 100000,
        "validation_split": 0.05,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                 "target_modules": ["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]}});
    h.as_object_mut()
        .unwrap()
        .extend(hyper.as_object().unwrap().clone());
    println!("DPO hyperparameters: {h}");
    let dpo_spec = spec(
        &dir.join("full").display().to_string(),
        serde_json::json!({"type": "dpo", "dpo": {"hyperparameters": h}}),
    );
    let (t_dpo, p_dpo) = run(dir, dpo_spec, "prefs.jsonl", "dpo");
    let dpo_pref = preference_accuracy(&dir.join("dpo"), &dir.join("held_prefs.jsonl"));
    let (dpo_fmt, dpo_ans, dpo_samples) = accuracy(&dir.join("dpo"), held);
    let last = p_dpo.steps.last().unwrap();
    println!(
        "after DPO ({} steps, {t_dpo:.1} s; final loss {:.3}, reward accuracy {:.2}, margin {:.2}): \
         held-out preference accuracy {:.1}%, exact format {:.1}%, exact answer {:.1}%",
        p_dpo.steps.len(),
        last.train_loss,
        last.extra["rewards/accuracies"],
        last.extra["rewards/margins"],
        100.0 * dpo_pref,
        100.0 * dpo_fmt,
        100.0 * dpo_ans,
    );
    for s in dpo_samples {
        println!("  {s}");
    }
    // The control: as many more epochs of LoRA SFT on the right answers alone, same settings.
    let mut control = h.clone();
    for k in ["beta", "rpo_alpha", "validation_split"] {
        control.as_object_mut().unwrap().remove(k);
    }
    let control_spec = spec(
        &dir.join("full").display().to_string(),
        serde_json::json!({"type": "supervised", "supervised": {"hyperparameters": control}}),
    );
    let (t_more, p_more) = run(dir, control_spec, "chat.jsonl", "sft_more");
    let more_pref = preference_accuracy(&dir.join("sft_more"), &dir.join("held_prefs.jsonl"));
    let (more_fmt, more_ans, _) = accuracy(&dir.join("sft_more"), held);
    println!(
        "control, more LoRA SFT instead ({} steps, {t_more:.1} s): held-out preference accuracy \
         {:.1}%, exact format {:.1}%, exact answer {:.1}%",
        p_more.steps.len(),
        100.0 * more_pref,
        100.0 * more_fmt,
        100.0 * more_ans
    );
    let (dpo_tps, more_tps) = (
        mean_tokens_per_second(&p_dpo),
        mean_tokens_per_second(&p_more),
    );
    println!(
        "throughput: DPO {dpo_tps:.0} tok/s, the LoRA SFT control {more_tps:.0} tok/s (DPO/SFT \
         {:.2}x; full SFT earlier {sft_tps:.0} tok/s)",
        dpo_tps / more_tps
    );
}
