//! API latency under a steady 500 requests per second, with per-organization rate limiting off
//! (no limits set) and on (a limit of 1000/s that the load never reaches, so every request pays
//! for the check and none is refused), alternating rounds against one server in this process.
//!
//! ```sh
//! cargo bench --bench rate_limit [-- --secs 5 --rounds 3 --rate 500]
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use wick::app::Application;
use wick::config::Settings;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `rate` requests a second for `secs` seconds on a fixed schedule (open loop: a slow
/// answer does not delay the next request); the latencies in milliseconds, sorted, and how many
/// were not 200.
async fn round(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    rate: u64,
    secs: u64,
) -> (Vec<f64>, usize) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let (client, url, key) = (client.clone(), url.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.get(&url).bearer_auth(&key).send().await.unwrap();
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            (t.elapsed().as_secs_f64() * 1e3, ok)
        }));
    }
    let mut lat = Vec::new();
    let mut bad = 0;
    for t in tasks {
        let (ms, ok) = t.await.unwrap();
        lat.push(ms);
        bad += usize::from(!ok);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat, bad)
}

#[tokio::main]
async fn main() {
    let (secs, rounds, rate) = (arg("--secs", 5), arg("--rounds", 3), arg("--rate", 500));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.worker_slots = 0;
    let app = Application::build(settings).await.unwrap();
    let admin = app.new_admin_key.clone().unwrap();
    let state = app.state().clone();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let org = wick::store::orgs::find_or_create_org(&state.db, "tenant")
        .await
        .unwrap();
    let (_, key) = wick::store::keys::create_key(&state.db, &org.id, "bench")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/fine_tuning/jobs?limit=1");
    let limits_url = format!("{base}/v1/admin/organizations/tenant/limits");
    println!(
        "GET /v1/fine_tuning/jobs?limit=1 at {rate}/s for {secs} s a round, {rounds} rounds each, SQLite store"
    );
    // Warm up.
    round(&client, &url, &key, rate, 1).await;
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for r in 0..rounds {
        for (i, limit) in [serde_json::Value::Null, serde_json::json!(1000)]
            .into_iter()
            .enumerate()
        {
            let put = client
                .put(&limits_url)
                .bearer_auth(&admin)
                .json(&serde_json::json!({"requests_per_second": limit}))
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 200);
            let (lat, bad) = round(&client, &url, &key, rate, secs).await;
            assert_eq!(bad, 0, "every request answered 200");
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            println!(
                "round {r} limiter {}: p50 {p50:.2} ms, p99 {p99:.2} ms ({} requests)",
                if i == 0 { "off" } else { "on " },
                lat.len()
            );
            results[i].0.push(p50);
            results[i].1.push(p99);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let [(p50_off, p99_off), (p50_on, p99_on)] = results.map(|(a, b)| (median(a), median(b)));
    println!("limiter off: p50 {p50_off:.2} ms, p99 {p99_off:.2} ms (median of rounds)");
    println!("limiter on:  p50 {p50_on:.2} ms, p99 {p99_on:.2} ms");
    println!("p99 on / off: {:.3}", p99_on / p99_off);
}
