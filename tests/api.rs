//! API tests against the real server on a loopback port, each run on SQLite and on Postgres.

mod common;

use common::{Backend, TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};

const GOOD: &str =
    r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;

/// A chat file with known duplicates and one bad line of each kind; returns bytes.
fn chat_file_with_known_problems() -> Vec<u8> {
    let mut b = Vec::new();
    let mut line = |s: &[u8]| {
        b.extend_from_slice(s);
        b.push(b'\n');
    };
    line(GOOD.as_bytes()); // 1 valid
    line(br#"{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}"#); // 2 wrong role
    line(GOOD.as_bytes()); // 3 duplicate of 1
    line(br#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","weight":2}]}"#); // 4
    line(b"this is not json"); // 5
    line(b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"); // 6 invalid UTF-8
    line(b""); // 7 blank: allowed
    line(br#"{"messages":[]}"#); // 8 empty messages
    line(br#"{"messages":[{"role":"user","content":"only a question"}]}"#); // 9 no assistant
    line(br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"2+2"},{"role":"assistant","content":"4"}]}"#); // 10
    line(GOOD.as_bytes()); // 11 duplicate of 1
    b
}

fn good_chat_file(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!(r#"{{"messages":[{{"role":"user","content":"q{i}"}},{{"role":"assistant","content":"a{i}"}}]}}"#) + "\n")
        .collect::<String>()
        .into_bytes()
}

fn pretrain_file() -> Vec<u8> {
    b"{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"A second document.\"}\n".to_vec()
}

/// A preference (DPO) line in OpenAI's format.
fn pair(prompt: &str, preferred: &str, non_preferred: &str) -> String {
    format!(
        r#"{{"input":{{"messages":[{{"role":"user","content":"{prompt}"}}]}},"preferred_output":[{{"role":"assistant","content":"{preferred}"}}],"non_preferred_output":[{{"role":"assistant","content":"{non_preferred}"}}]}}"#
    ) + "\n"
}

async fn preference_uploads_report_their_format(backend: Backend) {
    let app = spawn_app(backend).await;
    let good = [pair("2+2?", "4", "5"), pair("hi", "hello", "go away")].concat();
    let (s, f) = app
        .upload(&app.admin_key, "fine-tune", "dpo.jsonl", good.into_bytes())
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["status"], "processed", "{f}");
    let v = &f["validation"];
    assert_eq!(v["format"], "preference");
    assert_eq!(v["valid_examples"], 2);
    assert_eq!(v["stats"]["preference"]["pairs"], 2);
    assert_eq!(v["stats"]["preference"]["preferred"]["chars"]["max"], 5);
    assert_eq!(v["stats"]["preference"]["non_preferred"]["chars"]["min"], 1);

    let bad = [
        pair("2+2?", "4", "5"),
        pair("2+2?", "4", "4"),
        format!("{GOOD}\n"),
        r#"{"input":{"messages":[]},"preferred_output":[],"non_preferred_output":[]}"#.to_string(),
    ]
    .concat();
    let (s, f) = app
        .upload(&app.admin_key, "fine-tune", "bad.jsonl", bad.into_bytes())
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["status"], "error");
    let v = &f["validation"];
    assert_eq!(v["format"], "preference");
    let errors: Vec<(u64, &str, &str)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap(),
                e["param"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (2, "identical_outputs", "non_preferred_output"),
            (3, "mixed_formats", ""),
            (4, "empty_messages", "input.messages"),
        ]
    );
    assert_eq!(v["error_counts"]["identical_outputs"], 1);
    assert!(
        f["status_details"]
            .as_str()
            .unwrap()
            .contains("line 3: a chat line"),
        "{f}"
    );
}

async fn upload_round_trip_reports_every_bad_line(backend: Backend) {
    let app = spawn_app(backend).await;
    let bytes = chat_file_with_known_problems();
    let (status, file) = app
        .upload(&app.admin_key, "fine-tune", "train.jsonl", bytes.clone())
        .await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], bytes.len() as u64);
    assert_eq!(file["status"], "error");
    let report = &file["validation"];
    assert_eq!(report["total_lines"], 11);
    assert_eq!(report["blank_lines"], 1);
    assert_eq!(report["valid_examples"], 4);
    assert_eq!(report["duplicates"], 2);
    assert_eq!(report["invalid_lines"], 6);
    let errors: Vec<(u64, String, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap().into(),
                e["param"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = [
        (2, "invalid_role", "messages[0].role"),
        (4, "invalid_weight", "messages[1].weight"),
        (5, "invalid_json", ""),
        (6, "invalid_utf8", ""),
        (8, "empty_messages", "messages"),
        (9, "no_trained_assistant", "messages"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:?}");
    for ((line, code, param), (el, ec, ep)) in errors.iter().zip(expect) {
        assert_eq!((*line, code.as_str()), (el, ec), "{errors:?}");
        assert_eq!(param, ep, "param of line {line}");
    }
    assert!(file["status_details"].as_str().unwrap().contains("line 2"));

    // The bytes come back exactly as sent.
    let id = file["id"].as_str().unwrap();
    let r = app
        .client
        .get(app.url(&format!("/v1/files/{id}/content")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // And the object reads back the same as the upload answered.
    let (status, got) = app.get(&app.admin_key, &format!("/v1/files/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, file);
}

async fn purpose_after_file_gives_the_same_report(backend: Backend) {
    let app = spawn_app(backend).await;
    let bytes = chat_file_with_known_problems();
    let (_, first) = app
        .upload(&app.admin_key, "fine-tune", "a.jsonl", bytes.clone())
        .await;
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("b.jsonl"),
        )
        .text("purpose", "fine-tune");
    let r = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(&app.admin_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(first["validation"], second["validation"]);
    assert_eq!(first["sha256"], second["sha256"]);
}

async fn good_files_are_processed_with_stats(backend: Backend) {
    let app = spawn_app(backend).await;
    let (s, f) = app
        .upload(
            &app.admin_key,
            "fine-tune",
            "good.jsonl",
            good_chat_file(10),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(f["status"], "processed", "{f}");
    assert_eq!(f["validation"]["stats"]["examples"], 10);
    assert_eq!(f["validation"]["stats"]["role_counts"]["assistant"], 10);
    assert_eq!(f["validation"]["stats"]["messages_per_example"]["max"], 2);
    assert_eq!(f["validation"]["format"], "chat");
    assert!(f["validation"]["stats"].get("preference").is_none(), "{f}");
    let (s, p) = app
        .upload(&app.admin_key, "pretrain", "docs.jsonl", pretrain_file())
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["status"], "processed", "{p}");
    assert_eq!(p["validation"]["format"], "text");
    // A chat file uploaded for pretraining has no `text`: every line is reported.
    let (_, wrong) = app
        .upload(&app.admin_key, "pretrain", "chat.jsonl", good_chat_file(2))
        .await;
    assert_eq!(wrong["status"], "error");
    assert_eq!(wrong["validation"]["error_counts"]["missing_text"], 2);
    // An unknown purpose is refused before anything is stored.
    let (s, e) = app
        .upload(
            &app.admin_key,
            "fine-tune-results",
            "x.jsonl",
            good_chat_file(1),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["param"], "purpose");
    let (_, list) = app.get(&app.admin_key, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let (_, list) = app.get(&app.admin_key, "/v1/files?purpose=pretrain").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (s, e) = app.get(&app.admin_key, "/v1/files?purpose=bogus").await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("purpose")),
        "{e}"
    );
    let (s, list) = app.get(&app.admin_key, "/v1/files?limit=1").await;
    assert_eq!(
        (
            s,
            list["data"].as_array().unwrap().len(),
            list["has_more"].as_bool()
        ),
        (200, 1, Some(true))
    );
    let (s, e) = app.get(&app.admin_key, "/v1/files?limit=lots").await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("limit")),
        "{e}"
    );
}

async fn oversize_upload_is_413_and_leaves_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_upload_bytes = 2_000).await;
    let (ok, _) = app
        .upload(
            &app.admin_key,
            "fine-tune",
            "small.jsonl",
            good_chat_file(5),
        )
        .await;
    assert_eq!(ok, 200);
    let blobs_before = app.blob_files();
    let (status, e) = app
        .upload(&app.admin_key, "fine-tune", "big.jsonl", good_chat_file(60))
        .await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "file_too_large");
    // Far over the limit the server answers 413 and closes without reading the rest, so the
    // client may see its write cut off before it reads the answer; either way nothing is kept.
    match app
        .try_upload(
            &app.admin_key,
            "fine-tune",
            "huge.jsonl",
            good_chat_file(100_000),
        )
        .await
    {
        Ok((status, e)) => assert_eq!(status, 413, "{e}"),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let (_, list) = app.get(&app.admin_key, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.blob_files(), blobs_before);
}

async fn truncated_multipart_body_leaves_nothing(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(backend).await;
    let boundary = "XyZboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"t.jsonl\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(good_chat_file(2000));
    // Announce more than is sent, then stop sending: the body ends mid-file.
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        app.admin_key,
        body.len() + 10_000
    );
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sock.read_to_end(&mut answer),
    )
    .await;
    // Whatever the server could answer, nothing may have been kept.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, list) = app.get(&app.admin_key, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert!(app.blob_files().is_empty(), "{:?}", app.blob_files());
}

