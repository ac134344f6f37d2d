//! Cleaning throughput (issue 15's benchmark): the same `Cleaner` as `POST /v1/files/{id}/clean`
//! over a chat JSONL file, in one of two modes, one per process (so each peak RSS is its own):
//!
//! - `near`: `{"dedup": "near"}` (exact then MinHash near duplicates at the defaults: threshold
//!   0.8, 128 permutations, word 5-grams). With `--truth TRUTH --python PYTHON` it then runs
//!   `bench/reference/near_dup_bench.py`: datasketch's MinHashLSH on the same file with the same
//!   threshold, permutations, shingles and LSH bands (and once with datasketch's own bands), and
//!   `evaluate` on both removed lists (recall of the planted near duplicates, precision: a removed
//!   line's exact shingle Jaccard with the line it was matched to ≥ 0.8). Prints the ratio.
//! - `pii`: `{"dedup": "none", "pii": "mask"}`: personal-data masking, every line scanned.
//!
//! Every figure is the whole clean: reading the file, validating each line, the rule, writing
//! the cleaned lines (to a discarding writer), with the processor described beside it.
//!
//! ```sh
//! python3 bench/reference/gen_chat_jsonl.py --rows 200000 --dup-frac 0.1 --seed 0 --out /tmp/chat.jsonl
//! PY=/tmp/venv/bin/python   # pip install datasketch numpy
//! $PY bench/reference/near_dup_bench.py plant --data /tmp/chat.jsonl --out /tmp/planted.jsonl \
//!     --truth /tmp/truth.json --frac 0.05 --jmin 0.85 --jmax 0.95 --ngram 5 --seed 0
//! cargo bench --bench clean -- near /tmp/planted.jsonl --truth /tmp/truth.json --python $PY
//! cargo bench --bench clean -- pii /tmp/planted.jsonl
//! ```

use std::io::Read;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wick::datasets::clean::minhash::lsh_bands;
use wick::datasets::clean::{CleanOptions, Cleaner};
use wick::datasets::{DatasetFormat, Purpose};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn mib(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

/// Runs `PYTHON bench/reference/near_dup_bench.py ARGS`, returning its JSON line.
fn reference(python: &str, args: &[&str]) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/reference/near_dup_bench.py"
    );
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run the reference script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("the script prints JSON")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(mode), Some(path)) = (args.first().cloned(), args.get(1).cloned()) else {
        eprintln!("usage: cargo bench --bench clean -- near|pii FILE [--truth T --python PY]");
        return;
    };
    let options = match mode.as_str() {
        "near" => r#"{"dedup": "near"}"#,
        "pii" => r#"{"dedup": "none", "pii": "mask"}"#,
        "exact" => r#"{}"#,
        other => panic!("unknown mode {other:?}: near, pii or exact"),
    };
    println!("{}", wick::machine::cpu_description());
    let bytes = std::fs::metadata(&path).expect("the file").len();
    let opts: CleanOptions = serde_json::from_str(options).unwrap();
    let removed: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let log = removed.clone();
    let mut cleaner = Cleaner::new(opts, Purpose::FineTune, DatasetFormat::Chat, &path)
        .unwrap()
        .with_sample_log(move |s| {
            if let Some(of) = s.duplicate_of {
                log.lock().unwrap().push((s.line, of));
            }
        });
    let t0 = Instant::now();
    let mut file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut sink = std::io::sink();
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        cleaner.feed(&buf[..n], &mut sink).unwrap();
    }
    let report = cleaner.finish(&mut sink).unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let mbs = bytes as f64 / 1e6 / wall;
    println!(
        "wick {mode}: {:.1} MB in {wall:.2} s = {mbs:.1} MB/s, {:.0} lines/s, peak RSS {:.1} MiB; \
         kept {} of {}, removed {:?}, pii {:?}",
        bytes as f64 / 1e6,
        report.lines as f64 / wall,
        mib(wick::machine::peak_rss_bytes()),
        report.kept,
        report.lines,
        report.removed,
        report.pii,
    );
    if mode != "near" {
        return;
    }
    let (Some(truth), Some(python)) = (arg_after(&args, "--truth"), arg_after(&args, "--python"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("removed_wick.json");
    let pairs: Vec<[u64; 2]> = removed
        .lock()
        .unwrap()
        .iter()
        .map(|&(l, o)| [l, o])
        .collect();
    std::fs::write(&ours, serde_json::to_string(&pairs).unwrap()).unwrap();
    let evaluate = |removed: &std::path::Path| {
        reference(
            &python,
            &[
                "evaluate",
                "--data",
                &path,
                "--truth",
                &truth,
                "--removed",
                removed.to_str().unwrap(),
                "--threshold",
                "0.8",
                "--ngram",
                "5",
            ],
        )
    };
    let e = evaluate(&ours);
    println!(
        "wick near: recall {} precision {}",
        e["recall"], e["precision"]
    );
    let (b, r) = lsh_bands(0.8, 128);
    for params in [Some((b, r)), None] {
        let theirs = dir.path().join("removed_datasketch.json");
        let mut a = vec![
            "datasketch".to_string(),
            "--data".into(),
            path.clone(),
            "--threshold".into(),
            "0.8".into(),
            "--num-perm".into(),
            "128".into(),
            "--ngram".into(),
            "5".into(),
            "--removed".into(),
            theirs.to_str().unwrap().into(),
        ];
        if let Some((b, r)) = params {
            a.extend(["--params".into(), b.to_string(), r.to_string()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let d = reference(&python, &a);
        let e = evaluate(&theirs);
        let their_mbs = d["mb_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "datasketch {}: {their_mbs:.2} MB/s, peak RSS {} MB, recall {} precision {}; \
             wick / datasketch = {:.1}x",
            params.map_or("(its own bands)".into(), |(b, r)| format!(
                "bands ({b}, {r})"
            )),
            d["peak_rss_mb"],
            e["recall"],
            e["precision"],
            mbs / their_mbs,
        );
    }
}
