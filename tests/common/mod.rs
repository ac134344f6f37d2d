//! Test harness: `spawn_app(backend)` starts the real server on a loopback port, on a fresh SQLite
//! file or a fresh database on the real Postgres server, and hands back a client for it.
#![allow(dead_code)]

pub mod s3;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use wick::app::Application;
use wick::config::Settings;
use wick::state::AppState;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The Postgres server the suite uses; `WICK_TEST_DATABASE_URL` points at its maintenance database.
pub fn pg_admin_url() -> String {
    std::env::var("WICK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty Postgres database for one test.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("wick_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test Postgres server");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// An HTTP client for one Wick server, in this process or another: the admin key and helpers for
/// the calls tests make.
pub struct ApiClient {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_key: String,
}

/// A server in this process; derefs to its [`ApiClient`].
pub struct TestApp {
    pub api: ApiClient,
    pub state: AppState,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the server with settings adjusted by `tweak`.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.worker_slots = 0;
    settings.trainer_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_wick")));
    settings.threads_per_job = 1;
    if let Backend::Postgres = backend {
        settings.database_url = Some(fresh_pg_database().await);
    }
    tweak(&mut settings);
    let data_dir = settings.data_dir.clone();
    let database_url = settings.database_url.clone();
    let app = Application::build(settings).await.expect("build app");
    let admin_key = app
        .new_admin_key
        .clone()
        .expect("fresh store creates an admin key");
    let state = app.state().clone();
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        api: ApiClient::new(base, admin_key),
        state,
        data_dir,
        database_url,
        _dir: dir,
        _shutdown: tx,
    }
}

impl std::ops::Deref for TestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

impl TestApp {
    /// A key for another organization.
    pub async fn key_for_org(&self, org: &str) -> String {
        let o = wick::store::orgs::find_or_create_org(&self.state.db, org)
            .await
            .unwrap();
        wick::store::keys::create_key(&self.state.db, &o.id, "test")
            .await
            .unwrap()
            .1
    }

    /// Every file under the blob store, staged parts included.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir.join("blobs"))
    }
}

