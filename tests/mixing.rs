//! Jobs on several files: token shares that follow the weights, staged weights, per-domain
//! validation metrics that agree with a one-file job's, held-out rows per domain, resume, and
//! the same for supervised fine-tuning with the length curriculum. Tiny models trained for real
//! through `train::run_job`.

use std::path::Path;

use candle_core::Device;
use wick::spec::JobSpec;
use wick::train::{RecordingProgress, StopReason, Stopped, TrainJob, run_job};

#[path = "common/corpus.rs"]
mod corpus;

/// Counting in words: another distribution, so per-domain losses differ.
fn write_numbers(path: &Path, docs: usize) {
    let words = [
        "one", "two", "three", "four", "five", "six", "seven", "eight",
    ];
    let mut out = String::new();
    for i in 0..docs {
        let text: Vec<&str> = (0..12).map(|j| words[(i + j * 3) % words.len()]).collect();
        out += &serde_json::json!({ "text": text.join(" ") }).to_string();
        out += "\n";
    }
    std::fs::write(path, out).unwrap();
}

fn corpus(dir: &Path) {
    corpus::write_corpus(&dir.join("stories.jsonl"), 200);
    write_numbers(&dir.join("numbers.jsonl"), 120);
    corpus::write_corpus(&dir.join("stories-valid.jsonl"), 24);
    write_numbers(&dir.join("numbers-valid.jsonl"), 16);
}

/// A pretraining job of the 1M preset on `dir`'s files; `files` adds the spec's file fields.
fn job(dir: &Path, files: serde_json::Value, extra: serde_json::Value, out: &str) -> TrainJob {
    let mut h = serde_json::json!({
        "batch_size": 4, "max_seq_len": 32, "vocab_size": 300, "learning_rate": 3e-3,
        "max_steps": 12, "warmup_steps": 2, "eval_every": 4, "checkpoint_every": 100,
        "validation_split": 0.1
    });
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    let mut spec = serde_json::json!({
        "model": "wick-llama-1m", "seed": 11,
        "method": {"type": "pretrain", "pretrain": {"hyperparameters": h}}
    });
    for (k, v) in files.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut spec: JobSpec = serde_json::from_value(spec).unwrap();
    spec.validate().unwrap();
    spec.localise_files(|f| dir.join(f).display().to_string());
    TrainJob {
        training_file: spec.training_file_refs()[0].into(),
        validation_file: spec.validation_file.as_deref().map(Into::into),
        spec,
        output_dir: dir.join(out),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: None,
    }
}

fn two_files(weights: Option<(f64, f64)>) -> serde_json::Value {
    let mut files = serde_json::json!([
        {"file": "stories.jsonl", "name": "stories"},
        {"file": "numbers.jsonl", "name": "numbers"},
    ]);
    if let Some((a, b)) = weights {
        files[0]["weight"] = a.into();
        files[1]["weight"] = b.into();
    }
    serde_json::json!({ "training_files": files })
}

fn seen(p: &RecordingProgress, step: usize, name: &str) -> f64 {
    p.steps[step - 1].extra[&format!("tokens_seen/{name}")]
}

#[test]
fn realised_token_shares_follow_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    for (w, steps) in [(0.7, 30), (0.25, 30)] {
        let mut p = RecordingProgress::default();
        let out = format!("w{w}");
        let j = job(
            dir.path(),
            two_files(Some((w, 1.0 - w))),
            serde_json::json!({"max_steps": steps}),
            &out,
        );
        run_job(&j, &mut p).unwrap();
        let (a, b) = (seen(&p, steps, "stories"), seen(&p, steps, "numbers"));
        let share = a / (a + b);
        assert!((share - w).abs() < 0.02, "share {share} for weight {w}");
        // Every step dealt tokens; the counts only grow.
        assert!(
            p.steps.windows(2).all(|s| {
                s[1].extra["tokens_seen/stories"] >= s[0].extra["tokens_seen/stories"]
            })
        );
        assert_eq!(
            a + b,
            p.steps[steps - 1].trained_tokens as f64 + (4 * steps) as f64
        );
    }
}

#[test]
fn staged_weights_switch_the_domain_at_their_step() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let mut files = two_files(None);
    files["curriculum"] = serde_json::json!({"stages": [
        {"until_step": 3, "weights": {"stories": 1.0}},
        {"until_step": 6, "weights": {"numbers": 1.0}},
    ]});
    let mut p = RecordingProgress::default();
    run_job(
        &job(
            dir.path(),
            files,
            serde_json::json!({"max_steps": 8}),
            "staged",
        ),
        &mut p,
    )
    .unwrap();
    assert_eq!(seen(&p, 3, "numbers"), 0.0);
    let stories_at_3 = seen(&p, 3, "stories");
    assert!(stories_at_3 > 0.0);
    // Steps 4-8: numbers only (the last stage runs to the end).
    assert_eq!(seen(&p, 8, "stories"), stories_at_3);
    assert!(seen(&p, 8, "numbers") > 0.0);
}