async fn keys_are_required_and_orgs_are_isolated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, file) = app
        .upload(&app.admin_key, "pretrain", "a.jsonl", pretrain_file())
        .await;
    let file_id = file["id"].as_str().unwrap();
    let pretrain = |file: &str| json!({"model": "wick-llama-1m", "training_file": file, "method": {"type": "pretrain"}});
    let (_, job) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &pretrain(file_id))
        .await;
    let job_id = job["id"].as_str().unwrap();

    let r = app.client.get(app.url("/v1/files")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let (s, _) = app.get("wick-not-a-real-key", "/v1/files").await;
    assert_eq!(s, 401);

    let other = app.key_for_org("beta").await;
    for path in [
        format!("/v1/files/{file_id}"),
        format!("/v1/files/{file_id}/content"),
        format!("/v1/fine_tuning/jobs/{job_id}"),
        format!("/v1/fine_tuning/jobs/{job_id}/events"),
    ] {
        let (s, e) = app.get(&other, &path).await;
        assert_eq!(s, 404, "{path}: {e}");
    }
    let (s, _) = app
        .post(
            &other,
            &format!("/v1/fine_tuning/jobs/{job_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app.delete(&other, &format!("/v1/files/{file_id}")).await;
    assert_eq!(s, 404);
    let (_, list) = app.get(&other, "/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // The other org cannot train on our file either.
    let (s, e) = app
        .post(&other, "/v1/fine_tuning/jobs", &pretrain(file_id))
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("training_file"))
    );
    // Health is open.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn job_errors_name_the_bad_param(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let (_, chat) = app
        .upload(key, "fine-tune", "a.jsonl", good_chat_file(3))
        .await;
    let (_, docs) = app
        .upload(key, "pretrain", "d.jsonl", pretrain_file())
        .await;
    let (_, bad) = app
        .upload(
            key,
            "fine-tune",
            "bad.jsonl",
            chat_file_with_known_problems(),
        )
        .await;
    let chat = chat["id"].as_str().unwrap();
    let docs = docs["id"].as_str().unwrap();
    let bad = bad["id"].as_str().unwrap();
    let cases = [
        (json!({"model": "gpt-9", "training_file": chat}), "model"),
        (
            json!({"model": "wick-llama-1m", "training_file": "file-nope"}),
            "training_file",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": docs}),
            "training_file",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": bad}),
            "training_file",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat, "validation_file": "file-nope"}),
            "validation_file",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat, "suffix": "no spaces please"}),
            "suffix",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate": 5.0}}}}),
            "method.supervised.hyperparameters.learning_rate",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "lots"}}}}),
            "method.supervised.hyperparameters.n_epochs",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": docs,
                "method": {"type": "pretrain", "pretrain": {"hyperparameters": {"max_seq_len": 1}}}}),
            "method.pretrain.hyperparameters.max_seq_len",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"lora": {"target_modules": ["lm_head"]}}}}}),
            "method.supervised.hyperparameters.lora.target_modules[0]",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": docs,
                "method": {"type": "pretrain", "pretrain": {"hyperparameters": {"rope_scaling": {"type": "yarn", "factor": 0.5}}}}}),
            "method.pretrain.hyperparameters.rope_scaling.factor",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": docs,
                "method": {"type": "pretrain", "pretrain": {"hyperparameters": {"rope_scaling": {"type": "dynamic", "factor": 2.0}}}}}),
            "method.pretrain.hyperparameters.rope_scaling.type",
        ),
        (
            json!({"model": "wick-llama-1m", "training_file": chat, "colour": "blue"}),
            "colour",
        ),
        (json!({"training_file": chat}), "model"),
        // A preset has random weights: fine-tuning it is refused now, not when the job runs.
        (
            json!({"model": "wick-llama-1m", "training_file": chat}),
            "model",
        ),
    ];
    for (body, param) in cases {
        let (s, e) = app.post(key, "/v1/fine_tuning/jobs", &body).await;
        assert_eq!(s, 400, "{body} -> {e}");
        assert_eq!(e["error"]["param"], param, "{body} -> {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = app
        .client
        .post(app.url("/v1/fine_tuning/jobs"))
        .bearer_auth(key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The estimate refuses it the same way, saying what to do.
    let (s, e) = app
        .post(
            key,
            "/v1/estimate",
            &json!({"model": "wick-llama-1m", "training_file": chat}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("model")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Pretrain it first"),
        "{e}"
    );
    // Nothing was created by any of them.
    let (_, list) = app.get(key, "/v1/fine_tuning/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

async fn jobs_are_listed_paginated_and_cancellable(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let (_, chat) = app
        .upload(key, "pretrain", "a.jsonl", pretrain_file())
        .await;
    let chat = chat["id"].as_str().unwrap().to_string();
    let mut ids = vec![];
    for i in 0..3 {
        let (s, job) = app
            .post(key, "/v1/fine_tuning/jobs", &json!({
                "model": "wick-llama-1m", "training_file": chat, "suffix": format!("run{i}"), "seed": 7,
                "method": {"type": "pretrain", "pretrain": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}}}}))
            .await;
        assert_eq!(s, 200, "{job}");
        assert_eq!(job["object"], "fine_tuning.job");
        assert_eq!(job["status"], "queued");
        assert_eq!(job["seed"], 7);
        assert_eq!(job["hyperparameters"]["n_epochs"], 2);
        assert_eq!(job["hyperparameters"]["batch_size"], "auto");
        assert_eq!(job["method"]["pretrain"]["hyperparameters"]["n_epochs"], 2);
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // Newest first, two per page.
    let (_, p1) = app.get(key, "/v1/fine_tuning/jobs?limit=2").await;
    let p1_ids: Vec<&str> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(p1_ids, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(p1["has_more"], true);
    let (_, p2) = app
        .get(
            key,
            &format!("/v1/fine_tuning/jobs?limit=2&after={}", ids[1]),
        )
        .await;
    let p2_ids: Vec<&str> = p2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(p2_ids, [ids[0].as_str()]);
    assert_eq!(p2["has_more"], false);
    let (s, e) = app.get(key, "/v1/fine_tuning/jobs?limit=0").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("limit")));

    // The file cannot be deleted while jobs use it.
    let (s, e) = app.delete(key, &format!("/v1/files/{chat}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("file_in_use")));

    for id in &ids {
        let (s, job) = app
            .post(
                key,
                &format!("/v1/fine_tuning/jobs/{id}/cancel"),
                &json!({}),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(job["status"], "cancelled");
        assert!(job["finished_at"].is_i64());
    }
    let (s, e) = app
        .post(
            key,
            &format!("/v1/fine_tuning/jobs/{}/cancel", ids[0]),
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("invalid_job_state"))
    );

    let (_, events) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{}/events", ids[0]))
        .await;
    let messages: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 3, "{events}");
    assert!(messages[0].contains("cancelled"));
    assert!(messages[1].starts_with("Files validated"), "{messages:?}");
    assert!(messages[2].starts_with("Created fine-tuning job"));
    let (_, page) = app
        .get(
            key,
            &format!("/v1/fine_tuning/jobs/{}/events?limit=1", ids[0]),
        )
        .await;
    assert_eq!(page["has_more"], true);
    let after = page["data"][0]["id"].as_str().unwrap();
    let (_, rest) = app
        .get(
            key,
            &format!("/v1/fine_tuning/jobs/{}/events?after={after}", ids[0]),
        )
        .await;
    assert_eq!(rest["data"][0]["message"].as_str().unwrap(), messages[1]);

    // With every job ended the file can go; the jobs keep their record.
    let (s, d) = app.delete(key, &format!("/v1/files/{chat}")).await;
    assert_eq!((s, d["deleted"].as_bool()), (200, Some(true)));
    let (s, _) = app.get(key, &format!("/v1/files/{chat}")).await;
    assert_eq!(s, 404);
    let (s, job) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{}", ids[0]))
        .await;
    assert_eq!(
        (s, job["training_file"].as_str()),
        (200, Some(chat.as_str()))
    );
    assert!(app.blob_files().is_empty());
}

async fn models_and_unknown_routes(backend: Backend) {
    let app: TestApp = spawn_app(backend).await;
    let (s, models) = app.get(&app.admin_key, "/v1/models").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"wick-llama-1m"), "{ids:?}");
    let (s, m) = app.get(&app.admin_key, "/v1/models/wick-llama-1m").await;
    assert_eq!((s, m["object"].as_str()), (200, Some("model")));
    let (s, e) = app.get(&app.admin_key, "/v1/nothing-here").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_route"))
    );
}

/// The error a response carries, after checking that it is JSON in our shape.
async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ctype = r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("application/json"), "{status}: {ctype}");
    let body: Value = r.json().await.unwrap();
    let e = &body["error"];
    assert!(e["code"].is_string(), "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e.get("param").is_some(), "{body}");
    (status, e.clone())
}

