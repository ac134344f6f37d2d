//! Preference tuning through the real HTTP API, on SQLite and on Postgres: upload preference pairs
//! (recognised as such, bad lines reported by line), refuse a method on the other format with a
//! 400 naming `training_file`, run a LoRA and a full DPO job on a local base model, and read back
//! TRL's metrics (JSON and CSV), the reference phase's events, the adapter and a chat reply.

mod common;

use common::{Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

const TOPICS: [&str; 5] = ["cats", "rain", "tea", "maps", "bread"];

fn pairs_file(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let t = TOPICS[i % 5];
            json!({
                "input": {"messages": [{"role": "user", "content": format!("Tell me about {t} please.")}]},
                "preferred_output": [{"role": "assistant", "content": format!("Sure, {t} are nice.")}],
                "non_preferred_output": [{"role": "assistant", "content": format!("{t} {t}.")}]
            })
            .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn chat_file(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let t = TOPICS[i % 5];
            json!({"messages": [{"role": "user", "content": format!("Tell me about {t} please.")},
                                {"role": "assistant", "content": format!("Sure, {t} are nice.")}]})
            .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

async fn upload(app: &TestApp, bytes: Vec<u8>) -> Value {
    let (s, f) = app
        .upload(&app.admin_key, "fine-tune", "f.jsonl", bytes)
        .await;
    assert_eq!(s, 200, "{f}");
    f
}

fn dpo_body(train: &str, hyper: Value) -> Value {
    json!({"model": "tiny-base", "training_file": train, "suffix": "pref", "seed": 4,
           "method": {"type": "dpo", "dpo": {"hyperparameters": hyper}}})
}

async fn preference_jobs_through_the_api(backend: Backend) {
    let models = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "Tell me about {t} please. Sure, {t} are nice.",
                t = TOPICS[i % 5]
            )
        })
        .collect();
    common::tiny_llama_folder(&models.path().join("tiny-base"), &texts);
    let path = models.path().to_path_buf();
    let app = spawn_app_with(backend, |s| {
        s.worker_slots = 1;
        s.models_dir = Some(path);
    })
    .await;
    let key = &app.admin_key;

    // Uploads: pairs are recognised; a bad pair is reported by line and code.
    let pairs = upload(&app, pairs_file(24)).await;
    assert_eq!(pairs["status"], "processed", "{pairs}");
    let pairs_id = pairs["id"].as_str().unwrap();
    assert_eq!(pairs["validation"]["format"], "preference", "{pairs}");
    let mut bad = pairs_file(2);
    bad.extend_from_slice(
        br#"{"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "assistant", "content": "same"}], "non_preferred_output": [{"role": "assistant", "content": "same"}]}"#,
    );
    let f = upload(&app, bad).await;
    assert_eq!(f["status"], "error", "{f}");
    assert_eq!(f["validation"]["errors"][0]["line"], 3, "{f}");
    let chats = upload(&app, chat_file(8)).await;
    let chats_id = chats["id"].as_str().unwrap();

    // A method on the other format is refused before anything is queued.
    let (s, e) = app
        .post(key, "/v1/fine_tuning/jobs", &dpo_body(chats_id, json!({})))
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("training_file")),
        "{e}"
    );
    let (s, e) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": "tiny-base", "training_file": pairs_id}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("training_file")),
        "{e}"
    );
    let (_, jobs) = app.get(key, "/v1/fine_tuning/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 0, "{jobs}");

    // LoRA DPO.
    let (s, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &dpo_body(
                pairs_id,
                json!({"beta": "auto", "batch_size": 4, "max_steps": 8, "learning_rate": 1e-2,
                       "max_seq_len": 64, "validation_split": 0.2, "eval_every": 4, "checkpoint_every": 4,
                       "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["method"]["type"], "dpo");
    // beta "auto" resolves to the sigmoid loss's 0.1; the job object shows it with the loss.
    let resolved = &job["resolved_hyperparameters"];
    assert_eq!(
        (
            resolved["loss_type"].as_str(),
            resolved["beta"].as_f64(),
            resolved["rpo_alpha"].as_f64()
        ),
        (Some("sigmoid"), Some(0.1), Some(0.0)),
        "{resolved}"
    );
    assert_eq!(resolved["lora"]["r"], 4, "{resolved}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = app.wait_for_job(&id).await;
    let (_, m) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{id}/metrics"))
        .await;
    let points = m["data"].as_array().unwrap();
    let first = points.iter().find(|p| p["train_loss"].is_number()).unwrap();
    assert_eq!(first["train_loss"], std::f64::consts::LN_2, "{first}");
    assert!(
        points.iter().any(|p| p["rewards/accuracies"].is_number()),
        "{m}"
    );
    assert!(
        points
            .iter()
            .any(|p| p["valid_rewards/margins"].is_number()),
        "{m}"
    );
    let csv = app
        .get_text(
            key,
            &format!("/v1/fine_tuning/jobs/{id}/metrics"),
            Some("text/csv"),
        )
        .await;
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains(",rewards/chosen,") && header.contains("valid_rewards/accuracies"),
        "{header}"
    );
    let (_, events) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{id}/events"))
        .await;
    let messages: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Reference log-probs ready")),
        "{messages:?}"
    );
    let dir = app
        .download(
            key,
            &format!("/v1/fine_tuning/jobs/{id}/download?artifact=adapter"),
        )
        .await;
    assert!(
        dir.path()
            .join(format!("{id}-adapter/adapter_model.safetensors"))
            .is_file()
    );
    let (s, c) = app
        .post(
            key,
            "/v1/chat/completions",
            &json!({"model": done["fine_tuned_model"], "messages": [{"role": "user", "content": "Tell me about tea please."}],
                    "max_tokens": 6, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{c}");

    // Full DPO with another loss.
    let (s, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &dpo_body(
                pairs_id,
                json!({"loss_type": "ipo", "batch_size": 4, "max_steps": 4, "learning_rate": 1e-3,
                       "max_seq_len": 64}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let full = app.wait_for_job(job["id"].as_str().unwrap()).await;
    assert!(full["fine_tuned_model"].is_string(), "{full}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_jobs_through_the_api_on_sqlite() {
    preference_jobs_through_the_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_jobs_through_the_api_on_postgres() {
    preference_jobs_through_the_api(Backend::Postgres).await;
}
