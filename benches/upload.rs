//! Upload benchmark: a generated chat JSONL streamed through the real HTTP server (multipart ->
//! blob store, validated and hashed on the way, stats and report written), against a plain pass
//! that only reads the same file, and the validator alone, all in one run.
//!
//! ```sh
//! python3 bench/reference/gen_chat_jsonl.py --rows 200000 --dup-frac 0.1 --seed 0 --out /tmp/chat_200k.jsonl
//! cargo bench --bench upload -- /tmp/chat_200k.jsonl
//! ```

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

#[tokio::main]
async fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .expect("usage: upload BENCH_FILE.jsonl");
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.max_upload_bytes = 4_000_000_000;
    let app = Application::build(settings).await.unwrap();
    let key = app.new_admin_key.clone().unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    println!("file: {path} ({mb:.1} MB)");
    println!("peak RSS after start: {:.0} MiB", peak_rss_mib());

    let mut plain = vec![];
    let mut valid = vec![];
    let mut upload = vec![];
    for round in 0..3 {
        let (s, lines) = plain_pass(&path);
        plain.push(mb / s);
        let (s, dups) = tokio::task::spawn_blocking({
            let p = path.clone();
            move || validator_only(&p)
        })
        .await
        .unwrap();
        valid.push(mb / s);
        let t = Instant::now();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let len = file.metadata().await.unwrap().len();
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        let form = Form::new().text("purpose", "fine-tune").part(
            "file",
            Part::stream_with_length(body, len).file_name("chat.jsonl"),
        );
        let r = client
            .post(format!("{base}/v1/files"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let obj: serde_json::Value = r.json().await.unwrap();
        let s = t.elapsed().as_secs_f64();
        upload.push(mb / s);
        let rep = &obj["validation"];
        println!(
            "round {round}: lines {lines}; validator dups {dups}; upload: {} valid, {} duplicates, {} invalid, {:.2} s",
            rep["valid_examples"], rep["duplicates"], rep["invalid_lines"], s
        );
    }
    println!(
        "plain read pass:          {:>7.0} MB/s (median of 3)",
        median(plain)
    );
    println!("validator alone:          {:>7.0} MB/s", median(valid));
    println!(
        "upload+validate+stats:    {:>7.0} MB/s (HTTP multipart -> blob store, SQLite row)",
        median(upload)
    );
    println!(
        "peak RSS of the process:  {:>7.0} MiB (server and client together)",
        peak_rss_mib()
    );
}
