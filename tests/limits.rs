//! Per-organization limits set through the admin API: a key over its organization's request
//! rate gets 429 `rate_limit_exceeded` with `Retry-After` (other organizations and other keys
//! untouched), a job over `max_running_jobs` gets 429 `running_jobs_limit`, an upload over
//! `max_stored_bytes` gets 403 `storage_quota_exceeded` and leaves nothing behind; tenants cannot
//! read or set limits.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use common::{Backend, spawn_app_with};
use serde_json::{Value, json};

fn chat_bytes(n: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < n {
        out += &(json!({"messages": [{"role": "user", "content": format!("q{i}")}, {"role": "assistant", "content": format!("a{i}")}]}).to_string() + "\n");
        i += 1;
    }
    out.into_bytes()
}

async fn organization_limits_refuse_with_clear_codes(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 0).await;
    let admin = app.admin_key.clone();
    let tenant = app.key_for_org("tenant").await;
    let tenant_second_key = app.key_for_org("tenant").await;
    let other = app.key_for_org("other").await;
    let route = "/v1/admin/organizations/tenant/limits";
    let put = |key: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .put(app.url(route))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // A pretraining file of the tenant's, before any quota.
    let (s, docs) = app
        .upload(&tenant, "pretrain", "docs.jsonl", corpus::corpus_jsonl(20))
        .await;
    assert_eq!(s, 200, "{docs}");
    let docs_bytes = docs["bytes"].as_i64().unwrap();

    // Only the admin key reads and sets limits; bad values name their field.
    let (s, e) = app.get(&tenant, route).await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("admin_only")));
    let (s, e) = put(tenant.clone(), json!({"requests_per_second": 100})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("admin_only")));
    let (s, e) = app
        .get(&admin, "/v1/admin/organizations/nobody/limits")
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    for (body, param) in [
        (json!({"requests_per_second": 0}), "requests_per_second"),
        (json!({"requests_per_second": -1}), "requests_per_second"),
        (json!({"max_running_jobs": -1}), "max_running_jobs"),
        (json!({"max_stored_bytes": -5}), "max_stored_bytes"),
        (json!({"max_stored_bytes": "lots"}), "max_stored_bytes"),
        (json!({"max_jobs": 1}), "max_jobs"),
    ] {
        let (s, e) = put(admin.clone(), body.clone()).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {e}"
        );
    }
    // A body must be an object (serde would read `[null, null]` as the struct's fields).
    let (s, e) = put(admin.clone(), json!([null, null])).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_request_error")),
        "{e}"
    );
    let (s, l) = app.get(&admin, route).await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(
        (
            l["requests_per_second"].clone(),
            l["max_running_jobs"].clone(),
            l["max_stored_bytes"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(l["usage"]["stored_bytes"], docs_bytes);

    // Request rate: 2 per second per key, bursts of 2.
    let (s, l) = put(admin.clone(), json!({"requests_per_second": 2})).await;
    assert_eq!(
        (s, l["requests_per_second"].as_f64()),
        (200, Some(2.0)),
        "{l}"
    );
    let mut answers = vec![];
    for _ in 0..6 {
        let r = app
            .client
            .get(app.url("/v1/models"))
            .bearer_auth(&tenant)
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        answers.push((
            status,
            retry,
            body["error"]["code"].as_str().map(str::to_string),
        ));
    }
    assert_eq!(answers[0].0, 200);
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(limited.len() >= 3, "{answers:?}");
    for (_, retry, code) in &limited {
        assert_eq!(code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(*retry, Some(1), "{answers:?}");
    }
    // Another key of the organization has its own bucket; another organization has no limit.
    let (s, _) = app.get(&tenant_second_key, "/v1/models").await;
    assert_eq!(s, 200);
    for _ in 0..6 {
        assert_eq!(app.get(&other, "/v1/models").await.0, 200);
    }
    // After Retry-After, the key is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get(&tenant, "/v1/models").await.0, 200);

    // Jobs and storage (no rate limit, so the requests below are not slowed).
    let quota = docs_bytes + 2500;
    let (s, l) = put(
        admin.clone(),
        json!({"max_running_jobs": 1, "max_stored_bytes": quota}),
    )
    .await;
    assert_eq!(s, 200, "{l}");
    let job = json!({"model": "wick-llama-1m", "training_file": docs["id"],
                     "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                         "vocab_size": 300, "max_seq_len": 32, "max_steps": 5}}}});
    let (s, first) = app.post(&tenant, "/v1/fine_tuning/jobs", &job).await;
    assert_eq!(s, 200, "{first}");
    let (s, e) = app.post(&tenant, "/v1/fine_tuning/jobs", &job).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (429, Some("running_jobs_limit")),
        "{e}"
    );
    let first_id = first["id"].as_str().unwrap();
    let (s, _) = app
        .post(
            &tenant,
            &format!("/v1/fine_tuning/jobs/{first_id}/pause"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, second) = app.post(&tenant, "/v1/fine_tuning/jobs", &job).await;
    assert_eq!(s, 200, "{second}");
    // Resuming the paused one would make two.
    let (s, e) = app
        .post(
            &tenant,
            &format!("/v1/fine_tuning/jobs/{first_id}/resume"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (429, Some("running_jobs_limit")),
        "{e}"
    );

    let (s, f) = app
        .upload(&tenant, "fine-tune", "a.jsonl", chat_bytes(2000))
        .await;
    assert_eq!(s, 200, "{f}");
    let blobs_before = app.blob_files().len();
    let (s, e) = app
        .upload(&tenant, "fine-tune", "b.jsonl", chat_bytes(1000))
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["param"].as_str()),
        (403, Some("storage_quota_exceeded"), Some("file")),
        "{e}"
    );
    assert_eq!(app.blob_files().len(), blobs_before, "nothing left behind");
    let (_, files) = app.get(&tenant, "/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 2);
    let (s, _) = app
        .upload(&tenant, "fine-tune", "c.jsonl", chat_bytes(300))
        .await;
    assert_eq!(s, 200, "what the quota leaves still fits");
    // Another organization is not held to the tenant's quota.
    let (s, _) = app
        .upload(&other, "fine-tune", "d.jsonl", chat_bytes(5000))
        .await;
    assert_eq!(s, 200);
    let (_, l) = app.get(&admin, route).await;
    assert_eq!(l["usage"]["running_jobs"], 1, "{l}");
    assert!(l["usage"]["stored_bytes"].as_i64().unwrap() <= quota, "{l}");
}

on_both_stores!(organization_limits_refuse_with_clear_codes);
