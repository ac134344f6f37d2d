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

fn python() -> Option<String> {
    if let Ok(p) = std::env::var("WICK_SDK_PYTHON") {
        return Some(p);
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| "python3".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_runs_the_fine_tuning_flow_unchanged() {
    let Some(python) = python() else {
        assert!(
            std::env::var("WICK_REQUIRE_SDK").is_err(),
            "WICK_REQUIRE_SDK is set but no Python with the openai package was found"
        );
        eprintln!("SKIPPED: no Python with `openai` (set WICK_SDK_PYTHON)");
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
