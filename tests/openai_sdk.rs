//! The OpenAI fine-tuning flow with the real `openai` Python SDK, unmodified, against the real
//! HTTP server: files.create, fine_tuning.jobs.create (OpenAI's `method` with "auto" values beside
//! ours), retrieve, list, list_events, checkpoints.list, cancel, models.list and chat completions
//! (tests/sdk/openai_flow.py).
//!
//! The Python comes from `WICK_SDK_PYTHON` (a venv with tests/sdk/requirements.txt; `.ci/run`
//! makes one) or `python3` when it can import `openai`. Without either the test says so and
//! passes, unless `WICK_REQUIRE_SDK=1` (as in CI), where it fails.

mod common;

use common::{Backend, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_runs_the_fine_tuning_flow_unchanged() {
    let Some(python) = common::python_with("openai") else {
        return;
    };
    let app = spawn_app_with(Backend::Sqlite, |s| s.worker_slots = 1).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_flow.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("WICK_URL", app.url(""))
        .env("WICK_KEY", &app.admin_key)
        .output()
        .await
        .expect("starting python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("OPENAI SDK FLOW PASSED"),
        "the SDK flow failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
