//! `GET /metrics`: refused without the admin key; its text parsed with the Prometheus project's
//! own parser (Python's `prometheus_client`, which refuses any malformed line, from
//! `WICK_SDK_PYTHON` or a `python3` that has it; without one the test says so and passes, unless
//! `WICK_REQUIRE_SDK=1` as in CI: tests/sdk/requirements.txt has it); and its values checked:
//! request counts by route template and status equal to what the test sent (ids never in a
//! label), histogram buckets monotone, jobs by status and the queue as the store has them, the
//! worker slot busy while a job trains and that job's step and tokens/s, SSE watchers and
//! uploads in progress while they are.
//!
//! (`prometheus-parse`, the Rust parser, reads a label value with a `}` in it, as every route
//! template has, as the end of the labels, so it cannot read these.)
//!
//! The counters are process-wide, so one test function runs both stores in turn and every check
//! of a count is of a difference between two scrapes with nothing else running.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

/// A tiny pretraining job long enough to be watched and cancelled while it trains.
fn long_job(file: &str) -> Value {
    json!({"model": "wick-llama-1m", "training_file": file, "seed": 5,
           "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
               "vocab_size": 320, "max_seq_len": 32, "batch_size": 4, "max_steps": 5000,
               "gradient_accumulation_steps": 4, "learning_rate": 3e-3, "warmup_steps": 2,
               "eval_every": 1000, "checkpoint_every": 1000, "validation_split": 0.1}}}})
}

/// One sample as the parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

type Key = (String, String, String);

/// A parsed scrape and its text.
struct Scraped {
    text: String,
    samples: Vec<Sample>,
}

impl Scraped {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.labels.len() == labels.len())
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    /// The samples `name` by their (method, route, status) labels.
    fn by_request(&self, name: &str) -> BTreeMap<Key, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (request_key(s), s.value))
            .collect()
    }

    /// `wick_http_requests_total` by (method, route, status).
    fn requests(&self) -> BTreeMap<Key, f64> {
        self.by_request("wick_http_requests_total")
    }

    /// The latency histograms' `_count`s by (method, route, status).
    fn latency_counts(&self) -> BTreeMap<Key, f64> {
        self.by_request("wick_http_request_duration_seconds_count")
    }
}

fn request_key(s: &Sample) -> Key {
    let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    (l("method"), l("route"), l("status"))
}

/// Parses `text` with the Prometheus client's parser (which refuses a malformed line), checks it
/// read every sample line and that each family has its type.
fn parse(python: &str, text: String) -> Scraped {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/parse_metrics.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples: Vec<Sample> = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: match &s["value"] {
                Value::String(v) if v == "+Inf" => f64::INFINITY,
                Value::String(_) => f64::NAN,
                v => v.as_f64().unwrap(),
            },
        })
        .collect();
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(samples.len(), lines, "every sample line parsed:\n{text}");
    let types: BTreeMap<&str, &str> = parsed["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    // The client names a counter's family without `_total`.
    for (name, ty) in [
        ("wick_http_requests", "counter"),
        ("wick_http_request_duration_seconds", "histogram"),
        ("wick_jobs", "gauge"),
        ("wick_queue_depth", "gauge"),
        ("wick_queue_oldest_age_seconds", "gauge"),
        ("wick_worker_slots", "gauge"),
        ("wick_sse_watchers", "gauge"),
        ("wick_uploads_in_progress", "gauge"),
    ] {
        assert_eq!(types.get(name), Some(&ty), "{name} in {types:?}");
    }
    for name in ["wick_training_step", "wick_training_tokens_per_second"] {
        if samples.iter().any(|s| s.name == name) {
            assert_eq!(types.get(name), Some(&"gauge"), "{name}");
        }
    }
    Scraped { text, samples }
}

async fn scrape(app: &TestApp, python: &str) -> Scraped {
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "text/plain; version=0.0.4", "content type");
    parse(python, r.text().await.unwrap())
}