/// A NUL character (which Postgres text cannot hold) in a path, a query parameter or a JSON
/// field is a 400 naming where it is, on both stores, and changes nothing.
async fn nul_characters_are_refused_naming_where(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;
    let (_, file) = app
        .upload(key, "pretrain", "a.jsonl", pretrain_file())
        .await;
    let file_id = file["id"].as_str().unwrap();
    for (path, param) in [
        ("/v1/files/file-%00x".to_string(), None),
        ("/v1/fine_tuning/jobs/ftjob-%00".into(), None),
        ("/v1/models/wick%00".into(), None),
        (
            "/v1/fine_tuning/jobs?limit=2&after=%00".into(),
            Some("after"),
        ),
        ("/v1/files?after=a%00b".into(), Some("after")),
        (format!("/v1/files/{file_id}?model=m%00"), Some("model")),
    ] {
        let (s, e) = app.get(key, &path).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, param),
            "{path}: {e}"
        );
        assert_eq!(e["error"]["code"], "invalid_request_error", "{path}: {e}");
    }
    let pretrain = |extra: Value| {
        let mut body = json!({"model": "wick-llama-1m", "training_file": file_id,
            "method": {"type": "pretrain"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, param) in [
        (json!({"model": "wick\u{0}"}), "model"),
        (json!({"suffix": "a\u{0}"}), "suffix"),
        (json!({"metadata": {"note": "x\u{0}y"}}), "metadata.note"),
        (json!({"training_file": "file-\u{0}"}), "training_file"),
    ] {
        let (s, e) = app
            .post(key, "/v1/fine_tuning/jobs", &pretrain(body.clone()))
            .await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {e}"
        );
    }
    let (s, e) = app
        .post(
            key,
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "a\u{0}"}]}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("messages[0].content")),
        "{e}"
    );
    // The same body without the NUL is taken: the check looks at values, not at the text.
    let (s, job) = app
        .post(
            key,
            "/v1/fine_tuning/jobs",
            &pretrain(json!({"metadata": {"note": "\\u0000 is text here"}})),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let (_, list) = app.get(key, "/v1/fine_tuning/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
}

/// Every answer forbids MIME sniffing, framing and referrers; the dashboard's page carries a
/// Content Security Policy allowing only its own files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_security_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    let api = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let error = app.client.get(app.url("/v1/files")).send().await.unwrap();
    for r in [&page, &api, &error] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.url());
        assert_eq!(h["x-frame-options"], "DENY", "{}", r.url());
        assert_eq!(h["referrer-policy"], "no-referrer", "{}", r.url());
    }
    assert_eq!(error.status(), 401);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!api.headers().contains_key("content-security-policy"));
}