#[test]
fn per_domain_validation_agrees_with_a_one_file_validation() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let mut both = two_files(Some((0.5, 0.5)));
    both["validation_files"] = serde_json::json!([
        {"file": "stories-valid.jsonl", "name": "stories"},
        {"file": "numbers-valid.jsonl", "name": "numbers"},
    ]);
    let mut p = RecordingProgress::default();
    run_job(
        &job(dir.path(), both, serde_json::json!({}), "both"),
        &mut p,
    )
    .unwrap();
    let mut only = two_files(Some((0.5, 0.5)));
    only["validation_file"] = "stories-valid.jsonl".into();
    let mut q = RecordingProgress::default();
    run_job(
        &job(dir.path(), only, serde_json::json!({}), "only"),
        &mut q,
    )
    .unwrap();
    assert_eq!(p.evals.len(), 3);
    for (e, single) in p.evals.iter().zip(&q.evals) {
        let (s, n) = (e.extra["valid_loss/stories"], e.extra["valid_loss/numbers"]);
        // The same training, so the stories loss is the one-file job's validation loss.
        assert!(
            (s - single.valid_loss).abs() < 1e-9,
            "{s} vs {}",
            single.valid_loss
        );
        assert!((e.extra["valid_perplexity/numbers"] - n.exp()).abs() < 1e-9);
        assert!(e.extra.contains_key("valid_mean_token_accuracy/stories"));
        // The overall loss pools every token of both: between the two.
        assert!(e.valid_loss > s.min(n) && e.valid_loss < s.max(n), "{e:?}");
        assert_ne!(s, n);
    }
    // A one-file job reports no per-domain validation metrics.
    assert!(q.evals[0].extra.keys().all(|k| !k.contains('/')));
}

#[test]
fn mixture_without_validation_files_holds_out_each_domain() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let mut p = RecordingProgress::default();
    run_job(
        &job(
            dir.path(),
            two_files(None),
            serde_json::json!({"max_steps": 4}),
            "held",
        ),
        &mut p,
    )
    .unwrap();
    let e = p.evals.last().unwrap();
    assert!(e.extra.contains_key("valid_loss/stories"), "{e:?}");
    assert!(e.extra.contains_key("valid_loss/numbers"), "{e:?}");
}

#[test]
fn paused_mixture_resumes_as_if_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let files = two_files(Some((0.6, 0.4)));
    let mut whole = RecordingProgress::default();
    run_job(
        &job(dir.path(), files.clone(), serde_json::json!({}), "whole"),
        &mut whole,
    )
    .unwrap();
    let mut first = RecordingProgress {
        stop_after: Some((5, StopReason::Pause)),
        ..Default::default()
    };
    let paused = run_job(
        &job(dir.path(), files.clone(), serde_json::json!({}), "split"),
        &mut first,
    )
    .unwrap();
    assert_eq!(paused.stopped, Some(Stopped::Paused));
    let mut rest = RecordingProgress::default();
    let mut resumed = job(dir.path(), files, serde_json::json!({}), "split");
    resumed.resume_from = paused.last_checkpoint;
    run_job(&resumed, &mut rest).unwrap();
    let split: Vec<_> = first.steps.iter().chain(&rest.steps).collect();
    assert_eq!(split.len(), whole.steps.len());
    for (a, b) in whole.steps.iter().zip(split) {
        assert!(
            (a.train_loss - b.train_loss).abs() <= 1e-6,
            "step {}",
            a.step
        );
        assert_eq!(
            a.extra["tokens_seen/stories"],
            b.extra["tokens_seen/stories"]
        );
        assert_eq!(
            a.extra["tokens_seen/numbers"],
            b.extra["tokens_seen/numbers"]
        );
    }
}

#[path = "common/chat_model.rs"]
mod chat_model;

/// Supervised fine-tuning on two chat files with the length curriculum: both domains train and
/// are evaluated apart.
#[test]
fn supervised_mixture_with_the_length_curriculum() {
    let dir = tempfile::tempdir().unwrap();
    chat_model::model_dir(&dir.path().join("base"));
    for (name, n, words) in [("short", 20, 2), ("long", 20, 9)] {
        let mut out = String::new();
        for i in 0..n {
            let t = chat_model::TOPICS[i % 5];
            let answer = vec![t; words].join(" ");
            out += &serde_json::json!({"messages": [
                {"role": "user", "content": format!("About {t}?")},
                {"role": "assistant", "content": answer},
            ]})
            .to_string();
            out += "\n";
        }
        std::fs::write(dir.path().join(format!("{name}.jsonl")), out).unwrap();
    }
    let mut spec: JobSpec = serde_json::from_value(serde_json::json!({
        "model": dir.path().join("base").to_str().unwrap(), "seed": 3,
        "training_files": [{"file": "short.jsonl", "name": "short", "weight": 1},
                           {"file": "long.jsonl", "name": "long", "weight": 1}],
        "curriculum": {"type": "length"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 2, "max_seq_len": 64, "max_steps": 6, "learning_rate": 1e-2,
            "validation_split": 0.2, "eval_every": 3}}}
    }))
    .unwrap();
    spec.validate().unwrap();
    spec.localise_files(|f| dir.path().join(f).display().to_string());
    let j = TrainJob {
        training_file: spec.training_file_refs()[0].into(),
        validation_file: None,
        spec,
        output_dir: dir.path().join("out"),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: None,
    };
    let mut p = RecordingProgress::default();
    run_job(&j, &mut p).unwrap();
    let last = p.steps.last().unwrap();
    assert!(last.extra["tokens_seen/short"] > 0.0 && last.extra["tokens_seen/long"] > 0.0);
    let e = p.evals.last().unwrap();
    assert!(e.extra["valid_loss/short"].is_finite() && e.extra["valid_loss/long"].is_finite());
}
