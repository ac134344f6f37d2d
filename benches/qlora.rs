//! QLoRA against LoRA on a model with Qwen2.5-0.5B's shapes (issue 14's figures): peak resident
//! memory and training tokens/s of a supervised LoRA job (r 16, all seven projections, rows of
//! 1024 packed tokens, batch 1) with the base in f32, in NF4, in NF4 with double quantisation,
//! and in int8.
//!
//! One variant per process, so that each reports its own peak (the whole job: loading, steps and
//! the export of the adapter and the merged model):
//!
//! ```sh
//! cargo bench --bench qlora -- lora  DIR   # DIR: a work folder; the model is made there once
//! cargo bench --bench qlora -- nf4   DIR
//! cargo bench --bench qlora -- nf4dq DIR
//! cargo bench --bench qlora -- int8  DIR
//! cargo bench --bench qlora -- nf4 DIR recompute   # with activation recompute
//! cargo bench --bench qlora -- nf4 DIR llama1b     # Llama-3.2-1B's shapes instead
//! cargo bench --bench qlora -- nf4 DIR bf16        # the base saved in bf16, as Qwen2.5's is
//! cargo bench --bench qlora -- nf4 DIR merge-diff  # then the merged model against merging into
//!                                                   # the original weights
//! ```
//!
//! With `bf16` the model folder holds bf16 weights, as the published checkpoints do: f32 LoRA
//! widens every weight to f32 as it loads; QLoRA keeps the embeddings (tied to the LM head) in
//! bf16, as the issue asks ("stay in their dtype").
//!
//! The model has random weights (Wick's initialisation; Qwen2.5-0.5B's `config.json` shapes:
//! vocab 151,936, hidden 896, intermediate 4,864, 24 layers, 14 heads, 2 kv heads, tied
//! embeddings; or Llama-3.2-1B's: vocab 128,256, hidden 2,048, intermediate 8,192, 16 layers, 32
//! heads, 8 kv heads, tied, Llama 3 RoPE scaling) and a small BPE tokenizer trained on the
//! bench's own text, so nothing is downloaded. `bench/reference/bench_lora_cpu.py DIR/base` runs
//! PyTorch + PEFT's LoRA on the same folder.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use wick::model::{Architecture, ModelConfig, RopeScaling, hf, init_varmap, varmap_tensors};
use wick::spec::JobSpec;
use wick::train::{RecordingProgress, TrainJob, run_job};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Qwen2.5-0.5B's shapes.
fn qwen_05b() -> ModelConfig {
    let mut c = ModelConfig::llama(151_936, 896, 4864, 24, 14, 2, 32_768);
    c.architecture = Architecture::Qwen2;
    c.qkv_bias = true;
    c.rope_theta = 1_000_000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = true;
    c
}

