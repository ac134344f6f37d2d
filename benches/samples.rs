//! What sample generations cost (issue 17's figure): the share of an SFT job's time spent
//! answering the sample prompts at each evaluation, at the default cadence (an evaluation every
//! tenth of the run, 3 held-out prompts, up to 64 tokens each, greedy).
//!
//! For each model size: a base is pretrained briefly on sentences about small numbers, then the
//! same full SFT job runs twice in this process, with `eval_samples: 0` and with the defaults (its
//! answers stop at the end-of-turn token once it has learned the format); then a pretraining job
//! twice the same way (its continuations always run to the 64-token cap: the costliest case). Figures:
//! the seconds the samples took (each evaluation's `seconds`), as a share of the job's time, and
//! the difference in wall time between the two runs.
//!
//! `cargo bench --bench samples [-- PRESET...]` (default `wick-llama-1m wick-llama-10m`).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use wick::spec::JobSpec;
use wick::train::{RecordingProgress, TrainJob, run_job};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn write_lines(path: &Path, lines: impl Iterator<Item = serde_json::Value>) {
    let text: String = lines.map(|l| l.to_string() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn run(
    dir: &Path,
    model: &str,
    method: serde_json::Value,
    train: &str,
    out: &str,
) -> (f64, RecordingProgress) {
    let spec: JobSpec = serde_json::from_value(
        serde_json::json!({"model": model, "training_file": "t", "seed": 5, "method": method}),
    )
    .unwrap();
    let job = TrainJob {
        spec,
        training_file: dir.join(train),
        validation_file: None,
        output_dir: dir.join(out),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: Some("bench-base".into()),
    };
    let mut progress = RecordingProgress::default();
    let t = Instant::now();
    run_job(&job, &mut progress).unwrap();
    (t.elapsed().as_secs_f64(), progress)
}

fn main() {
    wick::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with("wick-"))
        .collect();
    let presets = if args.is_empty() {
        vec!["wick-llama-1m".to_string(), "wick-llama-10m".to_string()]
    } else {
        args
    };
    println!("cpu: {}", wick::machine::cpu_description());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_lines(
        &dir.join("corpus.jsonl"),
        (0..800u32).map(|i| {
            let (a, b) = ((i * 7 + 3) % 20, (i * 13 + 5) % 20);
            serde_json::json!({"text": format!("{a} plus {b} is {}. Of {a} and {b}, {} is larger.", a + b, a.max(b))})
        }),
    );
    write_lines(
        &dir.join("chat.jsonl"),
        (0..600u32).map(|i| {
            let (a, b) = ((i * 7 + 3) % 20, (i * 11 + 1) % 20);
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("What is {a} plus {b}?")},
                {"role": "assistant", "content": format!("Answer: {}", a + b)}]})
        }),
    );
    println!(
        "| model | job | steps | job without samples (s) | job with samples (s) | samples (s) | share of the job | evaluations × prompts × tokens |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for preset in &presets {
        let base = format!("base-{preset}");
        run(
            dir,
            preset,
            serde_json::json!({"type": "pretrain", "pretrain": {"hyperparameters": {
                "vocab_size": 512, "max_seq_len": 64, "batch_size": 8, "max_steps": 30,
                "learning_rate": 3e-3, "warmup_steps": 5, "checkpoint_every": 100000}}}),
            "corpus.jsonl",
            &base,
        );
        let base_dir = dir.join(&base).display().to_string();
        let sft = |samples: Option<u32>| {
            let mut h = serde_json::json!({"max_steps": 100, "batch_size": 8, "max_seq_len": 128,
                "learning_rate": 1e-3, "warmup_steps": 5, "checkpoint_every": 100000});
            if let Some(n) = samples {
                h["eval_samples"] = serde_json::json!(n);
            }
            serde_json::json!({"type": "supervised", "supervised": {"hyperparameters": h}})
        };
        row(
            preset,
            "SFT",
            run(dir, &base_dir, sft(Some(0)), "chat.jsonl", "sft-plain").0,
            run(dir, &base_dir, sft(None), "chat.jsonl", "sft-samples"),
        );
        // Pretraining's samples continue held-out documents: they always run to the cap.
        let pretrain = |samples: Option<u32>| {
            let mut h = serde_json::json!({"vocab_size": 512, "max_seq_len": 128, "batch_size": 8,
                "max_steps": 100, "learning_rate": 3e-3, "warmup_steps": 5, "checkpoint_every": 100000});
            if let Some(n) = samples {
                h["eval_samples"] = serde_json::json!(n);
            }
            serde_json::json!({"type": "pretrain", "pretrain": {"hyperparameters": h}})
        };
        row(
            preset,
            "pretraining",
            run(dir, preset, pretrain(Some(0)), "corpus.jsonl", "pre-plain").0,
            run(dir, preset, pretrain(None), "corpus.jsonl", "pre-samples"),
        );
    }
}

/// One line of the table: the job without samples took `t_without`; `with` is the same job with
/// the default samples.
fn row(preset: &str, method: &str, t_without: f64, (t_with, p): (f64, RecordingProgress)) {
    let sample_seconds: f64 = p.samples.iter().map(|s| s.seconds).sum();
    let prompts = p.samples.first().map_or(0, |s| s.samples.len());
    let tokens: usize = p
        .samples
        .iter()
        .flat_map(|s| &s.samples)
        .map(|s| s.tokens)
        .sum();
    println!(
        "| {preset} | {method} | {} | {t_without:.2} | {t_with:.2} | {sample_seconds:.2} | {:.1}% | {} × {prompts} × {:.0} |",
        p.steps.len(),
        100.0 * sample_seconds / t_with,
        p.samples.len(),
        tokens as f64 / (p.samples.len() * prompts).max(1) as f64,
    );
}
