//! The data pipeline through the real HTTP API, on SQLite and Postgres: cleaning a file into a
//! new one (background, reports, the source untouched, bad options refused naming them, an
//! interrupted clean finished by the next server start), ShareGPT and Alpaca uploads, jobs on
//! several files (checked per file, the files kept from deletion) and a mixture job run by a
//! worker with its per-domain metrics.

mod common;

use common::{Backend, TINY_MODEL, TestApp, spawn_app, spawn_app_with, spawn_app_with_tiny_model};
use serde_json::{Value, json};

fn chat(user: &str, assistant: &str) -> String {
    json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
        .to_string()
}

/// Polls file `id` until it is no longer `uploaded`.
async fn wait_for_file(app: &TestApp, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, f) = app.get(&app.admin_key, &format!("/v1/files/{id}")).await;
        assert_eq!(s, 200, "{f}");
        if f["status"] != "uploaded" {
            return f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cleaning took too long: {f}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn content(app: &TestApp, id: &str) -> String {
    app.get_text(&app.admin_key, &format!("/v1/files/{id}/content"), None)
        .await
}

async fn clean_makes_a_new_file_and_leaves_the_source(backend: Backend) {
    let (app, _models) = spawn_app_with_tiny_model(backend).await;
    let key = &app.admin_key;
    let lines = [
        chat(
            "Write to me at ana@example.com please",
            "I will write to ana@example.com.",
        ),
        chat("What is two plus two?", "Four."),
        "{\"messages\": [oops".to_string(),
        chat("What is two plus two?", "Four."),
        chat("Tell me a fact", "Water boils at 100 degrees at sea level."),
    ];
    let source_bytes = lines.join("\n") + "\n";
    let (s, src) = app
        .upload(
            key,
            "fine-tune",
            "chats.jsonl",
            source_bytes.clone().into_bytes(),
        )
        .await;
    assert_eq!(s, 200, "{src}");
    assert_eq!(src["status"], "error", "the invalid line fails the upload");
    let id = src["id"].as_str().unwrap();

    let (s, f) = app
        .post(
            key,
            &format!("/v1/files/{id}/clean"),
            &json!({"pii": "mask", "dedup": "near"}),
        )
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["status"], "uploaded");
    assert_eq!(f["source_file"], id);
    assert_eq!(f["purpose"], "fine-tune");
    assert_eq!(f["filename"], "chats.clean.jsonl");
    assert!(f["cleaning"].is_null() && f["validation"].is_null());
    let new = f["id"].as_str().unwrap().to_string();

    let f = wait_for_file(&app, &new).await;
    assert_eq!(f["status"], "processed", "{f}");
    assert_eq!(f["validation"]["valid_examples"], 3);
    assert_eq!(f["validation"]["format"], "chat");
    let c = &f["cleaning"];
    assert_eq!(c["source_file"], id);
    assert_eq!(
        (c["lines"].as_u64(), c["kept"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(c["removed"]["invalid"], 1);
    assert_eq!(c["removed"]["duplicate"], 1);
    assert_eq!(c["removed"]["near_duplicate"], 0);
    assert_eq!(c["changed"]["pii"], 1);
    assert_eq!(c["pii"]["email"], 2);
    assert_eq!(c["options"]["near_dup"]["threshold"], 0.8);
    let samples: Vec<(u64, &str, &str)> = c["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().unwrap(),
                s["rule"].as_str().unwrap(),
                s["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        samples,
        [
            (1, "pii", "changed"),
            (3, "invalid", "removed"),
            (4, "duplicate", "removed")
        ]
    );
    let written = content(&app, &new).await;
    assert_eq!(written.lines().count(), 3);
    assert!(
        written.contains("<EMAIL>") && !written.contains("ana@example.com"),
        "{written}"
    );
    assert_eq!(f["bytes"].as_u64(), Some(written.len() as u64));

    // The source is as it was; the list shows both.
    let (_, again) = app.get(key, &format!("/v1/files/{id}")).await;
    assert_eq!(again["status"], "error");
    assert!(again.get("source_file").is_none());
    assert_eq!(content(&app, id).await, source_bytes);
    let (_, list) = app.get(key, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // A cleaned file trains like any other.
    let (s, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": TINY_MODEL, "training_file": new}),
        )
        .await;
    assert_eq!(s, 200, "{job}");
}

async fn bad_clean_requests_are_refused_naming_the_option(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let (_, text) = app
        .upload(
            key,
            "pretrain",
            "docs.jsonl",
            b"{\"text\": \"hello there\"}\n".to_vec(),
        )
        .await;
    let id = text["id"].as_str().unwrap();
    let cases = [
        (json!({"speed": 3}), "speed"),
        (json!({"dedup": "fuzzy"}), "dedup"),
        (json!({"near_dup": {"threshold": 0.9}}), "near_dup"),
        (
            json!({"dedup": "near", "near_dup": {"threshold": 1.5}}),
            "near_dup.threshold",
        ),
        (
            json!({"dedup": "near", "near_dup": {"num_perm": 4}}),
            "near_dup.num_perm",
        ),
        (json!({"pii": "hide"}), "pii"),
        (
            json!({"filters": {"min_chars": 9, "max_chars": 3}}),
            "filters.max_chars",
        ),
        (
            json!({"filters": {"max_non_alnum_share": 7}}),
            "filters.max_non_alnum_share",
        ),
        (
            json!({"filters": {"languages": ["en", "xx-nope"]}}),
            "filters.languages[1]",
        ),
        (json!({"convert": "chat"}), "convert"),
    ];
    for (body, param) in cases {
        let (s, e) = app.post(key, &format!("/v1/files/{id}/clean"), &body).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {e}"
        );
    }
    let (s, e) = app.post(key, "/v1/files/file-nope/clean", &json!({})).await;
    assert_eq!(s, 404, "{e}");
    // Another organization does not see the file.
    let other = app.key_for_org("other").await;
    let (s, _) = app
        .post(&other, &format!("/v1/files/{id}/clean"), &json!({}))
        .await;
    assert_eq!(s, 404);
    // Nothing was created by any of them.
    let (_, list) = app.get(key, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

/// A clean accepted by a server that stopped before finishing it (its row `uploaded`, its lease
/// run out) is finished by the next server that starts on the same store.
async fn an_interrupted_clean_is_finished_by_the_next_start(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let data = [chat("a", "b"), chat("a", "b"), chat("c", "d")].join("\n");
    let (_, src) = app
        .upload(key, "fine-tune", "c.jsonl", data.into_bytes())
        .await;
    let src = src["id"].as_str().unwrap().to_string();
    let org = wick::store::files::get_file_any_org(&app.state.db, &src)
        .await
        .unwrap()
        .unwrap()
        .org_id;
    let id = wick::ids::new_id("file");
    let row = wick::store::files::FileRow {
        id: id.clone(),
        org_id: org.clone(),
        filename: "c.clean.jsonl".into(),
        purpose: wick::store::files::FilePurpose::FineTune,
        bytes: 0,
        sha256: String::new(),
        blob_path: wick::blob::keys::file(&org, &id),
        status: wick::store::files::FileStatus::Uploaded,
        status_details: None,
        report: None,
        created_at: wick::ids::now(),
        source_file: Some(src.clone()),
        clean_options: Some(sqlx::types::Json(json!({}))),
        clean_report: None,
    };
    wick::store::files::insert_file(&app.state.db, &row)
        .await
        .unwrap();
    // A second server on the same store and data folder: its start picks the clean up.
    let mut settings = wick::config::Settings::for_data_dir(app.data_dir.clone());
    settings.database_url = app.database_url.clone();
    settings.worker_slots = 0;
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let _second = wick::app::Application::build(settings).await.unwrap();
    let f = wait_for_file(&app, &id).await;
    assert_eq!(f["status"], "processed", "{f}");
    assert_eq!(f["cleaning"]["removed"]["duplicate"], 1);
    assert_eq!(content(&app, &id).await.lines().count(), 2);
}

async fn sharegpt_and_alpaca_uploads_are_recognised(backend: Backend) {
    let (app, _models) = spawn_app_with_tiny_model(backend).await;
    let key = &app.admin_key;
    let sharegpt = r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
{"conversations": [{"from": "wizard", "value": "x"}]}
"#;
    let (s, f) = app
        .upload(key, "fine-tune", "sg.jsonl", sharegpt.as_bytes().to_vec())
        .await;
    assert_eq!(s, 200);
    let v = &f["validation"];
    assert_eq!(v["format"], "sharegpt", "{f}");
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["code"], "invalid_from");
    assert_eq!(v["errors"][0]["param"], "conversations[0].from");
    // Cleaning drops the bad line and converts the rest to OpenAI chat lines.
    let id = f["id"].as_str().unwrap();
    let (_, c) = app
        .post(
            key,
            &format!("/v1/files/{id}/clean"),
            &json!({"convert": "chat"}),
        )
        .await;
    let c = wait_for_file(&app, c["id"].as_str().unwrap()).await;
    assert_eq!(c["status"], "processed", "{c}");
    assert_eq!(c["validation"]["format"], "chat");
    assert_eq!(c["cleaning"]["changed"]["convert"], 1);
    let alpaca = "{\"instruction\": \"Add\", \"input\": \"2 and 3\", \"output\": \"5\"}\n";
    let (_, f) = app
        .upload(key, "fine-tune", "al.jsonl", alpaca.as_bytes().to_vec())
        .await;
    assert_eq!(
        (f["status"].as_str(), f["validation"]["format"].as_str()),
        (Some("processed"), Some("alpaca"))
    );
    // Supervised jobs take it as it is; preference jobs do not.
    let (s, j) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": TINY_MODEL, "training_file": f["id"]}),
        )
        .await;
    assert_eq!(s, 200, "{j}");
    let (s, e) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": TINY_MODEL, "training_file": f["id"],
            "method": {"type": "dpo"}}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("training_file")),
        "{e}"
    );
}

async fn jobs_on_several_files_are_checked_per_file(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let up = |name: &'static str, purpose: &'static str, body: &'static str| {
        let app = &app;
        async move {
            let (_, f) = app
                .upload(key, purpose, name, body.as_bytes().to_vec())
                .await;
            f["id"].as_str().unwrap().to_string()
        }
    };
    let web = up("web.jsonl", "pretrain", "{\"text\": \"the web\"}\n").await;
    let code = up("code.jsonl", "pretrain", "{\"text\": \"fn main() {}\"}\n").await;
    let chats = up(
        "c.jsonl",
        "fine-tune",
        "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\n",
    )
    .await;
    let job = |extra: Value| {
        let mut body = json!({"model": "wick-llama-1m", "method": {"type": "pretrain"},
            "training_files": [{"file": web, "name": "web", "weight": 0.7},
                               {"file": code, "name": "code", "weight": 0.3}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (s, j) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &job(json!({
            "validation_files": [{"file": web, "name": "web"}],
            "curriculum": {"stages": [{"until_step": 10, "weights": {"web": 1}}]}})),
        )
        .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        j["training_file"],
        web.as_str(),
        "the first file stands for the job in OpenAI's field"
    );
    assert_eq!(
        j["training_files"][1],
        json!({"file": code, "name": "code", "weight": 0.3})
    );
    assert_eq!(j["validation_files"][0]["name"], "web");
    assert_eq!(j["curriculum"]["stages"][0]["until_step"], 10);
    let cases = [
        (
            json!({"training_files": [{"file": web}, {"file": "file-nope"}]}),
            "training_files[1].file",
        ),
        (
            json!({"training_files": [{"file": web}, {"file": chats}]}),
            "training_files[1].file",
        ),
        (
            json!({"training_files": [{"file": web, "weight": 1}, {"file": code}]}),
            "training_files",
        ),
        (
            json!({"training_files": [{"file": web, "name": "a b"}]}),
            "training_files[0].name",
        ),
        (json!({"training_files": []}), "training_files"),
        (
            json!({"validation_files": [{"file": "file-nope", "name": "v"}]}),
            "validation_files[0].file",
        ),
        (
            json!({"curriculum": {"stages": [{"until_step": 5, "weights": {"books": 1}}]}}),
            "curriculum.stages[0].weights.books",
        ),
        (
            json!({"curriculum": {"stages": [{"until_step": 5, "weights": {"web": 1}}, {"until_step": 5, "weights": {"web": 1}}]}}),
            "curriculum.stages[1].until_step",
        ),
        (
            json!({"curriculum": {"type": "sideways"}}),
            "curriculum.type",
        ),
        (json!({"training_file": chats}), "training_file"),
    ];
    for (extra, param) in cases {
        let (s, e) = app
            .post(key, "/v1/fine_tuning/jobs", &job(extra.clone()))
            .await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{extra}: {e}"
        );
    }
    let (s, e) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &json!({"model": "wick-llama-1m", "training_file": chats,
            "training_files": [{"file": chats}], "method": {"type": "dpo"}}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("training_files")),
        "{e}"
    );
    // The job uses code.jsonl as its second file: it cannot be deleted while the job is on.
    let (s, e) = app.delete(key, &format!("/v1/files/{code}")).await;
    assert_eq!(s, 409, "{e}");
    // The estimate counts both files.
    let (s, est) = app.post(key, "/v1/estimate", &job(json!({}))).await;
    assert_eq!(s, 200, "{est}");
}

