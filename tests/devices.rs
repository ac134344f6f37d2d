//! Devices with the CPU as the device (issue 11's plumbing, which runs without a GPU): the admin's
//! workers listing shows each slot's device and job; a job that asks for a GPU is left queued by a
//! CPU worker while a later CPU job trains; a bad `"device"` is a 400; a worker or `wick train`
//! told to use a GPU that this build or machine lacks stops at once with a message saying so.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::process::Command;
use std::time::Duration;

use common::{Backend, spawn_app_with};
use serde_json::{Value, json};

fn job(file: &str, device: &str) -> Value {
    json!({"model": "wick-llama-1m", "training_file": file, "seed": 3, "device": device,
           "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
               "vocab_size": 320, "max_seq_len": 32, "batch_size": 4, "max_steps": 6,
               "learning_rate": 3e-3, "warmup_steps": 1, "validation_split": 0.1}}}})
}

async fn workers(app: &common::TestApp) -> Vec<Value> {
    let (s, list) = app.get(&app.admin_key, "/v1/workers").await;
    assert_eq!(s, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn cpu_workers_list_their_device_and_leave_gpu_jobs_queued() {
    let app = spawn_app_with(Backend::Postgres, |s| s.worker_slots = 1).await;
    let file = app
        .upload_file("pretrain", "docs.jsonl", corpus::corpus_jsonl(200))
        .await;

    // The slot is listed with its device as soon as it starts.
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = workers(&app).await;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    let w = &listed[0];
    assert_eq!(w["object"], "worker");
    assert_eq!(w["device"]["id"], "cpu");
    assert_eq!(w["device"]["kind"], "cpu");
    assert!(!w["device"]["name"].as_str().unwrap().is_empty(), "{w}");
    assert!(
        w["device"]["memory_bytes"].as_i64().unwrap() > 1 << 28,
        "{w}"
    );
    assert_eq!(
        (w["status"].as_str(), &w["job_id"]),
        (Some("idle"), &Value::Null)
    );
    let tenant = app.key_for_org("tenant").await;
    let (s, e) = app.get(&tenant, "/v1/workers").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("admin_only")),
        "{e}"
    );

    // A bad device is refused and creates nothing.
    let (s, e) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &job(&file, "tpu"))
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "device", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`gpu`"),
        "{e}"
    );
    let (_, list) = app.get(&app.admin_key, "/v1/fine_tuning/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");

    // The GPU job comes first in the queue; the CPU worker passes it over for the CPU job.
    let (s, gpu) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &job(&file, "gpu"))
        .await;
    assert_eq!(s, 200, "{gpu}");
    assert_eq!(gpu["device"], "gpu", "{gpu}");
    let gpu_id = gpu["id"].as_str().unwrap().to_string();
    let (s, cpu) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &job(&file, "cpu"))
        .await;
    assert_eq!(s, 200, "{cpu}");
    let cpu_id = cpu["id"].as_str().unwrap().to_string();

    // While it trains, the listing names its job.
    let mut busy = false;
    for _ in 0..600 {
        let w = workers(&app).await;
        if w.len() == 1 && w[0]["job_id"] == cpu_id.as_str() {
            assert_eq!(w[0]["status"], "busy");
            busy = true;
            break;
        }
        if app.job(&cpu_id).await["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = app.wait_for_job(&cpu_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(busy, "the slot was never listed with its job");
    let waiting = app.job(&gpu_id).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(waiting["started_at"], Value::Null, "{waiting}");
    // It said why at creation; the CPU job, which a live worker takes, did not.
    let no_gpu = |m: &String| m.contains("No worker with a GPU is running now");
    assert!(app.event_messages(&gpu_id).await.iter().any(no_gpu));
    assert!(
        !app.event_messages(&cpu_id)
            .await
            .iter()
            .any(|m| m.contains("No worker"))
    );

    // "any" (and no "device") is for every worker.
    let (s, any) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &job(&file, "any"))
        .await;
    assert_eq!(s, 200, "{any}");
    let done = app.wait_for_job(any["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.job(&gpu_id).await["status"], "queued");
    let (s, _) = app
        .post(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{gpu_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
}

fn wick(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// This CPU build has no GPU to give: naming one stops `wick worker` and `wick serve` before they
/// start, with the reason; a malformed list is a usage error.
#[cfg(not(feature = "cuda"))]
#[test]
fn naming_a_gpu_on_the_cpu_build_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let worker = &["worker", "--devices", "cuda:0"][..];
    let serve = &["serve", "--devices", "cuda:0", "--listen", "127.0.0.1:0"][..];
    for args in [worker, serve] {
        let out = wick(args, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("without the `cuda` feature"),
            "{args:?}: {err}"
        );
    }
    let out = wick(&["worker", "--devices", "tpu:0"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a device list"), "{err}");

    let spec = dir.path().join("job.json");
    std::fs::write(&spec, job("docs.jsonl", "any").to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["train", "--device", "cuda:0", "--spec"])
        .arg(&spec)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("without the `cuda` feature"), "{err}");
}