/// `wick keys create|list|revoke` on the store a running server uses: a created key works, the
/// list shows it (never the key itself), and once revoked it answers 401 at once, while the
/// organization's other keys keep working.
async fn keys_are_listed_and_revoked_from_the_command_line(backend: Backend) {
    let app = spawn_app(backend).await;
    let wick = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wick"));
        cmd.args(args).arg("--data-dir").arg(&app.data_dir);
        cmd.env_remove("DATABASE_URL");
        if let Some(url) = &app.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = wick(&["keys", "create", "--org", "acme", "--name", "ci"]);
    assert!(ok, "{err}");
    let key = out.trim().to_string();
    let (ok, _, err) = wick(&["keys", "create", "--org", "acme", "--name", "laptop"]);
    assert!(ok, "{err}");
    let (s, _) = app.get(&key, "/v1/files").await;
    assert_eq!(s, 200);

    let (ok, list, err) = wick(&["keys", "list", "--org", "acme"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    let ci = rows.iter().find(|r| r[2] == "ci").unwrap();
    assert_eq!((ci[1], ci[5]), ("acme", "-"), "{list}");
    assert!(key.starts_with(ci[3].trim_end_matches('…')), "{list}");
    assert!(!list.contains(&key), "the list never shows a key");
    let (_, all, _) = wick(&["keys", "list"]);
    assert_eq!(
        all.lines().count(),
        4,
        "the admin key and acme's two: {all}"
    );

    let (ok, out, err) = wick(&["keys", "revoke", ci[0]]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (s, e) = app.get(&key, "/v1/files").await;
    assert_eq!(s, 401, "{e}");
    let (ok, out, _) = wick(&["keys", "revoke", ci[0]]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let (ok, _, err) = wick(&["keys", "revoke", "key-nope"]);
    assert!(!ok && err.contains("no key with id"), "{err}");
    let (_, list, _) = wick(&["keys", "list", "--org", "acme"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(ci[0]) && !l.ends_with("\t-")),
        "{list}"
    );
    let (s, _) = app.get(&app.admin_key, "/v1/files").await;
    assert_eq!(s, 200, "other keys keep working");
}

async fn framework_errors_have_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = &app.admin_key;

    let r = app
        .client
        .get(app.url("/no/such/path"))
        .send()
        .await
        .unwrap();
    let (s, e) = error_of(r).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("unknown_route")), "{e}");

    let r = app
        .client
        .get(app.url("/ui/no-such-file.js"))
        .send()
        .await
        .unwrap();
    let (s, e) = error_of(r).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let r = app.client.get(app.url("/ui/app.js")).send().await.unwrap();
    assert_eq!(r.status(), 200, "an asset that exists is still served");

    // A known path with a method it does not take: 405, the Allow header kept. `/v1/files`
    // merges its GET (timed) and POST (upload) routes.
    let r = app
        .client
        .delete(app.url("/v1/files"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let allow = r.headers()[reqwest::header::ALLOW]
        .to_str()
        .unwrap()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let (s, e) = error_of(r).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("DELETE"), "{e}");

    // A JSON body over axum's 2 MB limit keeps its 413. (Its own client: the server answers
    // before reading the whole body and closes that connection.)
    let big = format!("{{\"model\": \"{}\"}}", "x".repeat(3 << 20));
    let r = reqwest::Client::new()
        .post(app.url("/v1/fine_tuning/jobs"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, e) = error_of(r).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (413, Some("request_too_large")),
        "{e}"
    );

    // axum's own path rejection (an id that is not UTF-8) is plain text underneath.
    let r = app
        .client
        .get(app.url("/v1/files/%FF"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let (s, e) = error_of(r).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_request_error")),
        "{e}"
    );
}

/// Reads one HTTP/1.1 response (status, body) from a raw socket, given up to 10 s.
async fn read_raw_response(sock: &mut tokio::net::TcpStream) -> (u16, Value) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, serde_json::from_str(&body[..len]).unwrap());
                }
            }
            assert!(n > 0, "connection closed before a response: {text:?}");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