impl ApiClient {
    pub fn new(base: String, admin_key: String) -> Self {
        ApiClient {
            base,
            client: reqwest::Client::new(),
            admin_key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs a download (a tar), checks it is 200 and that `X-Checksum-Sha256` is the SHA-256 of
    /// the body, and unpacks it into a fresh temporary folder.
    pub async fn download(&self, key: &str, path: &str) -> tempfile::TempDir {
        use sha2::Digest;
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        let sha = r.headers()["x-checksum-sha256"]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha, "GET {path}");
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(bytes.as_ref())
            .unpack(dir.path())
            .unwrap();
        dir
    }

    /// GETs `path` as text (`accept` sets the Accept header: `text/csv` for a metrics CSV).
    pub async fn get_text(&self, key: &str, path: &str, accept: Option<&str>) -> String {
        let mut request = self.client.get(self.url(path)).bearer_auth(key);
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        request.send().await.unwrap().text().await.unwrap()
    }

    async fn send_post(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self.send_post(key, path, body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A POST's body as text (a stream of Server-Sent Events, read to its end).
    pub async fn post_raw(&self, key: &str, path: &str, body: &Value) -> String {
        let r = self.send_post(key, path, body).await;
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }

    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Uploads `bytes` with `purpose` sent before the file, as the OpenAI SDK does.
    pub async fn upload(
        &self,
        key: &str,
        purpose: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> (u16, Value) {
        self.try_upload(key, purpose, name, bytes)
            .await
            .expect("upload request")
    }

    /// Uploads `bytes` with the admin key as a file for `purpose`, asserts that it was accepted
    /// and processed, and returns its id.
    pub async fn upload_file(&self, purpose: &str, name: &str, bytes: Vec<u8>) -> String {
        let (s, f) = self.upload(&self.admin_key, purpose, name, bytes).await;
        assert_eq!(s, 200, "{f}");
        assert_eq!(f["status"], "processed", "{f}");
        f["id"].as_str().unwrap().to_string()
    }

    /// As [`TestApp::upload`], but a server that answers and closes before taking the whole body
    /// (as it may for an oversize upload) gives `Err` instead of a panic.
    pub async fn try_upload(
        &self,
        key: &str,
        purpose: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Result<(u16, Value)> {
        let form = Form::new()
            .text("purpose", purpose.to_string())
            .part("file", Part::bytes(bytes).file_name(name.to_string()));
        let r = self
            .client
            .post(self.url("/v1/files"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The metric series of a job: (step, train_loss) of each train point, in order.
    pub async fn train_points(&self, id: &str) -> Vec<(u64, f64)> {
        let (_, m) = self
            .get(
                &self.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/metrics"),
            )
            .await;
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.get("train_loss").is_some())
            .map(|p| {
                (
                    p["step"].as_u64().unwrap(),
                    p["train_loss"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    /// Reads SSE messages until `stop(messages so far)`; returns (id, event, data) triples.
    pub async fn read_sse(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        stop: impl Fn(&[(String, String, Value)]) -> bool,
    ) -> Vec<(String, String, Value)> {
        use futures::StreamExt;
        let mut req = self
            .client
            .get(self.url(&format!("/v1/fine_tuning/jobs/{id}/stream")))
            .bearer_auth(&self.admin_key);
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let mut out = vec![];
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline.into(), body.next()).await {
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut mid, mut ev, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        mid = v.trim().into()
                    }
                    if let Some(v) = line.strip_prefix("event:") {
                        ev = v.trim().into()
                    }
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim())
                    }
                }
                if ev.is_empty() {
                    continue; // keep-alive comment
                }
                out.push((mid, ev, serde_json::from_str(&data).unwrap_or(Value::Null)));
                if stop(&out) {
                    return out;
                }
            }
        }
        out
    }

    /// Job `id`'s events, newest first (the most the route gives: 1000).
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (s, events) = self
            .get(
                &self.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"),
            )
            .await;
        assert_eq!(s, 200, "{events}");
        events["data"].as_array().unwrap().clone()
    }

    /// The messages of job `id`'s events, newest first.
    pub async fn event_messages(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    }

    /// The steps of job `id`'s checkpoints, newest first.
    pub async fn checkpoint_steps(&self, id: &str) -> Vec<u64> {
        let (s, ck) = self
            .get(
                &self.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/checkpoints"),
            )
            .await;
        assert_eq!(s, 200, "{ck}");
        ck["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["step_number"].as_u64().unwrap())
            .collect()
    }

    /// Waits (up to `secs`) until job `id` has a checkpoint and has trained more than one step
    /// past it, the moment to kill its worker; returns the checkpoint's step.
    pub async fn wait_past_a_checkpoint(&self, id: &str, secs: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let newest = self.checkpoint_steps(id).await.first().copied();
            let trained = self.train_points(id).await.len() as u64;
            if let Some(step) = newest
                && trained > step + 1
            {
                return step;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no checkpoint within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Job `id` as the API shows it to the admin key.
    pub async fn job(&self, id: &str) -> Value {
        self.get(&self.admin_key, &format!("/v1/fine_tuning/jobs/{id}"))
            .await
            .1
    }

    /// Polls job `id` until `done(job)` holds (its body), failing the test after `secs` seconds
    /// with `what` it waited for.
    pub async fn wait_until(
        &self,
        id: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.job(id).await;
            if done(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {j}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls job `id` until its status is `status`, or it failed (the caller's asserts then show
    /// why), for up to `secs` seconds.
    pub async fn wait_status(&self, id: &str, status: &str, secs: u64) -> Value {
        self.wait_until(id, secs, status, |j| {
            j["status"] == status || (j["status"] == "failed" && status != "failed")
        })
        .await
    }

    /// Waits (up to 60 s) until job `id`'s first train point is stored (points are flushed every
    /// 200 ms, where `trained_tokens` on the job only moves with the lease heartbeat, every few
    /// seconds).
    pub async fn wait_for_first_step(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.train_points(id).await.is_empty() {
            assert!(Instant::now() < deadline, "no step of {id} within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls job `id` until it succeeds (its body) or fails the test when it fails, is cancelled or
    /// takes over four minutes.
    pub async fn wait_for_job(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
        loop {
            let (_, j) = self
                .get(&self.admin_key, &format!("/v1/fine_tuning/jobs/{id}"))
                .await;
            match j["status"].as_str().unwrap() {
                "succeeded" => return j,
                "failed" | "cancelled" => panic!("job ended badly: {j}"),
                _ => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job took too long: {j}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// A Python that can `import module`: `WICK_SDK_PYTHON` (the CI venv, tests/sdk/requirements.txt),
/// else `python3`. Without one the test should say it skipped and pass: `None`, after printing
/// so; unless `WICK_REQUIRE_SDK` is set, as in CI, where that is a panic.
pub fn python_with(module: &str) -> Option<String> {
    let candidates = std::env::var("WICK_SDK_PYTHON")
        .into_iter()
        .chain(["python3".to_string()]);
    let found = candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("WICK_REQUIRE_SDK").is_err(),
            "WICK_REQUIRE_SDK is set but no Python can import {module}"
        );
        eprintln!("SKIPPED: no Python that can import {module} (set WICK_SDK_PYTHON)");
    }
    found
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out)
                } else {
                    out.push(p)
                }
            }
        }
    }
    let mut out = vec![];
    walk(dir, &mut out);
    out
}

/// Writes a tiny, randomly initialised Llama as a Hugging Face folder at `dir` (config.json,
/// model.safetensors, tokenizer.json with a ChatML template), as a local base model would be;
/// returns its parameter count. The tokenizer knows the words of `texts`.
pub fn tiny_llama_folder(dir: &std::path::Path, texts: &[String]) -> u64 {
    use candle_core::{DType, Device};
    let tokenizer = wick::tokenizer::train_bpe(texts.iter(), 300).unwrap();
    let mut cfg =
        wick::model::ModelConfig::llama(tokenizer.get_vocab_size(true), 32, 64, 2, 4, 2, 128);
    cfg.bos_token_id = Some(0);
    cfg.eos_token_id = Some(0);
    cfg.pad_token_id = Some(1);
    let varmap = wick::model::init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
    let weights = wick::model::varmap_tensors(&varmap);
    wick::model::hf::save_model_folder(dir, &cfg, &weights).unwrap();
    wick::tokenizer::save_trained(&tokenizer, dir, 128).unwrap();
    cfg.num_parameters()
}

/// A server whose models folder holds one tiny local Llama with a tokenizer, named
/// [`TINY_MODEL`], for tests that need a supervised job but not a trained model; the folder lives
/// as long as the returned guard.
pub async fn spawn_app_with_tiny_model(backend: Backend) -> (TestApp, tempfile::TempDir) {
    let models = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..50)
        .map(|i| format!("What is {i} plus {i}? It is {}.", 2 * i))
        .collect();
    tiny_llama_folder(&models.path().join(TINY_MODEL), &texts);
    let path = models.path().to_path_buf();
    (
        spawn_app_with(backend, |s| s.models_dir = Some(path)).await,
        models,
    )
}

/// The name [`spawn_app_with_tiny_model`]'s local model is served under.
pub const TINY_MODEL: &str = "tiny-llama";

/// A real `wick serve` process on a free loopback port with JSON logs, no worker slots and its
/// data in `data_dir`, run until it logs that it serves: the process, that line and every JSON
/// line before it (the admin key's plain-text announcement is skipped); later lines are read
/// and dropped.
pub async fn serve_with_json_logs(
    data_dir: &std::path::Path,
) -> (tokio::process::Child, Value, Vec<Value>) {
    serve_process(data_dir, |_| {}).await
}

/// As [`serve_with_json_logs`], with the command adjusted by `configure` (more flags, variables).
pub async fn serve_process(
    data_dir: &std::path::Path,
    configure: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, Value, Vec<Value>) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wick"));
    cmd.args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        // No slots unless the caller passes `--worker-slots` (a flag wins over the variable).
        .env("WICK_WORKER_SLOTS", "0")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("WICK_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let serving = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "wick is serving" {
                return v;
            }
            log.push(v);
        }
        panic!("the server stopped before serving: {log:?}");
    })
    .await
    .expect("the server starts within 60 s");
    // Keep reading what it logs: a closed pipe would fail its writes, a full one block them.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, serving, log)
}

/// [`serve_process`], and a client for it holding the admin key the server wrote to its folder.
pub async fn serve_api(
    data_dir: &std::path::Path,
    configure: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, ApiClient) {
    let (child, serving, _) = serve_process(data_dir, configure).await;
    let key = std::fs::read_to_string(data_dir.join("admin_key")).unwrap();
    let api = ApiClient::new(
        format!("http://{}", serving["addr"].as_str().unwrap()),
        key.trim().to_string(),
    );
    (child, api)
}

/// Runs each listed async test body once against SQLite and once against Postgres.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
    };
}