/// Llama-3.2-1B's shapes.
fn llama_1b() -> ModelConfig {
    let mut c = ModelConfig::llama(128_256, 2048, 8192, 16, 32, 8, 131_072);
    c.rope_theta = 500_000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = true;
    c.rope_scaling = Some(RopeScaling::Llama3 {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    c
}

/// Long conversations of plain words, so packed rows fill their 1024 tokens.
fn write_chats(path: &Path) -> Vec<String> {
    let words = [
        "the", "river", "runs", "past", "a", "small", "town", "where", "people", "sell", "bread",
        "and", "fish", "every", "morning", "before", "rain",
    ];
    let mut texts = Vec::new();
    let mut out = String::new();
    for i in 0..64 {
        let sentence = |k: usize| -> String {
            (0..120)
                .map(|j| words[(i * 7 + j * 3 + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (q, a) = (sentence(1), sentence(2));
        texts.push(format!("{q} {a}"));
        let line = serde_json::json!({"messages": [
            {"role": "user", "content": q}, {"role": "assistant", "content": a}]});
        out += &(line.to_string() + "\n");
    }
    std::fs::write(path, out).unwrap();
    texts
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    wick::machine::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

fn main() {
    wick::allocator::keep_freed_memory();
    // SAFETY: no thread has started yet.
    unsafe { wick::threads::one_candle_thread() };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (variant, dir) = match args.as_slice() {
        [v, d, ..] => (v.clone(), std::path::PathBuf::from(d)),
        _ => {
            eprintln!("usage: qlora lora|nf4|nf4dq|int8 DIR [recompute] [llama1b] [bf16]");
            return;
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let llama = args.iter().any(|a| a == "llama1b");
    let bf16 = args.iter().any(|a| a == "bf16");
    let base = dir.join(format!(
        "base{}{}",
        if llama { "-llama1b" } else { "" },
        if bf16 { "-bf16" } else { "" }
    ));
    let chats = dir.join("chats.jsonl");
    let texts = write_chats(&chats);
    if !base.join("config.json").is_file() {
        let t = Instant::now();
        let cfg = if llama { llama_1b() } else { qwen_05b() };
        let vm = init_varmap(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let tok = wick::tokenizer::train_bpe(texts.iter(), 2000).unwrap();
        let mut cfg = cfg;
        let ids = wick::tokenizer::special_ids(&tok, None, None, None).unwrap();
        cfg.eos_token_id = Some(ids.eos);
        cfg.pad_token_id = Some(ids.pad);
        let mut tensors = varmap_tensors(&vm);
        if bf16 {
            for t in tensors.values_mut() {
                *t = t.to_dtype(DType::BF16).unwrap();
            }
        }
        hf::save_model_folder(&base, &cfg, &tensors).unwrap();
        wick::tokenizer::save_trained(&tok, &base, 32_768).unwrap();
        println!(
            "made the model folder in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        // A fresh process measures the variants: this one's peak holds the initialisation.
        println!("model ready at {}; run again to measure", base.display());
        return;
    }
    let mut lora = serde_json::json!({"r": 16, "alpha": 32, "dropout": 0.0, "target_modules":
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]});
    match variant.as_str() {
        "lora" => {}
        "nf4" => lora["quantization"] = "nf4".into(),
        "nf4dq" => {
            lora["quantization"] = "nf4".into();
            lora["double_quant"] = true.into();
        }
        "int8" => lora["quantization"] = "int8".into(),
        other => panic!("unknown variant {other}"),
    }
    let recompute = args.iter().any(|a| a == "recompute");
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "model": base.to_str().unwrap(), "training_file": "chats.jsonl", "seed": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 1, "max_seq_len": 1024, "max_steps": 4, "learning_rate": 1e-4,
            "checkpoint_every": 1000, "eval_every": 1000, "validation_split": 0.0,
            "gradient_checkpointing": recompute, "lora": lora}}}
    }))
    .unwrap();
    let job = TrainJob {
        spec,
        training_file: chats,
        validation_file: None,
        output_dir: dir.join(format!(
            "out-{variant}{}{}",
            if llama { "-llama1b" } else { "" },
            if bf16 { "-bf16" } else { "" }
        )),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: Some("qwen-shaped".into()),
    };
    let mut p = RecordingProgress::default();
    let t = Instant::now();
    run_job(&job, &mut p).unwrap();
    let mut tps: Vec<f64> = p
        .steps
        .iter()
        .skip(1)
        .map(|s| s.tokens_per_second)
        .collect();
    tps.sort_by(f64::total_cmp);
    println!(
        "| {variant}{}{}{} | {:.0} | {:.1} | {:.4} | {:.0} s |",
        if recompute { " (recompute)" } else { "" },
        if llama { " (Llama-3.2-1B shapes)" } else { "" },
        if bf16 { " (bf16 file)" } else { "" },
        peak_rss_mib(),
        tps.get(tps.len() / 2).copied().unwrap_or(f64::NAN),
        p.steps.first().map_or(f64::NAN, |s| s.train_loss),
        t.elapsed().as_secs_f64()
    );
    if variant != "lora" && args.iter().any(|a| a == "merge-diff") {
        merge_difference(&base, &job.output_dir);
    }
}

/// How far the merged model (the dequantised base plus the adapter) is from merging the same
/// adapter into the original weights: per projection kind, the largest absolute difference and the
/// RMS of the difference relative to the RMS of the original merge. After the peak is printed:
/// this loads the model three times.
fn merge_difference(base: &Path, out: &Path) {
    let cfg = hf::read_config(base).unwrap();
    let original = hf::load_weights(base, &cfg, DType::F32, &Device::Cpu).unwrap();
    let ideal = wick::model::peft::merge_adapter_folder(&original, &out.join("adapter")).unwrap();
    let merged = hf::load_weights(out, &cfg, DType::F32, &Device::Cpu).unwrap();
    let mut by_kind: std::collections::BTreeMap<String, (f64, f64, f64)> = Default::default();
    for (name, want) in &ideal {
        let d = (want - &merged[name]).unwrap();
        let max = d
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let Some(kind) = wick::spec::LORA_TARGETS
            .into_iter()
            .find(|k| name.contains(k))
        else {
            assert_eq!(max, 0.0, "{name} differs outside the projections");
            continue;
        };
        let sq = |t: &candle_core::Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let e = by_kind.entry(kind.to_string()).or_default();
        e.0 = e.0.max(max);
        e.1 += sq(&d);
        e.2 += sq(want);
    }
    for (kind, (max, diff, total)) in by_kind {
        println!(
            "merged {kind}: max |dequantised merge - original merge| {max:.4}, relative RMS {:.4}",
            (diff / total).sqrt()
        );
    }
}