async fn requests_over_the_time_limit_answer_408_json(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(backend, |s| s.request_timeout_secs = 1).await;
    // A job request whose body never finishes arriving: the handler waits for it until the
    // request's time is up, with no sleeping on the server and no race.
    let head = format!(
        "POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\": ",
        app.admin_key
    );
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (status, body) = read_raw_response(&mut sock).await;
    assert_eq!(status, 408, "{body}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1 s"),
        "{body}"
    );
    assert_eq!(body["error"]["param"], Value::Null, "{body}");
}

/// Clients that connect and send nothing, or send part of their headers and stall, are closed
/// after the header timeout; with more of them than the connection cap, the server still
/// answers a real request within a few timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_the_server_keeps_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.header_timeout_secs = 1;
        s.max_connections = 8;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..20 {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        slow.push(sock);
    }
    let started = std::time::Instant::now();
    let r = app
        .client
        .get(app.url("/healthz"))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await
        .expect("the server answers while slow clients hold connections");
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "answered after {:?}",
        started.elapsed()
    );
    // Every slow connection was closed by the server (end of stream, or a reset).
    for (i, mut sock) in slow.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("slow connection {i} is still open"));
        assert!(matches!(read, Ok(0) | Err(_)), "connection {i}: {read:?}");
    }
}