/// A two-file pretraining job run by a worker: the metrics carry each file's tokens and each
/// validation file's loss, in JSON and CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixture_job_reports_per_domain_metrics() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.worker_slots = 1).await;
    let key = &app.admin_key;
    let docs = |word: &str, n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| {
                json!({"text": format!("{word} {i} {word} {} {word}", i * 7 % 13)}).to_string()
                    + "\n"
            })
            .collect::<String>()
            .into_bytes()
    };
    let (_, a) = app
        .upload(key, "pretrain", "a.jsonl", docs("alpha", 120))
        .await;
    let (_, b) = app
        .upload(key, "pretrain", "b.jsonl", docs("beta", 60))
        .await;
    let (_, va) = app
        .upload(key, "pretrain", "va.jsonl", docs("alpha", 10))
        .await;
    let (_, vb) = app
        .upload(key, "pretrain", "vb.jsonl", docs("beta", 10))
        .await;
    let (s, job) = app
        .post(key, "/v1/fine_tuning/jobs", &json!({
            "model": "wick-llama-1m", "seed": 1,
            "training_files": [{"file": a["id"], "name": "alpha", "weight": 0.5},
                               {"file": b["id"], "name": "beta", "weight": 0.5}],
            "validation_files": [{"file": va["id"], "name": "alpha"}, {"file": vb["id"], "name": "beta"}],
            "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                "max_steps": 6, "batch_size": 4, "max_seq_len": 32, "vocab_size": 300, "eval_every": 3}}}}))
        .await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap();
    app.wait_for_job(id).await;
    let (_, m) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{id}/metrics"))
        .await;
    let points = m["data"].as_array().unwrap();
    let last_step = points
        .iter()
        .rev()
        .find(|p| p["train_loss"].is_number())
        .unwrap();
    let (ta, tb) = (
        last_step["tokens_seen/alpha"].as_f64().unwrap(),
        last_step["tokens_seen/beta"].as_f64().unwrap(),
    );
    assert!((ta / (ta + tb) - 0.5).abs() < 0.1, "{last_step}");
    let eval = points
        .iter()
        .rev()
        .find(|p| p["valid_loss"].is_number())
        .unwrap();
    assert!(
        eval["valid_loss/alpha"].is_number() && eval["valid_perplexity/beta"].is_number(),
        "{eval}"
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
        header.contains("tokens_seen/alpha") && header.contains("valid_loss/beta"),
        "{header}"
    );
}

on_both_stores!(
    clean_makes_a_new_file_and_leaves_the_source,
    bad_clean_requests_are_refused_naming_the_option,
    an_interrupted_clean_is_finished_by_the_next_start,
    sharegpt_and_alpaca_uploads_are_recognised,
    jobs_on_several_files_are_checked_per_file,
);

/// `GET /v1/files/{id}?model=`: tokens per example for a local model's tokenizer, counted as a
/// job would (documents as pretraining tokenises them, chats through the model's template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_counts_for_a_models_tokenizer() {
    let models = tempfile::tempdir().unwrap();
    let folder = models.path().join("tiny-llama");
    let texts: Vec<String> = (0..50)
        .map(|i| format!("The cat number {i} sat on the mat."))
        .collect();
    common::tiny_llama_folder(&folder, &texts);
    let path = models.path().to_path_buf();
    let app = spawn_app_with(Backend::Sqlite, |s| s.models_dir = Some(path)).await;
    let key = &app.admin_key;
    let docs = [
        "The cat number 1 sat on the mat.".to_string(),
        "q1".into(),
        "The cat sat. ".repeat(40),
    ];
    let body: String = docs
        .iter()
        .map(|t| json!({"text": t}).to_string() + "\n")
        .collect();
    let (_, f) = app
        .upload(key, "pretrain", "d.jsonl", body.into_bytes())
        .await;
    let id = f["id"].as_str().unwrap();
    let (s, got) = app
        .get(key, &format!("/v1/files/{id}?model=tiny-llama"))
        .await;
    assert_eq!(s, 200, "{got}");
    let t = &got["tokens"];
    let tokenizer = wick::tokenizer::load(&folder.join("tokenizer.json")).unwrap();
    let counts: Vec<u64> = docs
        .iter()
        .map(|d| {
            tokenizer
                .encode_fast(d.as_str(), false)
                .unwrap()
                .get_ids()
                .len() as u64
        })
        .collect();
    assert_eq!(t["model"], "tiny-llama");
    assert_eq!(t["examples"], 3);
    assert_eq!(t["total"].as_u64(), Some(counts.iter().sum()));
    assert_eq!(
        t["per_example"]["min"].as_u64(),
        counts.iter().min().copied()
    );
    assert_eq!(
        t["per_example"]["max"].as_u64(),
        counts.iter().max().copied()
    );
    assert_eq!(t["context_length"], 128);
    assert_eq!(
        t["over_context"].as_u64(),
        Some(counts.iter().filter(|&&c| c > 128).count() as u64)
    );
    assert!(
        counts[2] > 128,
        "the long document is over the context: {counts:?}"
    );
    assert!(t.get("trained_per_example").is_none());
    // Kept: the same answer again, without the file being read.
    let (_, again) = app
        .get(key, &format!("/v1/files/{id}?model=tiny-llama"))
        .await;
    assert_eq!(again["tokens"], *t);

    // A chat: the rendered conversation's tokens, and the assistant's as trained tokens.
    let messages = json!([{"role": "user", "content": "The cat?"}, {"role": "assistant", "content": "sat on the mat"}]);
    let line = json!({"messages": messages}).to_string() + "\n";
    let (_, c) = app
        .upload(key, "fine-tune", "c.jsonl", line.into_bytes())
        .await;
    let (s, got) = app
        .get(
            key,
            &format!("/v1/files/{}?model=tiny-llama", c["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    let template = wick::chat::template::ChatTemplate::from_model_dir(&folder).unwrap();
    let msgs: Vec<wick::chat::loss_mask::TrainMessage> = serde_json::from_value(messages).unwrap();
    let ex = wick::chat::loss_mask::tokenize_chat(
        &tokenizer,
        &template,
        &msgs,
        None,
        1024,
        wick::chat::loss_mask::Overlength::Truncate,
    )
    .unwrap()
    .example()
    .unwrap();
    let trained = ex.loss_mask.iter().skip(1).filter(|&&m| m != 0).count();
    assert_eq!(
        got["tokens"]["total"].as_u64(),
        Some(ex.input_ids.len() as u64)
    );
    assert_eq!(
        got["tokens"]["trained_per_example"]["max"].as_u64(),
        Some(trained as u64)
    );
    assert!(trained > 0);

    // A preset has no tokenizer; an unknown model is no model.
    for model in ["wick-llama-1m", "nope"] {
        let (s, e) = app.get(key, &format!("/v1/files/{id}?model={model}")).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some("model")),
            "{e}"
        );
    }
}
