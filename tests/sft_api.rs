//! The fine-tuning flow through the real HTTP API: pretrain a tiny model, upload chats, LoRA-tune
//! the pretrained model on them, watch the held-out loss fall, download the PEFT adapter and chat
//! with the result.

mod common;

use common::{Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

fn sums(n: usize, offset: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let (a, b) = ((i * 7 + offset) % 10, (i * 3 + offset * 5) % 10);
            (
                format!("What is {a} plus {b}?"),
                format!("Answer: {}", a + b),
            )
        })
        .collect()
}

fn chat_file(pairs: &[(String, String)]) -> Vec<u8> {
    pairs.iter().map(|(q, a)| json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).to_string() + "\n").collect::<String>().into_bytes()
}

/// Plain text in the same words, so pretraining builds a tokenizer and a model that know them.
fn corpus() -> Vec<u8> {
    sums(300, 1)
        .iter()
        .map(|(q, a)| json!({"text": format!("{q} {a}.")}).to_string() + "\n")
        .collect::<String>()
        .into_bytes()
}

async fn run(app: &TestApp, body: Value) -> Value {
    let (s, job) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &body)
        .await;
    assert_eq!(s, 200, "{job}");
    app.wait_for_job(job["id"].as_str().unwrap()).await
}

async fn upload(app: &TestApp, purpose: &str, bytes: Vec<u8>) -> String {
    let (s, f) = app.upload(&app.admin_key, purpose, "f.jsonl", bytes).await;
    assert_eq!((s, f["status"].as_str()), (200, Some("processed")), "{f}");
    f["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_fine_tuning_of_a_pretrained_model_through_the_api() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.worker_slots = 1).await;
    let key = &app.admin_key;
    let docs = upload(&app, "pretrain", corpus()).await;
    let base = run(&app, json!({"model": "wick-llama-1m", "training_file": docs, "suffix": "base", "seed": 1,
        "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
            "vocab_size": 320, "max_seq_len": 64, "batch_size": 8, "max_steps": 60, "learning_rate": 3e-3,
            "warmup_steps": 5, "checkpoint_every": 30}}}})).await;
    let base_model = base["fine_tuned_model"].as_str().unwrap().to_string();
    text_completions_of_a_pretrained_model_and_its_checkpoint(&app, &base_model).await;

    let train = upload(&app, "fine-tune", chat_file(&sums(200, 2))).await;
    let valid = upload(&app, "fine-tune", chat_file(&sums(40, 9))).await;
    let tuned = run(&app, json!({"model": base_model, "training_file": train, "validation_file": valid, "suffix": "sums", "seed": 2,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "max_steps": 40, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 2, "max_seq_len": 64,
            "eval_every": 10, "checkpoint_every": 10, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}}}})).await;
    let id = tuned["id"].as_str().unwrap();
    assert_eq!(
        tuned["fine_tuned_model"],
        format!("ft:wick-llama-1m:sums:{id}"),
        "flat: the root base, however many jobs deep"
    );
    // The model keeps its line: the pretrained base and the job that made it.
    let (_, model) = app
        .get(
            key,
            &format!("/v1/models/{}", tuned["fine_tuned_model"].as_str().unwrap()),
        )
        .await;
    assert_eq!(model["root_model"], "wick-llama-1m");
    assert_eq!(model["base_model"], base_model.as_str());
    assert_eq!(
        model["lineage"],
        json!([{"model": "wick-llama-1m", "job_id": null},
               {"model": base_model, "job_id": base["id"]}])
    );

    // The held-out chats' loss went down.
    let (_, m) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{id}/metrics"))
        .await;
    let valid_losses: Vec<f64> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["valid_loss"].as_f64())
        .collect();
    assert!(valid_losses.len() >= 2, "{m}");
    assert!(
        valid_losses.last().unwrap() < &valid_losses[0],
        "held-out loss fell: {valid_losses:?}"
    );
    // The job object sums the run up and shows every hyperparameter as the trainer resolved it.
    let best = valid_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(tuned["summary"]["best_valid_loss"].as_f64(), Some(best));
    assert_eq!(
        tuned["summary"]["final_valid_loss"].as_f64(),
        valid_losses.last().copied()
    );
    assert_eq!(tuned["summary"]["last_step"], 40);
    assert_eq!(tuned["resolved_hyperparameters"]["learning_rate"], 3e-3);
    assert_eq!(tuned["resolved_hyperparameters"]["batch_size"], 8);
    assert_eq!(tuned["resolved_hyperparameters"]["n_epochs"], 3, "auto");
    // The method's own settings too, defaults filled in.
    let lora = &tuned["resolved_hyperparameters"]["lora"];
    assert_eq!(
        (lora["r"].as_u64(), lora["alpha"].as_f64()),
        (Some(8), Some(16.0)),
        "{lora}"
    );
    assert_eq!(
        lora["target_modules"].as_array().unwrap().len(),
        7,
        "{lora}"
    );
    assert_eq!(tuned["resolved_hyperparameters"]["packing"], true);
    assert_eq!(tuned["root_model"], "wick-llama-1m");
    assert!(tuned["duration_seconds"].as_f64().unwrap() > 0.0);

    // The PEFT adapter downloads with PEFT's file names and keys.
    let dir = app
        .download(
            key,
            &format!("/v1/fine_tuning/jobs/{id}/download?artifact=adapter"),
        )
        .await;
    let adapter = dir.path().join(format!("{id}-adapter"));
    let config: Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (config["peft_type"].as_str(), config["r"].as_u64()),
        (Some("LORA"), Some(8))
    );
    let weights = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(
        st.names()
            .iter()
            .any(|n| *n == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
        "{:?}",
        st.names()
    );
    // Each checkpoint of the LoRA job gives its own adapter too.
    let (_, ckpts) = app
        .get(key, &format!("/v1/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    let ckpts = ckpts["data"].as_array().unwrap().clone();
    assert!(!ckpts.is_empty(), "the LoRA job wrote checkpoints");
    for c in &ckpts {
        let step = c["step_number"].as_u64().unwrap();
        let cdir = app
            .download(
                key,
                &format!(
                    "/v1/fine_tuning/jobs/{id}/download?checkpoint={}&artifact=adapter",
                    c["id"].as_str().unwrap()
                ),
            )
            .await;
        let folder = cdir.path().join(format!("{id}-step-{step}-adapter"));
        assert!(folder.join("adapter_config.json").is_file());
        assert!(folder.join("adapter_model.safetensors").is_file());
    }

    // The merged model as GGUF for llama.cpp and Ollama: one file and a Modelfile naming it.
    let g = app
        .download(
            key,
            &format!("/v1/fine_tuning/jobs/{id}/download?format=gguf&quant=q8_0"),
        )
        .await;
    let folder = g.path().join(format!("{id}-gguf-q8_0"));
    let file = folder.join(format!("{id}-q8_0.gguf"));
    let bytes = std::fs::read(&file).unwrap();
    let gguf = wick::model::gguf::read_gguf(&bytes).unwrap();
    assert_eq!(
        gguf.get("general.name").and_then(|v| v.as_str()),
        tuned["fine_tuned_model"].as_str()
    );
    assert!(
        std::fs::read_to_string(folder.join("Modelfile"))
            .unwrap()
            .contains(".gguf")
    );
    for (query, param) in [
        ("format=gguf&quant=q3", "quant"),
        ("format=onnx", "format"),
        ("quant=q8_0", "quant"),
        (
            &format!(
                "format=gguf&checkpoint={}",
                ckpts[0]["id"].as_str().unwrap()
            ),
            "format",
        ),
    ] {
        let (s, e) = app
            .get(key, &format!("/v1/fine_tuning/jobs/{id}/download?{query}"))
            .await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{query}: {e}"
        );
    }

    // A pretraining job has no adapter to give.
    let (s, _) = app
        .get(
            key,
            &format!(
                "/v1/fine_tuning/jobs/{}/download?artifact=adapter",
                base["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(s, 404);

    // And the fine-tuned (merged) model answers in the chat API.
    let (s, c) = app.post(key, "/v1/chat/completions", &json!({"model": tuned["fine_tuned_model"], "messages": [{"role": "user", "content": "What is 2 plus 3?"}], "max_tokens": 6, "temperature": 0})).await;
    assert_eq!(s, 200, "{c}");
    assert!(c["choices"][0]["message"]["content"].is_string());

    // Each checkpoint chats under its own name, a LoRA one merged into the job's base
    // (`peft::merge_adapter_folder`, checked against live adapters in its unit test).
    for c in &ckpts {
        let name = c["fine_tuned_model_checkpoint"].as_str().unwrap();
        assert_eq!(
            name,
            format!(
                "{}:ckpt-step-{}",
                tuned["fine_tuned_model"].as_str().unwrap(),
                c["step_number"]
            )
        );
        let (s, r) = app.post(key, "/v1/chat/completions", &json!({"model": name, "messages": [{"role": "user", "content": "What is 2 plus 3?"}], "max_tokens": 6, "temperature": 0})).await;
        assert_eq!(s, 200, "{r}");
        assert!(r["choices"][0]["message"]["content"].is_string(), "{r}");
        assert_eq!(r["model"], name);
    }
    // A step with no checkpoint, or another job's name, is a 404 naming the model.
    for bad in [
        format!(
            "{}:ckpt-step-7",
            tuned["fine_tuned_model"].as_str().unwrap()
        ),
        format!("ft:wick-llama-1m:other:{id}:ckpt-step-40"),
        "ft:wick-llama-1m:sums:ftjob-nope:ckpt-step-40".to_string(),
    ] {
        let (s, e) = app
            .post(
                key,
                "/v1/chat/completions",
                &json!({"model": bad, "messages": [{"role": "user", "content": "Hi"}]}),
            )
            .await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (404, Some("model")),
            "{bad}: {e}"
        );
    }
}

/// `POST /v1/completions` continues a raw prompt (no chat template), streamed or not, from a
/// pretrained model and from a full checkpoint of it; bad requests are 400s naming the field.
async fn text_completions_of_a_pretrained_model_and_its_checkpoint(app: &TestApp, model: &str) {
    let key = &app.admin_key;
    let body =
        json!({"model": model, "prompt": "What is 2 plus", "max_tokens": 5, "temperature": 0});
    let (s, c) = app.post(key, "/v1/completions", &body).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["model"], model);
    let text = c["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{c}");
    assert_eq!(c["usage"]["completion_tokens"].as_u64(), Some(5), "{c}");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    // Streamed, the chunks add up to the same greedy text, then [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let raw = app.post_raw(key, "/v1/completions", &streamed).await;
    let datas: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{raw}");
    let joined: String = datas[..datas.len() - 1]
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            assert_eq!(v["object"], "text_completion");
            v["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(joined, text);
    // A full checkpoint is a model folder already: an earlier model, which answers too.
    let (s, c) = app
        .post(
            key,
            "/v1/completions",
            &json!({"model": format!("{model}:ckpt-step-30"), "prompt": "What is 2 plus", "max_tokens": 5, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["usage"]["completion_tokens"].as_u64(), Some(5), "{c}");
    for (bad, param) in [
        (json!({"model": model, "prompt": ""}), "prompt"),
        (
            json!({"model": model, "prompt": "Hi", "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": model, "prompt": "Hi", "max_tokens": 0}),
            "max_tokens",
        ),
        (json!({"model": "wick-llama-1m", "prompt": "Hi"}), "model"),
        (
            json!({"model": model, "prompt": "Hi ".repeat(5000)}),
            "prompt",
        ),
    ] {
        let (s, e) = app.post(key, "/v1/completions", &bad).await;
        assert!(s == 400 || s == 404, "{bad}: {s} {e}");
        assert_eq!(e["error"]["param"].as_str(), Some(param), "{bad}: {e}");
    }
    let (s, e) = app
        .post(key, "/v1/completions", &json!({"model": model}))
        .await;
    assert_eq!(s, 400, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_fine_tuning_of_a_local_base_model_through_the_api() {
    let models = tempfile::tempdir().unwrap();
    let texts: Vec<String> = sums(300, 1)
        .iter()
        .map(|(q, a)| format!("{q} {a}."))
        .collect();
    let folder = models.path().join("tiny-base");
    common::tiny_llama_folder(&folder, &texts);
    let files_before = std::fs::read_dir(&folder).unwrap().count();
    let path = models.path().to_path_buf();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.worker_slots = 1;
        s.models_dir = Some(path);
    })
    .await;
    let key = &app.admin_key;
    let train = upload(&app, "fine-tune", chat_file(&sums(100, 2))).await;
    let tuned = run(
        &app,
        json!({"model": "tiny-base", "training_file": train, "suffix": "sums", "seed": 2,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "max_steps": 10, "batch_size": 4, "learning_rate": 3e-3, "max_seq_len": 64,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}}}}),
    )
    .await;
    let id = tuned["id"].as_str().unwrap();
    assert_eq!(tuned["model"], "tiny-base");
    let name = format!("ft:tiny-base:sums:{id}");
    assert_eq!(tuned["fine_tuned_model"], name.as_str());

    // The result is one of the organization's models, based on the local one.
    let (s, m) = app.get(key, &format!("/v1/models/{name}")).await;
    assert_eq!(
        (s, m["kind"].as_str(), m["base_model"].as_str()),
        (200, Some("fine-tuned"), Some("tiny-base"))
    );
    let (s, c) = app.post(key, "/v1/chat/completions", &json!({"model": name, "messages": [{"role": "user", "content": "What is 2 plus 3?"}], "max_tokens": 4, "temperature": 0})).await;
    assert_eq!(s, 200, "{c}");
    // Training read the folder in place and left it as it was.
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), files_before);
}
