//! Whole preference-tuning jobs on tiny models, through `train::run_job` as a worker runs them:
//! the first DPO step is exactly ln 2 (the policy is its own reference), the preference is learnt,
//! LoRA writes an adapter and a merged model, a paused job resumes as if never stopped (reading
//! its reference log-probs back instead of recomputing them), every loss type trains, and files
//! of the wrong format fail with their line.

#[path = "common/chat_model.rs"]
mod chat_model;

use std::path::Path;

use chat_model::{TOPICS, assert_same_weights, model_dir, same, tensors};
use wick::train::{
    NoProgress, RecordingProgress, StopReason, Stopped, TrainError, TrainJob, run_job,
};

/// Pairs: the preferred answer repeats the topic politely, the other is curt.
fn write_pairs(path: &Path, n: usize) {
    let mut out = String::new();
    for i in 0..n {
        let t = TOPICS[i % 5];
        let line = serde_json::json!({
            "input": {"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": format!("Tell me about {t} please.")}
            ]},
            "preferred_output": [{"role": "assistant", "content": format!("Sure, {t} are nice.")}],
            "non_preferred_output": [{"role": "assistant", "content": format!("{t} {t}.")}]
        });
        out += &(line.to_string() + "\n");
    }
    std::fs::write(path, out).unwrap();
}

fn job(dir: &Path, hyper: serde_json::Value, out: &str) -> TrainJob {
    chat_model::job(dir, "dpo", "pairs.jsonl", hyper, out)
}

fn setup(pairs: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    model_dir(&dir.path().join("base"));
    write_pairs(&dir.path().join("pairs.jsonl"), pairs);
    dir
}

fn metric(m: &wick::train::StepMetrics, name: &str) -> f64 {
    *m.extra
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", m.extra))
}

#[test]
fn full_dpo_starts_at_ln_2_and_learns_the_preference() {
    let dir = setup(20);
    let hyper = serde_json::json!({
        "batch_size": 4, "max_seq_len": 64, "max_steps": 12, "learning_rate": 2e-3,
        "warmup_steps": 0, "beta": 0.5, "validation_split": 0.2
    });
    let mut rec = RecordingProgress::default();
    let out = run_job(&job(dir.path(), hyper, "out"), &mut rec).unwrap();
    assert_eq!(out.steps_completed, 12);
    // The reference was computed once, before the first step, for 16 + 4 pairs.
    assert_eq!(
        rec.phases.first().unwrap(),
        &("reference_logps".into(), 0, 20)
    );
    assert_eq!(
        rec.phases.last().unwrap(),
        &("reference_logps".into(), 20, 20)
    );
    // It was kept with the job while it ran, and is not part of the exported model.
    assert!(!dir.path().join("out/reference_logps.safetensors").exists());
    // Step 1: the policy is the reference, so every pair's loss is −log σ(0) = ln 2 exactly.
    let first = &rec.steps[0];
    assert_eq!(first.train_loss, std::f64::consts::LN_2);
    assert_eq!(metric(first, "rewards/margins"), 0.0);
    assert_eq!(metric(first, "rewards/accuracies"), 0.0);
    // The preference is learnt: the loss falls well below ln 2 and the rewards separate.
    let last = rec.steps.last().unwrap();
    assert!(last.train_loss < 0.4, "final loss {}", last.train_loss);
    assert!(metric(last, "rewards/margins") > 1.0);
    assert_eq!(metric(last, "rewards/accuracies"), 1.0);
    // The preferred answers became likelier than under the reference (their summed log-probs
    // need not pass the rejected ones': the preferred answer is the longer one).
    assert!(metric(last, "rewards/chosen") > 0.0);
    let eval = rec.evals.last().unwrap();
    assert_eq!(eval.extra["valid_rewards/accuracies"], 1.0);
    assert!(eval.valid_loss < 0.4, "valid loss {}", eval.valid_loss);
    // The full model is written, every weight changed.
    let base = tensors(&dir.path().join("base"));
    let tuned = tensors(&dir.path().join("out"));
    for (name, t) in &base {
        assert!(!same(t, &tuned[name]), "{name} did not change");
    }
}

#[test]
fn lora_dpo_writes_adapter_and_merged_model_from_an_exact_ln_2() {
    let dir = setup(12);
    let hyper = serde_json::json!({
        "batch_size": 4, "max_seq_len": 64, "max_steps": 4, "learning_rate": 1e-2,
        "validation_split": 0.0,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    });
    let mut rec = RecordingProgress::default();
    run_job(&job(dir.path(), hyper, "out"), &mut rec).unwrap();
    // Fresh adapters add exactly zero: the model that trains is the reference at step 1.
    assert_eq!(rec.steps[0].train_loss, std::f64::consts::LN_2);
    assert!(rec.steps[3].train_loss < std::f64::consts::LN_2);
    assert!(
        dir.path()
            .join("out/adapter/adapter_model.safetensors")
            .is_file()
    );
    let base = tensors(&dir.path().join("base"));
    let merged = tensors(&dir.path().join("out"));
    for (name, t) in &base {
        let lora = name.contains("q_proj") || name.contains("v_proj");
        assert_eq!(!lora, same(t, &merged[name]), "{name}");
    }
}

