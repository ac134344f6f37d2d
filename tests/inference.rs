//! Trying what a job produced: chat completions (plain and streamed) on the trained model,
//! downloads of the model and a checkpoint with their checksums, and the up-front estimate.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

fn corpus() -> Vec<u8> {
    let lines = [
        "The cat sat on the mat.",
        "A dog ran to the tree.",
        "The bird looked at the river.",
    ];
    (0..200)
        .map(|i| {
            json!({"text": format!("{} {}", lines[i % 3], lines[(i + 1) % 3])}).to_string() + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn job_body(file: &str) -> Value {
    json!({"model": "wick-llama-1m", "training_file": file, "seed": 5, "suffix": "chat",
           "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
               "vocab_size": 320, "max_seq_len": 32, "batch_size": 4, "max_steps": 30,
               "learning_rate": 3e-3, "warmup_steps": 2, "eval_every": 10, "checkpoint_every": 10}}}})
}

/// Trains a tiny model through the API and returns (job id, model id).
async fn trained(app: &TestApp) -> (String, String) {
    let (_, f) = app
        .upload(&app.admin_key, "pretrain", "c.jsonl", corpus())
        .await;
    let (s, job) = app
        .post(
            &app.admin_key,
            "/v1/fine_tuning/jobs",
            &job_body(f["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, j) = app
            .get(&app.admin_key, &format!("/v1/fine_tuning/jobs/{id}"))
            .await;
        if j["status"] == "succeeded" {
            return (id, j["fine_tuned_model"].as_str().unwrap().to_string());
        }
        assert!(
            !["failed", "cancelled"].contains(&j["status"].as_str().unwrap()),
            "{j}"
        );
        assert!(Instant::now() < deadline, "training took too long: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_models_chat_download_and_estimate() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.worker_slots = 1).await;
    let (job_id, model) = trained(&app).await;
    let key = &app.admin_key;

    // Listed beside the presets.
    let (_, models) = app.get(key, "/v1/models").await;
    let m = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == model.as_str())
        .cloned()
        .expect("trained model listed");
    assert_eq!(m["kind"], "pretrained");
    assert_eq!(m["job_id"], job_id.as_str());

    // Plain completion, reproducible with a seed.
    let ask = json!({"model": model, "messages": [{"role": "user", "content": "The cat"}], "max_tokens": 8, "temperature": 0.8, "seed": 3});
    let (s, a) = app.post(key, "/v1/chat/completions", &ask).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&a["choices"][0]["finish_reason"].as_str().unwrap()));
    let usage = &a["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 8);
    let (_, b) = app.post(key, "/v1/chat/completions", &ask).await;
    assert_eq!(
        a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"],
        "same seed, same text"
    );

    // What the schema allows is taken: a negative seed (reproducible too) and an integral float.
    let mut odd = ask.clone();
    odd["seed"] = json!(-5);
    odd["max_completion_tokens"] = json!(8.0);
    let (s, c) = app.post(key, "/v1/chat/completions", &odd).await;
    assert_eq!(s, 200, "{c}");
    let (_, d) = app.post(key, "/v1/chat/completions", &odd).await;
    assert_eq!(
        c["choices"][0]["message"]["content"],
        d["choices"][0]["message"]["content"]
    );
    assert!(c["usage"]["completion_tokens"].as_u64().unwrap() <= 8);

    // Streamed: a role chunk, content deltas, a finish chunk, [DONE]; the same text as above.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        a["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Client mistakes.
    for (body, status, param) in [
        (
            json!({"model": "ft:nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model",
        ),
        (json!({"model": model, "messages": []}), 400, "messages"),
        (
            json!({"model": model, "messages": [{"role": "user", "content": "x"}], "temperature": 5}),
            400,
            "temperature",
        ),
        (
            json!({"model": model, "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        // Sampling fields are named too, though they sit flattened into the request.
        (
            json!({"model": model, "messages": [{"role": "user", "content": "x"}], "seed": "seven"}),
            400,
            "seed",
        ),
        (
            json!({"model": model, "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 8.5}),
            400,
            "max_completion_tokens",
        ),
        (
            json!({"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": model, "messages": [{"role": "user", "content": "x"}], "stop": [1]}),
            400,
            "stop",
        ),
        (
            json!({"model": "wick-llama-1m", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model",
        ),
    ] {
        let (s, e) = app.post(key, "/v1/chat/completions", &body).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (status, Some(param)),
            "{body} -> {e}"
        );
    }

    // The model as a tar, with a checksum that matches, holding a loadable Hugging Face folder.
    let unpacked = app
        .download(key, &format!("/v1/fine_tuning/jobs/{job_id}/download"))
        .await;
    let root = unpacked.path().join(format!("{job_id}-model"));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(root.join(f).exists(), "{f} in the download");
    }
    assert_eq!(
        wick::model::generate::generate_greedy(&root, "The cat", 3)
            .unwrap()
            .len(),
        3
    );

    // Any checkpoint, too.
    let (_, ck) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{job_id}/checkpoints"))
        .await;
    let ck_id = ck["data"][0]["id"].as_str().unwrap();
    let step = ck["data"][0]["step_number"].as_u64().unwrap();
    let ckpt = app
        .download(
            key,
            &format!("/v1/fine_tuning/jobs/{job_id}/download?checkpoint={ck_id}"),
        )
        .await;
    let folder = ckpt.path().join(format!("{job_id}-step-{step}"));
    assert!(
        folder.join("optimizer.safetensors").is_file(),
        "{}",
        folder.display()
    );
    let (s, _) = app
        .get(
            key,
            &format!("/v1/fine_tuning/jobs/{job_id}/download?checkpoint=ftckpt-nope"),
        )
        .await;
    assert_eq!(s, 404);

    // The estimate for the same body: its figures follow their formulas.
    let (_, files) = app.get(key, "/v1/files?purpose=pretrain").await;
    let file = files["data"][0]["id"].as_str().unwrap();
    let (s, e) = app.post(key, "/v1/estimate", &job_body(file)).await;
    assert_eq!(s, 200, "{e}");
    let mem = &e["memory"];
    let sum = ["weights", "gradients", "optimizer_state", "activations"]
        .iter()
        .map(|k| mem[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(mem["total"].as_u64().unwrap(), sum);
    assert_eq!(
        mem["weights"].as_u64().unwrap(),
        4 * e["parameters"].as_u64().unwrap()
    );
    let flops =
        6.0 * e["matmul_parameters"].as_f64().unwrap() * e["total_tokens"].as_f64().unwrap();
    assert!((e["total_flops"].as_f64().unwrap() - flops).abs() <= 1e-6 * flops);
    assert_eq!(e["total_steps"], 30);
    assert!(e["expected_seconds"].as_f64().unwrap() > 0.0);
    // A trained model as the base: the figures come from its config.json in the blob store.
    let mut again = job_body(file);
    again["model"] = json!(model);
    let (s, t) = app.post(key, "/v1/estimate", &again).await;
    assert_eq!(s, 200, "{t}");
    let trained_parameters = t["parameters"].as_u64().unwrap();
    assert!(trained_parameters > 0 && trained_parameters <= e["parameters"].as_u64().unwrap());
    let (s, bad) = app
        .post(
            key,
            "/v1/estimate",
            &json!({"model": "gpt-9", "training_file": file}),
        )
        .await;
    assert_eq!((s, bad["error"]["param"].as_str()), (400, Some("model")));
}
