//! The files a running service keeps, checked on the real `wick serve` process: the data folder
//! and everything it writes are private to its account (folder 0700, files 0600), and what a
//! killed upload left in the blob store is swept at the next start once it is old enough.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and folder under `dir`, but `skip`.
fn walk(dir: &Path, skip: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            walk(&path, skip, out);
        }
        out.push(path);
    }
}

#[tokio::test]
async fn data_is_private_and_interrupted_uploads_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An older install's folder, world-readable, with two staging files of killed uploads: one
    // untouched for an hour, one being written right now by another process.
    let staging = data.join("blobs").join("files").join("org-old");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stale = staging.join("file-stale#1");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let live = staging.join("file-live#1");
    std::fs::write(&live, b"still coming").unwrap();

    let (mut child, serving, log) = common::serve_with_json_logs(&data).await;
    let addr = serving["addr"].as_str().unwrap();
    assert!(
        log.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted uploads"))
            && l["files"] == 1
            && l["bytes"] == 4096),
        "{log:?}"
    );
    assert!(!stale.exists(), "the hour-old staging file was swept");
    assert!(
        live.exists(),
        "a staging file still being written is left alone"
    );

    // Upload a file, so the blob store writes one.
    let key = std::fs::read_to_string(data.join("admin_key")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "pretrain")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{\"text\": \"hello there\"}\n".to_vec())
                .file_name("a.jsonl"),
        );
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/files"))
        .bearer_auth(key.trim())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    assert_eq!(mode(&data), 0o700, "the data folder was tightened");
    let mut paths = Vec::new();
    walk(&data, &live, &mut paths);
    let db = data.join("wick.db");
    assert!(paths.contains(&db) && paths.contains(&data.join("admin_key")));
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with(data.join("blobs/files")) && p.is_file()),
        "{paths:?}"
    );
    for p in &paths {
        // Folders made before this start (the older install's) keep their mode; the data
        // folder above them is what protects them.
        if p.is_dir() && (p == &staging || staging.starts_with(p)) {
            continue;
        }
        assert_eq!(mode(p) & 0o077, 0, "{} is {:o}", p.display(), mode(p));
    }
    child.kill().await.unwrap();
}
