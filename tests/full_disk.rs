//! A full disk, for real: the blob store on a small tmpfs. An upload that does not fit answers
//! 507 `insufficient_storage`, keeps no row and no partial blob, and the server goes on serving:
//! a file that fits is stored afterwards and reads back whole. A training job whose checkpoint
//! does not fit is paused with code `insufficient_storage`; with space freed and the job resumed,
//! it finishes with every step once.
//!
//! Mounting needs root, as this project's machines (and CI on them) run the suite. Elsewhere the
//! test says it was skipped; `.ci/run` sets `WICK_REQUIRE_TMPFS=1`, so that in CI a mount that
//! fails is a failure, not a skip.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{Backend, files_under, spawn_app_with};
use wick::blob_location::BlobLocation;

/// A tmpfs of `size` mounted on a fresh temporary folder, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("wick-full-disk")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs(dir));
        }
        assert!(
            std::env::var_os("WICK_REQUIRE_TMPFS").is_none(),
            "WICK_REQUIRE_TMPFS is set but a tmpfs could not be mounted (needs root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        None
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the server task may still be closing its files.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// `docs` pretraining documents, ~2.3 KB each.
fn big_jsonl(docs: usize) -> Vec<u8> {
    let sentence = "The small boat drifted down the river while the bird watched from the tree. ";
    let text = sentence.repeat(30);
    let mut out = Vec::new();
    for i in 0..docs {
        out.extend_from_slice(
            serde_json::json!({"text": format!("{i}. {text}")})
                .to_string()
                .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

async fn an_upload_that_does_not_fit_is_507_and_leaves_nothing(backend: Backend) {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let store = disk.path().to_path_buf();
    let app = spawn_app_with(backend, |s| s.blob_store = Some(BlobLocation::Local(store))).await;
    let key = &app.admin_key;

    let big = big_jsonl(1_500); // ~3.4 MB on a 1 MiB disk
    assert!(big.len() > 3 << 20, "{} bytes", big.len());
    for attempt in 0..2 {
        let (status, body) = app.upload(key, "pretrain", "big.jsonl", big.clone()).await;
        assert_eq!(status, 507, "attempt {attempt}: {body}");
        assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
        let (status, list) = app.get(key, "/v1/files").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["data"], serde_json::json!([]), "no file recorded");
        assert_eq!(
            files_under(disk.path()),
            Vec::<std::path::PathBuf>::new(),
            "no partial blob"
        );
    }

    // Still serving, and the space the failed uploads took is free again.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let small = corpus::corpus_jsonl(50);
    let (status, file) = app
        .upload(key, "pretrain", "small.jsonl", small.clone())
        .await;
    assert_eq!(status, 200, "{file}");
    let id = file["id"].as_str().unwrap();
    let r = app
        .client
        .get(app.url(&format!("/v1/files/{id}/content")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        small,
        "the stored file reads back whole"
    );
    drop(app);
}

/// Fills what is left of the disk under `dir` with one file, returning its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![1u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    path
}

async fn a_checkpoint_that_does_not_fit_pauses_the_job(backend: Backend) {
    let Some(disk) = Tmpfs::mount("128m") else {
        return;
    };
    let store = disk.path().to_path_buf();
    let app = spawn_app_with(backend, |s| {
        s.blob_store = Some(BlobLocation::Local(store));
        s.worker_slots = 1;
    })
    .await;
    let key = &app.admin_key;
    let (status, file) = app
        .upload(key, "pretrain", "docs.jsonl", corpus::corpus_jsonl(300))
        .await;
    assert_eq!(status, 200, "{file}");
    let ballast = fill(disk.path());
    let steps = 12;
    let (status, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &serde_json::json!({"model": "wick-llama-1m", "training_file": file["id"], "seed": 3,
                "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                    "vocab_size": 320, "max_seq_len": 32, "batch_size": 4, "max_steps": steps,
                    "checkpoint_every": 4, "validation_split": 0.0}}}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let paused = app.wait_status(&id, "paused", 120).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    let events = app.events(&id).await;
    let event = events
        .iter()
        .find(|e| e["data"]["code"] == "insufficient_storage")
        .unwrap_or_else(|| panic!("no insufficient_storage event: {events:?}"));
    assert_eq!(event["level"], "error");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with("Job paused: the blob store is full")
            && message.contains("checkpoint of step 4")
            && message.contains("Resume it once there is space"),
        "{message}"
    );
    // Space again: resumed, the job finishes with every step once.
    std::fs::remove_file(&ballast).unwrap();
    let (status, _) = app
        .post(
            key,
            &format!("/v1/fine_tuning/jobs/{id}/resume"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for_job(&id).await;
    let steps_seen: Vec<u64> = app.train_points(&id).await.iter().map(|p| p.0).collect();
    assert_eq!(
        steps_seen,
        (1..=steps).collect::<Vec<u64>>(),
        "every step once"
    );
    drop(app);
}

on_both_stores!(
    an_upload_that_does_not_fit_is_507_and_leaves_nothing,
    a_checkpoint_that_does_not_fit_pauses_the_job,
);