/// Scrapes until `ok(scrape)` or 60 s.
async fn scrape_until(
    app: &TestApp,
    python: &str,
    what: &str,
    ok: impl Fn(&Scraped) -> bool,
) -> Scraped {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = scrape(app, python).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "waited for {what}:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every latency histogram: buckets in increasing `le`, counts never decreasing, `+Inf` equal
/// to the `_count`, one histogram per label set.
fn assert_histograms_monotone(s: &Scraped) {
    let counts = s.latency_counts();
    let mut histograms: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    for b in s
        .samples
        .iter()
        .filter(|b| b.name == "wick_http_request_duration_seconds_bucket")
    {
        let le = match b.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        histograms
            .entry(request_key(b))
            .or_default()
            .push((le, b.value));
    }
    assert_eq!(
        histograms.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>()
    );
    for (key, buckets) in &histograms {
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{key:?} {buckets:?}");
            assert!(w[0].1 <= w[1].1, "not monotone: {key:?} {buckets:?}");
        }
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{buckets:?}");
        assert_eq!(last.1, counts[key], "+Inf bucket is the count: {key:?}");
    }
}

async fn status_of(app: &TestApp, id: &str) -> String {
    let (_, j) = app
        .get(&app.admin_key, &format!("/v1/fine_tuning/jobs/{id}"))
        .await;
    j["status"].as_str().unwrap().to_string()
}

