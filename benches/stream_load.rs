//! Streaming and API load while a job trains: 1,000 SSE watchers of the job (every point
//! delivered? lag from the step reaching the service to its delivery, p50/p99) and 500 requests/s of job list
//! and job get (p50/p99, errors), with the job's training throughput measured with and without
//! that load, all in one run against the real server.
//!
//! ```sh
//! cargo bench --bench stream_load            # Postgres at WICK_TEST_DATABASE_URL, else SQLite
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use wick::app::Application;
use wick::config::Settings;

const WATCHERS: usize = 1000;
const RATE: u64 = 500;
const STEPS: u32 = 400;

fn corpus() -> Vec<u8> {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "tree", "river", "old",
        "red", "box",
    ];
    let mut x: u64 = 1;
    let mut out = String::new();
    for _ in 0..400 {
        let text: Vec<&str> = (0..40)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[((x >> 33) as usize) % words.len()]
            })
            .collect();
        out.push_str(&json!({"text": text.join(" ")}).to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn database_url() -> Option<String> {
    use sqlx::Connection;
    let admin = std::env::var("WICK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("wick_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .ok()?;
    Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0))
}

struct Ctx {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Ctx {
    async fn start_job(&self, file: &str) -> String {
        let body = json!({"model": "wick-llama-1m", "training_file": file, "seed": 3,
            "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
                "vocab_size": 512, "max_seq_len": 64, "batch_size": 8, "max_steps": STEPS,
                "learning_rate": 3e-3, "warmup_steps": 10, "eval_every": 50, "checkpoint_every": 1000}}}});
        let j: Value = self
            .client
            .post(format!("{}/v1/fine_tuning/jobs", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        j["id"].as_str().unwrap().to_string()
    }

    async fn job(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/v1/fine_tuning/jobs/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_done(&self, id: &str) {
        loop {
            let j = self.job(id).await;
            if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
                assert_eq!(j["status"], "succeeded", "{j}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Median tokens/s of the job's steps, skipping the first 10 (warm-up).
    async fn tokens_per_second(&self, id: &str) -> f64 {
        let m: Value = self
            .client
            .get(format!("{}/v1/fine_tuning/jobs/{id}/metrics", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut v: Vec<f64> = m["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["tokens_per_second"].as_f64())
            .skip(10)
            .collect();
        pct(&mut v, 0.5)
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.database_url = database_url().await;
    settings.trainer_exe = Some(env!("CARGO_BIN_EXE_wick").into());
    settings.request_timeout_secs = 60;
    let store = if settings.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let app = Application::build(settings).await.unwrap();
    let ctx = Arc::new(Ctx {
        base: format!("http://{}", app.local_addr()),
        key: app.new_admin_key.clone().unwrap(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    });
    tokio::spawn(app.run_until(std::future::pending()));
    let form = reqwest::multipart::Form::new()
        .text("purpose", "pretrain")
        .part(
            "file",
            reqwest::multipart::Part::bytes(corpus()).file_name("c.jsonl"),
        );
    let f: Value = ctx
        .client
        .post(format!("{}/v1/files", ctx.base))
        .bearer_auth(&ctx.key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = f["id"].as_str().unwrap().to_string();
    println!("store: {store}; job: wick-llama-1m, {STEPS} steps of 8 x 64 tokens");

    // A: the job alone.
    let quiet = ctx.start_job(&file).await;
    ctx.wait_done(&quiet).await;
    let quiet_tps = ctx.tokens_per_second(&quiet).await;

    // B: the same job with 1,000 watchers and 500 requests/s.
    let loaded = ctx.start_job(&file).await;
    let lags = Arc::new(Mutex::new(Vec::<f64>::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    let complete = Arc::new(AtomicU64::new(0));
    let mut watchers = vec![];
    for _ in 0..WATCHERS {
        let (ctx, loaded, lags, delivered, complete) = (
            ctx.clone(),
            loaded.clone(),
            lags.clone(),
            delivered.clone(),
            complete.clone(),
        );
        watchers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let resp = client
                .get(format!("{}/v1/fine_tuning/jobs/{loaded}/stream", ctx.base))
                .bearer_auth(&ctx.key)
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            let (mut buf, mut steps, mut my_lags) = (String::new(), 0u64, vec![]);
            while let Some(Ok(chunk)) = body.next().await {
                let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
                buf.push_str(std::str::from_utf8(&chunk).unwrap());
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if block.contains("event: metrics") && block.contains("\"kind\":\"train\"") {
                        let data = block
                            .lines()
                            .find_map(|l| l.strip_prefix("data: "))
                            .unwrap();
                        let v: Value = serde_json::from_str(data).unwrap();
                        my_lags.push(now - v["reported_at"].as_f64().unwrap());
                        steps += 1;
                    }
                }
            }
            delivered.fetch_add(steps, Ordering::Relaxed);
            if steps == STEPS as u64 {
                complete.fetch_add(1, Ordering::Relaxed);
            }
            lags.lock().await.extend(my_lags);
        }));
    }
    let req_lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (ctx, loaded, req_lat, errors, stop) = (
            ctx.clone(),
            loaded.clone(),
            req_lat.clone(),
            errors.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut n = 0u64;
            let mut inflight = vec![];
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let url = if n % 2 == 0 {
                    format!("{}/v1/fine_tuning/jobs?limit=20", ctx.base)
                } else {
                    format!("{}/v1/fine_tuning/jobs/{loaded}", ctx.base)
                };
                let (ctx, req_lat, errors) = (ctx.clone(), req_lat.clone(), errors.clone());
                inflight.push(tokio::spawn(async move {
                    let t = Instant::now();
                    match ctx.client.get(url).bearer_auth(&ctx.key).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            req_lat
                                .lock()
                                .await
                                .push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for h in inflight {
                let _ = h.await;
            }
            n
        })
    };
    let t0 = Instant::now();
    ctx.wait_done(&loaded).await;
    let train_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    for w in watchers {
        let _ = w.await;
    }
    let loaded_tps = ctx.tokens_per_second(&loaded).await;
    let mut lags = lags.lock().await.clone();
    let mut lat = req_lat.lock().await.clone();
    println!("training throughput alone:        {quiet_tps:>8.0} tokens/s (median step)");
    println!(
        "training throughput under load:   {loaded_tps:>8.0} tokens/s ({:.0}% of alone)",
        100.0 * loaded_tps / quiet_tps
    );
    println!(
        "SSE: {WATCHERS} watchers, {} of them got all {STEPS} train points; {} points delivered; lag p50 {:.0} ms, p99 {:.0} ms",
        complete.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        pct(&mut lags, 0.5) * 1000.0,
        pct(&mut lags, 0.99) * 1000.0
    );
    println!(
        "API: {sent} requests over {train_secs:.1} s ({:.0}/s), {} errors; latency p50 {:.1} ms, p99 {:.1} ms",
        sent as f64 / train_secs,
        errors.load(Ordering::Relaxed),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}