#[test]
fn paused_dpo_job_resumes_as_if_never_stopped_without_recomputing_the_reference() {
    let dir = setup(16);
    let hyper = serde_json::json!({
        "batch_size": 2, "gradient_accumulation_steps": 2, "max_seq_len": 64, "max_steps": 6,
        "learning_rate": 1e-3, "validation_split": 0.25, "rpo_alpha": 0.5
    });
    let mut whole = RecordingProgress::default();
    run_job(&job(dir.path(), hyper.clone(), "whole"), &mut whole).unwrap();
    let mut first = RecordingProgress {
        stop_after: Some((3, StopReason::Pause)),
        ..Default::default()
    };
    let paused = run_job(&job(dir.path(), hyper.clone(), "split"), &mut first).unwrap();
    assert_eq!(paused.stopped, Some(Stopped::Paused));
    let ckpt = paused.last_checkpoint.clone().unwrap();
    assert!(ckpt.join("reference_logps.safetensors").is_file());
    // Resume into a fresh folder, as another worker would: only the checkpoint carries over.
    let mut rest = RecordingProgress::default();
    let mut resumed = job(dir.path(), hyper, "moved");
    resumed.resume_from = Some(ckpt);
    let out = run_job(&resumed, &mut rest).unwrap();
    assert_eq!(out.steps_completed, 6);
    assert!(rest.phases.is_empty(), "the reference was recomputed");
    let steps: Vec<_> = first.steps.iter().chain(&rest.steps).collect();
    assert_eq!(steps.len(), whole.steps.len());
    for (a, b) in whole.steps.iter().zip(steps) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-6,
            "step {}: uninterrupted {} vs resumed {}",
            a.step,
            a.train_loss,
            b.train_loss
        );
        assert!((metric(a, "nll_loss") - metric(b, "nll_loss")).abs() < 1e-6);
    }
    assert_same_weights(&dir.path().join("whole"), &dir.path().join("moved"), 1e-5);
}

#[test]
fn every_loss_type_trains_and_only_dpo_and_ipo_read_a_reference() {
    for (loss, needs_reference) in [("ipo", true), ("simpo", false), ("orpo", false)] {
        let dir = setup(8);
        let hyper = serde_json::json!({
            "batch_size": 4, "max_seq_len": 64, "max_steps": 6, "learning_rate": 3e-3,
            "warmup_steps": 0, "validation_split": 0.0, "loss_type": loss
        });
        let mut rec = RecordingProgress::default();
        run_job(&job(dir.path(), hyper, "out"), &mut rec).unwrap();
        assert_eq!(!rec.phases.is_empty(), needs_reference, "{loss}");
        let (a, b) = (&rec.steps[0], rec.steps.last().unwrap());
        assert!(
            b.train_loss < a.train_loss,
            "{loss}: {} -> {}",
            a.train_loss,
            b.train_loss
        );
        assert!(
            metric(b, "rewards/margins") > metric(a, "rewards/margins"),
            "{loss}: the margin did not grow"
        );
    }
}

#[test]
fn files_of_the_other_format_fail_with_their_line() {
    let dir = setup(4);
    // A chat line in a preference job.
    std::fs::write(
        dir.path().join("pairs.jsonl"),
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
    )
    .unwrap();
    let err = run_job(
        &job(dir.path(), serde_json::json!({"max_steps": 1}), "out"),
        &mut RecordingProgress::default(),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
    // Outputs must be assistant messages.
    std::fs::write(
        dir.path().join("pairs.jsonl"),
        r#"{"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "user", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}"#,
    )
    .unwrap();
    let err = run_job(
        &job(dir.path(), serde_json::json!({"max_steps": 1}), "out"),
        &mut RecordingProgress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("preferred_output[0]"), "{err}");
}

/// The estimate counts a preference job's pairs as the trainer keeps them, so its step count is
/// the run's.
#[test]
fn the_estimate_counts_the_steps_the_job_runs() {
    let dir = setup(30);
    let hyper = serde_json::json!({"batch_size": 4, "n_epochs": 2, "max_seq_len": 64,
                                   "learning_rate": 1e-3, "validation_split": 0.2});
    let j = job(dir.path(), hyper, "est");
    let mut spec = j.spec.clone();
    spec.training_file = j.training_file.display().to_string();
    let e =
        wick::train::job_estimate::estimate_job(&spec, &[j.training_file.as_path()], true).unwrap();
    assert!(e.rows_counted);
    let out = run_job(&j, &mut NoProgress).unwrap();
    assert_eq!(e.total_steps, out.total_steps);
}

/// Preference jobs sample answers to held-out prompts, the preferred output the reference.
#[test]
fn preference_samples_show_the_preferred_output_as_reference() {
    let dir = setup(30);
    let hyper = serde_json::json!({"batch_size": 4, "max_steps": 4, "max_seq_len": 64,
        "learning_rate": 1e-3, "validation_split": 0.2, "eval_every": 2, "eval_max_tokens": 4});
    let mut p = RecordingProgress::default();
    run_job(&job(dir.path(), hyper, "samples"), &mut p).unwrap();
    assert_eq!(p.samples.len(), 2);
    let text = std::fs::read_to_string(dir.path().join("pairs.jsonl")).unwrap();
    for s in &p.samples[0].samples {
        assert!(text.contains(&s.prompt), "{}", s.prompt);
        assert!(text.contains(s.reference.as_deref().unwrap()));
    }
}