/// An upload that stops sending is cut off after the idle timeout (408 `upload_stalled`), one
/// that trickles below the minimum rate after it (408 `upload_too_slow`); neither leaves a file
/// or a blob, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_uploads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.upload_idle_timeout_secs = 1;
        s.upload_min_bytes_per_sec = 1000;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let head = |len: usize| {
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: {len}\r\n\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n",
            app.admin_key
        )
    };
    /// Reads the answer's status line and body, to the end of the connection.
    async fn answer(sock: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sock.read_to_end(&mut out),
        )
        .await
        .expect("the server answers and closes within 10 s")
        .ok();
        String::from_utf8_lossy(&out).into_owned()
    }
    // Stalled: part of a line, then nothing.
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(head(100_000).as_bytes()).await.unwrap();
    stalled
        .write_all(br#"{"messages": [{"role": "user", "#)
        .await
        .unwrap();
    let text = answer(&mut stalled).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("upload_stalled"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Trickling: a byte every 100 ms, far under 1000 bytes/s.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle.write_all(head(100_000).as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut probe = [0u8; 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(
                std::time::Duration::from_millis(1),
                trickle.read(&mut probe),
            )
            .await
                && n > 0
            {
                return String::from_utf8_lossy(&probe[..n]).into_owned()
                    + &answer(&mut trickle).await;
            }
        }
        String::new()
    });
    let text = writer.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("upload_too_slow"), "{text}");
    // Nothing kept; the server still serves, and a normal upload goes through.
    let (_, files) = app.get(&app.admin_key, "/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 0, "{files}");
    assert!(app.blob_files().is_empty(), "{:?}", app.blob_files());
    let (s, f) = app
        .upload(
            &app.admin_key,
            "fine-tune",
            "ok.jsonl",
            br#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{f}");
}

/// `--log-format json` makes the server's log lines JSON objects, one per line.
#[tokio::test]
async fn serve_logs_json_lines_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, v, _) = common::serve_with_json_logs(dir.path()).await;
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["message"], "wick is serving", "{v}");
    assert!(v["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    child.kill().await.unwrap();
}

/// A models folder with one loadable tiny Llama and two folders that cannot be loaded.
fn models_folder() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..100)
        .map(|i| format!("The cat number {i} sat on the mat. q{i} a{i}"))
        .collect();
    let parameters = common::tiny_llama_folder(&dir.path().join("tiny-llama"), &texts);
    let gpt2 = dir.path().join("gpt2-small");
    std::fs::create_dir_all(&gpt2).unwrap();
    std::fs::write(
        gpt2.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768}"#,
    )
    .unwrap();
    let no_tokenizer = dir.path().join("no-tokenizer");
    common::tiny_llama_folder(&no_tokenizer, &texts);
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).unwrap();
    (dir, parameters)
}

