//! A full disk, for real: the blob store on a 1 MiB tmpfs. An upload that does not fit answers
//! 507 `insufficient_storage`, keeps no row and no partial blob, and the server goes on serving:
//! a file that fits is stored afterwards and reads back whole.
//!
//! Mounting needs root, as this project's machines (and CI on them) run the suite. Elsewhere the
//! test says it was skipped; `.ci/run` sets `WICK_REQUIRE_TMPFS=1`, so that in CI a mount that
//! fails is a failure, not a skip.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

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

#[tokio::test]
async fn an_upload_that_does_not_fit_is_507_and_leaves_nothing_postgres() {
    an_upload_that_does_not_fit_is_507_and_leaves_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn an_upload_that_does_not_fit_is_507_and_leaves_nothing_sqlite() {
    an_upload_that_does_not_fit_is_507_and_leaves_nothing(Backend::Sqlite).await;
}