async fn check(backend: Backend, python: &str) {
    let app = spawn_app_with(backend, |s| {
        s.worker_slots = 1;
        s.threads_per_job = 1;
    })
    .await;

    // Access: no key is a 401, a tenant's key a 403, the admin key a 200.
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let tenant = app.key_for_org("acme").await;
    let (s, body) = app.get(&tenant, "/metrics").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("admin_only"))
    );

    // An upload in progress: the file's first bytes sent, the rest held back.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let form = reqwest::multipart::Form::new()
        .text("purpose", "pretrain")
        .part(
            "file",
            reqwest::multipart::Part::stream(body).file_name("docs.jsonl"),
        );
    let upload = tokio::spawn(
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(&app.admin_key)
            .multipart(form)
            .send(),
    );
    let bytes = corpus::corpus_jsonl(300);
    let (head, rest) = bytes.split_at(bytes.len() / 2);
    tx.send(Ok(head.to_vec())).await.unwrap();
    scrape_until(&app, python, "an upload in progress", |s| {
        s.gauge("wick_uploads_in_progress", &[]) == 1.0
    })
    .await;
    tx.send(Ok(rest.to_vec())).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let file: Value = r.json().await.unwrap();
    let file_id = file["id"].as_str().unwrap().to_string();
    assert_eq!(file["status"], "processed", "{file}");
    let s = scrape(&app, python).await;
    assert_eq!(s.gauge("wick_uploads_in_progress", &[]), 0.0);

    // Requests between two scrapes are counted exactly, by route template and status.
    let before = scrape(&app, python).await;
    let key = app.admin_key.clone();
    for _ in 0..2 {
        assert_eq!(app.get(&key, &format!("/v1/files/{file_id}")).await.0, 200);
    }
    assert_eq!(app.get(&key, "/v1/files/file-nosuchfile").await.0, 404);
    assert_eq!(app.get(&key, "/no/such/route/xyz").await.0, 404);
    assert_eq!(
        app.post(&key, "/v1/fine_tuning/jobs", &json!({})).await.0,
        400
    );
    assert_eq!(app.get(&key, "/healthz").await.0, 200);
    let after = scrape(&app, python).await;
    let delta = |a: BTreeMap<(String, String, String), f64>,
                 b: BTreeMap<(String, String, String), f64>| {
        a.into_iter()
            .filter_map(|(k, v)| {
                let d = v - b.get(&k).copied().unwrap_or(0.0);
                (d != 0.0).then_some(((k.0, k.1, k.2), d))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let k = |m: &str, r: &str, s: &str| (m.to_string(), r.to_string(), s.to_string());
    let expected = BTreeMap::from([
        (k("GET", "/v1/files/{id}", "200"), 2.0),
        (k("GET", "/v1/files/{id}", "404"), 1.0),
        (k("GET", "unmatched", "404"), 1.0),
        (k("POST", "/v1/fine_tuning/jobs", "400"), 1.0),
        (k("GET", "/healthz", "200"), 1.0),
        // The first scrape, counted once answered.
        (k("GET", "/metrics", "200"), 1.0),
    ]);
    assert_eq!(delta(after.requests(), before.requests()), expected);
    assert_eq!(
        delta(after.latency_counts(), before.latency_counts()),
        expected
    );
    // Earlier: the refused scrapes, by their status.
    let all = after.requests();
    assert!(all[&k("GET", "/metrics", "401")] >= 1.0);
    assert!(all[&k("GET", "/metrics", "403")] >= 1.0);
    assert_histograms_monotone(&after);

    // A job training on the slot, another queued behind it.
    let (s, j) = app
        .post(&key, "/v1/fine_tuning/jobs", &long_job(&file_id))
        .await;
    assert_eq!(s, 200, "{j}");
    let first = j["id"].as_str().unwrap().to_string();
    let (s, j) = app
        .post(&key, "/v1/fine_tuning/jobs", &long_job(&file_id))
        .await;
    assert_eq!(s, 200, "{j}");
    let second = j["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&app, &second).await != "queued" {
        assert!(Instant::now() < deadline, "second job never queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_labels = [("job_id", first.as_str())];
    let training = scrape_until(&app, python, "the first job's step", |s| {
        s.get("wick_training_step", &first_labels)
            .is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(training.gauge("wick_training_tokens_per_second", &first_labels) > 0.0);
    assert_eq!(
        training.get("wick_training_step", &[("job_id", &second)]),
        None
    );
    let slot = |s: &Scraped, state: &str| {
        s.gauge("wick_worker_slots", &[("device", "cpu"), ("state", state)])
    };
    assert_eq!(slot(&training, "busy"), 1.0, "{}", training.text);
    let jobs = |s: &Scraped, status: &str| s.gauge("wick_jobs", &[("status", status)]);
    assert_eq!(jobs(&training, "running"), 1.0);
    assert_eq!(jobs(&training, "queued"), 1.0);
    assert_eq!(jobs(&training, "succeeded"), 0.0);
    assert_eq!(training.gauge("wick_queue_depth", &[]), 1.0);
    let age = training.gauge("wick_queue_oldest_age_seconds", &[]);
    assert!((0.0..120.0).contains(&age), "oldest queued age {age}");
    // The step gauge follows the job.
    let step = training.gauge("wick_training_step", &first_labels);
    scrape_until(&app, python, "a later step", |s| {
        s.get("wick_training_step", &first_labels)
            .is_some_and(|v| v > step)
    })
    .await;

    // An SSE watcher, counted while connected.
    let watcher = app
        .client
        .get(app.url(&format!("/v1/fine_tuning/jobs/{first}/stream")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(watcher.status(), 200);
    scrape_until(&app, python, "one SSE watcher", |s| {
        s.gauge("wick_sse_watchers", &[]) == 1.0
    })
    .await;
    drop(watcher);
    scrape_until(&app, python, "no SSE watcher", |s| {
        s.gauge("wick_sse_watchers", &[]) == 0.0
    })
    .await;

    // Both cancelled: the slot idle again, the job's gauges gone, the queue empty.
    for id in [&second, &first] {
        let (s, _) = app
            .post(
                &key,
                &format!("/v1/fine_tuning/jobs/{id}/cancel"),
                &json!({}),
            )
            .await;
        assert_eq!(s, 200);
    }
    let done = scrape_until(&app, python, "the slot idle again", |s| {
        slot(s, "busy") == 0.0 && s.get("wick_training_step", &first_labels).is_none()
    })
    .await;
    assert!(slot(&done, "idle") >= 1.0, "{}", done.text);
    assert_eq!(
        done.get("wick_training_tokens_per_second", &first_labels),
        None
    );
    assert_eq!(jobs(&done, "cancelled"), 2.0);
    assert_eq!(jobs(&done, "running"), 0.0);
    assert_eq!(jobs(&done, "queued"), 0.0);
    assert_eq!(done.gauge("wick_queue_depth", &[]), 0.0);
    assert_eq!(done.gauge("wick_queue_oldest_age_seconds", &[]), 0.0);

    // No id or raw path ever became a route label.
    for (_, route, _) in done.requests().keys() {
        assert!(
            route == "unmatched" || route.starts_with('/'),
            "route label {route}"
        );
        for raw in [
            file_id.as_str(),
            &first,
            &second,
            "file-nosuchfile",
            "/no/such",
        ] {
            assert!(!route.contains(raw), "raw {raw} in route label {route}");
        }
    }
    assert_histograms_monotone(&done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_jobs_slots_and_training_for_the_admin_only() {
    let Some(python) = common::python_with("prometheus_client.parser") else {
        return;
    };
    check(Backend::Sqlite, &python).await;
    check(Backend::Postgres, &python).await;
}
