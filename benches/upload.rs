//! Upload benchmark: a generated chat JSONL streamed through the real HTTP server (multipart ->
//! blob store, validated and hashed on the way, stats and report written), against a plain pass
//! that only reads the same file, and the validator alone, all in one run.
//!
//! ```sh
//! python3 bench/reference/gen_chat_jsonl.py --rows 200000 --dup-frac 0.1 --seed 0 --out /tmp/chat_200k.jsonl
//! cargo bench --bench upload -- /tmp/chat_200k.jsonl
//! ```
//!
//! With `--s3 s3://bucket/prefix` (and the `AWS_*` variables of an S3-compatible server), a second
//! server in the same process stores its blobs there, and each round uploads to both in turn, so
//! the ratio of the two is measured under the same conditions:
//!
//! ```sh
//! bench/s3/garage.sh start /tmp/garage wick-bench 1     # Garage, pinned to vCPU 1
//! eval "$(bench/s3/garage.sh env)"
//! taskset -c 0 target/release/deps/upload-* /tmp/chat_200k.jsonl /tmp/chat_200k_s1.jsonl \
//!   /tmp/chat_200k_s2.jsonl --s3 s3://wick-bench/b
//! ```
//!
//! Several files (the same generator with seeds 1 and 2) are uploaded one per round in turn, both
//! stores taking the same file in a round: Garage stores content-addressed blocks and would
//! otherwise skip writing what it already holds from the previous round. Any S3-compatible server
//! works (moto: `python3 -m moto.server -p 9000`, then `curl -X PUT` the bucket).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;
use std::time::Instant;

use reqwest::multipart::{Form, Part};
use wick::app::Application;
use wick::config::Settings;
use wick::datasets::{Purpose, Validator};

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    wick::machine::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Reads the file in 1 MiB chunks and counts lines: the floor any upload path sits above.
fn plain_pass(path: &str) -> (f64, u64) {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    (t.elapsed().as_secs_f64(), lines)
}

fn validator_only(path: &str) -> (f64, u64) {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut v = Validator::new(Purpose::FineTune);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        v.feed(&buf[..n]);
    }
    let report = v.finish();
    (t.elapsed().as_secs_f64(), report.duplicates)
}

/// Starts a server storing its blobs at `blob_store` (default: its data folder); (base URL, key).
async fn start_server(dir: &std::path::Path, blob_store: Option<&str>) -> (String, String) {
    let mut settings = Settings::for_data_dir(dir.join("data"));
    settings.max_upload_bytes = 4_000_000_000;
    settings.blob_store = blob_store.map(|s| s.parse().expect("--s3 s3://bucket/prefix"));
    let app = Application::build(settings).await.unwrap();
    let key = app.new_admin_key.clone().unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    (base, key)
}

/// Streams the file through `POST /v1/files`; (seconds, the File object).
async fn upload_once(
    client: &reqwest::Client,
    (base, key): &(String, String),
    path: &str,
) -> (f64, serde_json::Value) {
    let t = Instant::now();
    let file = tokio::fs::File::open(path).await.unwrap();
    let len = file.metadata().await.unwrap().len();
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let form = Form::new().text("purpose", "fine-tune").part(
        "file",
        Part::stream_with_length(body, len).file_name("chat.jsonl"),
    );
    let r = client
        .post(format!("{base}/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let obj: serde_json::Value = r.json().await.unwrap();
    assert_eq!(obj["status"], "processed", "{obj}");
    (t.elapsed().as_secs_f64(), obj)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s3 = args
        .iter()
        .position(|a| a == "--s3")
        .map(|i| args.get(i + 1).expect("--s3 s3://bucket/prefix").clone());
    let paths: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-') && Some(*a) != s3.as_ref())
        .cloned()
        .collect();
    assert!(
        !paths.is_empty(),
        "usage: upload BENCH_FILE.jsonl [MORE.jsonl ...] [--s3 s3://bucket/prefix]"
    );
    let megabytes = |path: &str| std::fs::metadata(path).unwrap().len() as f64 / 1e6;
    let dir = tempfile::tempdir().unwrap();
    let local = start_server(dir.path(), None).await;
    let remote = match &s3 {
        Some(location) => {
            let d = dir.path().join("s3-server");
            Some(start_server(&d, Some(location)).await)
        }
        None => None,
    };
    let client = reqwest::Client::new();
    for path in &paths {
        println!("file: {path} ({:.1} MB)", megabytes(path));
    }
    println!("peak RSS after start: {:.0} MiB", peak_rss_mib());

    let mut plain = vec![];
    let mut valid = vec![];
    let mut upload = vec![];
    let mut upload_s3 = vec![];
    // CPU seconds this process (servers and client) spent per upload, by store.
    let mut cpu_local = vec![];
    let mut cpu_s3 = vec![];
    for round in 0..3 {
        let path = paths[round % paths.len()].clone();
        let mb = megabytes(&path);
        let (s, lines) = plain_pass(&path);
        plain.push(mb / s);
        let (s, dups) = tokio::task::spawn_blocking({
            let p = path.clone();
            move || validator_only(&p)
        })
        .await
        .unwrap();
        valid.push(mb / s);
        let cpu0 = wick::machine::cpu_seconds().unwrap_or(f64::NAN);
        let (s, obj) = upload_once(&client, &local, &path).await;
        cpu_local.push(wick::machine::cpu_seconds().unwrap_or(f64::NAN) - cpu0);
        upload.push(mb / s);
        let rep = &obj["validation"];
        println!(
            "round {round}: lines {lines}; validator dups {dups}; upload: {} valid, {} duplicates, {} invalid, {:.2} s",
            rep["valid_examples"], rep["duplicates"], rep["invalid_lines"], s
        );
        if let Some(remote) = &remote {
            let cpu0 = wick::machine::cpu_seconds().unwrap_or(f64::NAN);
            let (s, obj) = upload_once(&client, remote, &path).await;
            cpu_s3.push(wick::machine::cpu_seconds().unwrap_or(f64::NAN) - cpu0);
            assert_eq!(obj["validation"], *rep, "the same report from either store");
            upload_s3.push(mb / s);
            println!("round {round}: upload to S3 {s:.2} s");
        }
    }
    println!(
        "plain read pass:          {:>7.0} MB/s (median of 3)",
        median(plain)
    );
    println!("validator alone:          {:>7.0} MB/s", median(valid));
    let local_rate = median(upload);
    println!(
        "upload+validate+stats:    {:>7.0} MB/s (HTTP multipart -> blob store, SQLite row)",
        local_rate
    );
    println!(
        "CPU of this process per upload: {:.2} s to the local folder",
        median(cpu_local)
    );
    if !upload_s3.is_empty() {
        println!(
            "CPU of this process per upload: {:.2} s to S3 (the S3 server's own not counted)",
            median(cpu_s3)
        );
        let s3_rate = median(upload_s3);
        println!(
            "the same to S3:           {:>7.0} MB/s ({} ; {:.2}x the local folder)",
            s3_rate,
            s3.as_deref().unwrap_or_default(),
            s3_rate / local_rate
        );
    }
    println!(
        "peak RSS of the process:  {:>7.0} MiB (servers and client together)",
        peak_rss_mib()
    );
}