async fn local_models_are_listed_trained_from_and_chatted_with(backend: Backend) {
    let (models_dir, parameters) = models_folder();
    let path = models_dir.path().to_path_buf();
    let app = spawn_app_with(backend, |s| s.models_dir = Some(path)).await;
    let key = &app.admin_key;

    // Listed for every organization, loadable or with the reason it is not.
    let other = app.key_for_org("other").await;
    for k in [key, &other] {
        let (s, models) = app.get(k, "/v1/models").await;
        assert_eq!(s, 200);
        let local: Vec<&Value> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["kind"] == "local")
            .collect();
        let ids: Vec<&str> = local.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            ["gpt2-small", "no-tokenizer", "tiny-llama"],
            "{models}"
        );
        let tiny = local[2];
        assert_eq!(tiny["loadable"], true, "{tiny}");
        assert_eq!(tiny["owned_by"], "local");
        assert_eq!(tiny["object"], "model");
        assert_eq!(tiny["parameters"], parameters);
        assert_eq!(tiny["context_length"], 128);
        assert_eq!(tiny["architecture"], "LlamaForCausalLM");
        assert_eq!(tiny["chat_template"], true);
        assert!(tiny["created"].as_i64().unwrap() > 0);
        assert_eq!(local[0]["loadable"], false);
        assert!(
            local[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("config.json: unsupported architecture GPT2LMHeadModel"),
            "{}",
            local[0]
        );
        assert_eq!(
            (local[1]["loadable"].as_bool(), local[1]["reason"].as_str()),
            (Some(false), Some("no tokenizer.json"))
        );
    }
    let (s, m) = app.get(&other, "/v1/models/tiny-llama").await;
    assert_eq!((s, m["kind"].as_str()), (200, Some("local")));
    let (s, m) = app.get(key, "/v1/models/gpt2-small").await;
    assert_eq!((s, m["loadable"].as_bool()), (200, Some(false)));
    let (s, _) = app.get(key, "/v1/models/%2E%2E%2Fdata").await;
    assert_eq!(s, 404);

    // Jobs may start from a loadable folder only.
    let (_, chat) = app
        .upload(key, "fine-tune", "a.jsonl", good_chat_file(3))
        .await;
    let chat = chat["id"].as_str().unwrap();
    for (model, says) in [
        ("gpt2-small", "GPT2LMHeadModel"),
        ("no-tokenizer", "no tokenizer.json"),
    ] {
        let (s, e) = app
            .post(
                key,
                "/v1/fine_tuning/jobs",
                &json!({"model": model, "training_file": chat}),
            )
            .await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some("model")),
            "{e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    let body = json!({"model": "tiny-llama", "training_file": chat, "suffix": "local",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 5, "max_seq_len": 64}}}});
    let (s, job) = app.post(key, "/v1/fine_tuning/jobs", &body).await;
    assert_eq!(
        (s, job["model"].as_str()),
        (200, Some("tiny-llama")),
        "{job}"
    );

    // The estimate reads the folder's config.
    let (s, e) = app.post(key, "/v1/estimate", &body).await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["parameters"], parameters);
    assert_eq!(e["total_steps"], 5);
    let (s, e) = app
        .post(
            key,
            "/v1/estimate",
            &json!({"model": "no-tokenizer", "training_file": chat}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("model")),
        "{e}"
    );

    // And it chats, straight from its folder.
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "The cat"}], "max_tokens": 5, "seed": 1});
    let (s, c) = app
        .post(&other, "/v1/chat/completions", &ask("tiny-llama"))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["model"], "tiny-llama");
    assert!(c["choices"][0]["message"]["content"].is_string(), "{c}");
    let (s, e) = app
        .post(key, "/v1/chat/completions", &ask("no-tokenizer"))
        .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("model")),
        "{e}"
    );
    assert!(!app.data_dir.join("cache").exists(), "nothing was copied");
}

