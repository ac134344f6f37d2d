//! Retention: deleting a trained model removes its blobs (and is refused while a job starts from
//! it); `wick gc` lists the blobs no row points at, deletes nothing on a dry run, and with
//! `--delete` removes exactly those.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::process::Command;

use common::{Backend, spawn_app_with};
use serde_json::json;

fn gc(app: &common::TestApp, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
    cmd.arg("gc")
        .arg("--data-dir")
        .arg(&app.data_dir)
        .args(args);
    if let Some(url) = &app.database_url {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn deleted_models_take_their_blobs_and_gc_finds_orphans(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 1).await;
    let key = &app.admin_key;
    let (s, f) = app
        .upload(key, "pretrain", "docs.jsonl", corpus::corpus_jsonl(100))
        .await;
    assert_eq!(s, 200, "{f}");
    let (s, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": "wick-llama-1m", "training_file": f["id"], "seed": 1,
                    "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                        "vocab_size": 300, "max_seq_len": 32, "batch_size": 4, "max_steps": 6,
                        "checkpoint_every": 3}}}}),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let done = app.wait_for_job(&job_id).await;
    let model = done["fine_tuned_model"].as_str().unwrap().to_string();
    let blobs = |app: &common::TestApp| -> Vec<String> {
        let root = app.data_dir.join("blobs");
        app.blob_files()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect()
    };
    let before = blobs(&app);
    assert!(
        before
            .iter()
            .any(|p| p.starts_with(&format!("models/{job_id}/"))),
        "{before:?}"
    );

    // Nothing is orphaned yet.
    let out = gc(&app, &["--min-age-secs", "0"]);
    assert!(out.contains("0 orphaned blobs"), "{out}");

    // Orphans: a file and a model folder no row names, and a checkpoint of no checkpoint row.
    let root = app.data_dir.join("blobs");
    for (path, bytes) in [
        ("files/org-gone/file-gone", 11usize),
        ("models/ftjob-gone/config.json", 7),
        (
            &format!("jobs/{job_id}/checkpoints/checkpoint-00000099/model.safetensors"),
            5,
        ),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![b'x'; bytes]).unwrap();
    }
    // Too young to touch with the default grace period; listed with none.
    let out = gc(&app, &[]);
    assert!(out.contains("0 orphaned blobs"), "{out}");
    let out = gc(&app, &["--min-age-secs", "0"]);
    assert!(out.contains("3 orphaned blobs, 23 bytes"), "{out}");
    assert!(out.contains("files/org-gone/file-gone\t11\t"), "{out}");
    assert_eq!(
        blobs(&app).len(),
        before.len() + 3,
        "a dry run deletes nothing"
    );
    let out = gc(&app, &["--min-age-secs", "0", "--delete"]);
    assert!(out.contains("deleted 3 orphaned blobs, 23 bytes"), "{out}");
    assert_eq!(blobs(&app), before, "exactly the orphans are gone");

    // A model a job starts from cannot be deleted until that job ends.
    let (s, follow) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": model, "training_file": f["id"],
                    "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                        "max_seq_len": 32, "max_steps": 200}}}}),
        )
        .await;
    assert_eq!(s, 200, "{follow}");
    let follow_id = follow["id"].as_str().unwrap();
    let (s, e) = app.delete(key, &format!("/v1/models/{model}")).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("model_in_use")),
        "{e}"
    );
    let (s, _) = app
        .post(
            key,
            &format!("/v1/fine_tuning/jobs/{follow_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, e) = app.delete(key, "/v1/models/wick-llama-1m").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("id")), "{e}");
    let (s, e) = app.delete(key, "/v1/models/ft:nope").await;
    assert_eq!(s, 404, "{e}");
    let other = app.key_for_org("other").await;
    let (s, _) = app.delete(&other, &format!("/v1/models/{model}")).await;
    assert_eq!(s, 404, "another organization's model is not found");

    let (s, d) = app.delete(key, &format!("/v1/models/{model}")).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d, json!({"id": model, "object": "model", "deleted": true}));
    assert_eq!(app.get(key, &format!("/v1/models/{model}")).await.0, 404);
    let after = blobs(&app);
    assert!(
        !after
            .iter()
            .any(|p| p.starts_with(&format!("models/{job_id}/"))),
        "{after:?}"
    );
    // The job keeps its checkpoints; nothing is orphaned by the delete.
    assert!(
        after
            .iter()
            .any(|p| p.starts_with(&format!("jobs/{job_id}/checkpoints/")))
    );
    let out = gc(&app, &["--min-age-secs", "0"]);
    assert!(out.contains("0 orphaned blobs"), "{out}");
}

on_both_stores!(deleted_models_take_their_blobs_and_gc_finds_orphans);
