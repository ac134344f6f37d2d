//! The API fuzzed against its own spec: schemathesis (PyPI, tests/sdk/requirements.txt) generates
//! requests for every operation of openapi.yaml, valid and invalid, and sends them to the real
//! server with a valid key (and without one, for the 401s). Checks: no 5xx, every status code and
//! content type documented, every body matching its documented schema, invalid data refused,
//! nothing answered to a missing key. Left out: `positive_data_acceptance`, which expects every
//! schema-valid request to be accepted, where the server also refuses what a schema cannot say
//! (a NUL character in a string, an unknown model, cross-field rules), each with a documented 4xx.
//!
//! Real ids (a file, a job, a file to delete) go in through schemathesis.toml, so the routes
//! under `{id}` are exercised beyond their 404s. The Python comes from `WICK_SDK_PYTHON`; without
//! schemathesis the test says so and passes, unless `WICK_REQUIRE_SDK=1` (as in CI).

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use common::{Backend, spawn_app_with};
use serde_json::json;

/// Test cases per operation and phase: bounded, so the run takes well under a minute.
const MAX_EXAMPLES: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_the_spec_says_under_schemathesis() {
    let Some(python) = common::python_with("schemathesis") else {
        return;
    };
    let app = spawn_app_with(Backend::Postgres, |s| s.worker_slots = 0).await;
    let key = app.admin_key.clone();
    app.key_for_org("fuzz-tenant").await;
    let chats: Vec<u8> = (0..20)
        .map(|i| json!({"messages": [{"role": "user", "content": format!("q{i}")}, {"role": "assistant", "content": format!("a{i}")}]}).to_string() + "\n")
        .collect::<String>()
        .into_bytes();
    let (_, chat_file) = app
        .upload(&key, "fine-tune", "chats.jsonl", chats.clone())
        .await;
    let (_, doomed) = app.upload(&key, "fine-tune", "doomed.jsonl", chats).await;
    let (_, docs) = app
        .upload(&key, "pretrain", "docs.jsonl", corpus::corpus_jsonl(50))
        .await;
    let (s, job) = app
        .post(
            &key,
            "/v1/fine_tuning/jobs",
            &json!({"model": "wick-llama-1m", "training_file": docs["id"],
                    "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                        "vocab_size": 300, "max_seq_len": 32, "max_steps": 5}}}}),
        )
        .await;
    assert_eq!(s, 200, "{job}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[operations]]
include-path-regex = "^/v1/files/\\{{id\\}}"
exclude-method = "DELETE"
parameters = {{ "id" = "{chat}" }}

[[operations]]
include-path = "/v1/files/{{id}}"
include-method = "DELETE"
parameters = {{ "id" = "{doomed}" }}

[[operations]]
include-path-regex = "^/v1/fine_tuning/jobs/\\{{id\\}}"
parameters = {{ "id" = "{job}" }}

# Limits are set on an organization of their own, so the admin key the run uses is never limited.
[[operations]]
include-path = "/v1/admin/organizations/{{name}}/limits"
parameters = {{ "name" = "fuzz-tenant" }}

# Schemathesis's coverage phase trips over its own recursion limit on this schema (a CPython
# "AST constructor recursion depth mismatch" inside its generator); the fuzzing phase covers it.
[[operations]]
include-path = "/v1/chat/completions"
phases.coverage.enabled = false
"#,
            chat = chat_file["id"].as_str().unwrap(),
            doomed = doomed["id"].as_str().unwrap(),
            job = job["id"].as_str().unwrap(),
        ),
    )
    .unwrap();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let report = dir.path().join("report.xml");
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        // A higher recursion limit, for schemathesis's deeply recursive schema walks.
        .arg("import sys; sys.setrecursionlimit(20000); from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())")
        .arg("--config-file")
        .arg(&config)
        .args(["run", spec, "--url", &app.base])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &MAX_EXAMPLES.to_string(), "--seed", "20261206"])
        // One worker: with several, schemathesis generates in threads, and CPython 3.11 (before
        // 3.11.8) can fail its `ast` recursion bookkeeping across threads ("AST constructor
        // recursion depth mismatch"), an error of the tool, not of the server.
        .args(["--workers", "1", "--no-color", "--report", "junit"])
        // Nothing kept between runs (schemathesis would write a `.schemathesis/` folder here).
        .args(["--generation-database", "none"])
        .arg("--report-junit-path")
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its caches go in the temporary folder, not the checkout.
        .current_dir(dir.path())
        .output()
        .await
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .rsplit_once("SUMMARY")
        .map_or(text.as_ref(), |(_, s)| s);
    eprintln!("schemathesis summary:{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation of the spec was tested.
    let operations = std::fs::read_to_string(spec)
        .unwrap()
        .lines()
        .filter(|l| {
            [
                "    get:",
                "    post:",
                "    put:",
                "    patch:",
                "    delete:",
            ]
            .contains(&l.trim_end())
        })
        .count();
    assert!(
        summary.contains(&format!("Tested: {operations}")),
        "expected {operations} operations tested:\n{summary}"
    );
}