on_both_stores!(
    upload_round_trip_reports_every_bad_line,
    preference_uploads_report_their_format,
    purpose_after_file_gives_the_same_report,
    good_files_are_processed_with_stats,
    oversize_upload_is_413_and_leaves_nothing,
    truncated_multipart_body_leaves_nothing,
    keys_are_required_and_orgs_are_isolated,
    job_errors_name_the_bad_param,
    jobs_are_listed_paginated_and_cancellable,
    models_and_unknown_routes,
    framework_errors_have_the_error_shape,
    nul_characters_are_refused_naming_where,
    keys_are_listed_and_revoked_from_the_command_line,
    requests_over_the_time_limit_answer_408_json,
    local_models_are_listed_trained_from_and_chatted_with,
);

/// `POST /v1/admin/models/import`: the admin key copies a folder of the models folder into the
/// blob store (listed as `imported`, shadowing the folder); tenants get 403, an unknown folder
/// 404, an unloadable one or a bad name 400, and nothing is recorded for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_imports_a_local_model_into_the_blob_store() {
    let (models_dir, parameters) = models_folder();
    let path = models_dir.path().to_path_buf();
    let app = spawn_app_with(Backend::Sqlite, |s| s.models_dir = Some(path)).await;
    let key = &app.admin_key;
    let tenant = app.key_for_org("tenant").await;
    let route = "/v1/admin/models/import";
    let (s, e) = app
        .post(&tenant, route, &json!({"local_model": "tiny-llama"}))
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("admin_only")),
        "{e}"
    );
    for (body, status, code, param) in [
        (
            json!({"local_model": "nope"}),
            404,
            "model_not_found",
            "local_model",
        ),
        (
            json!({"local_model": "no-tokenizer"}),
            400,
            "model_not_loadable",
            "local_model",
        ),
        (
            json!({"local_model": "tiny-llama", "name": "wick-llama-1m"}),
            400,
            "invalid_request_error",
            "name",
        ),
        (
            json!({"local_model": "tiny-llama", "name": "a/b"}),
            400,
            "invalid_request_error",
            "name",
        ),
        (
            json!({"local_model": "tiny-llama", "extra": 1}),
            400,
            "invalid_request_error",
            "extra",
        ),
    ] {
        let (s, e) = app.post(key, route, &body).await;
        assert_eq!(
            (s, e["error"]["code"].as_str(), e["error"]["param"].as_str()),
            (status, Some(code), Some(param)),
            "{body}: {e}"
        );
    }
    assert!(
        !app.blob_files()
            .iter()
            .any(|p| p.to_string_lossy().contains("base-models"))
    );

    let (s, m) = app
        .post(
            key,
            route,
            &json!({"local_model": "tiny-llama", "name": "tiny-shared"}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        (m["id"].as_str(), m["kind"].as_str()),
        (Some("tiny-shared"), Some("imported"))
    );
    assert_eq!(m["parameters"], parameters);
    let hash = m["content_hash"].as_str().unwrap();
    assert!(
        app.blob_files()
            .iter()
            .any(|p| p.ends_with(format!("base-models/{hash}/model.safetensors"))),
        "{:?}",
        app.blob_files()
    );
    // Every organization sees it; importing under the folder's own name shadows the folder.
    let (s, _) = app
        .post(key, route, &json!({"local_model": "tiny-llama"}))
        .await;
    assert_eq!(s, 200);
    let (_, list) = app.get(&tenant, "/v1/models").await;
    let kinds: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"].as_str().unwrap().starts_with("tiny-"))
        .map(|m| (m["id"].as_str().unwrap(), m["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("tiny-llama", "imported"), ("tiny-shared", "imported")]
    );
    let (s, m) = app.get(&tenant, "/v1/models/tiny-shared").await;
    assert_eq!((s, m["kind"].as_str()), (200, Some("imported")));
}
