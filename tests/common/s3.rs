//! An S3-compatible server for tests: moto's server mode (PyPI `moto[server]`, in
//! tests/sdk/requirements.txt). Chosen over `s3s-fs` because it installs in seconds from PyPI
//! into the venv CI already makes, where `s3s-fs` is a crate to compile (minutes on two cores);
//! it speaks path-style S3 with multipart uploads, which is all Wick uses. It keeps objects in
//! memory, which suits test-sized blobs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server with one bucket; killed when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl S3Server {
    /// Starts moto on a free loopback port and creates `bucket`. `None` (the test then says it
    /// skipped) where no Python has moto, unless `WICK_REQUIRE_SDK` is set, as in CI: then a panic.
    pub async fn start(bucket: &str) -> Option<S3Server> {
        let Some(python) = super::python_with("moto.server") else {
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.into(),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // moto checks no signatures, so a bare PUT makes the bucket.
            match client.put(server.bucket_url()).send().await {
                Ok(r) if r.status().is_success() => break,
                _ => {
                    assert!(Instant::now() < deadline, "moto did not start within 60 s");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Some(server)
    }

    fn bucket_url(&self) -> String {
        format!("{}/{}", self.endpoint, self.bucket)
    }

    /// `--blob-store` for a prefix of the bucket.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `AWS_*` variables a Wick process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "wick-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "wick-test".into()),
        ]
    }

    /// The keys of every object under `prefix`, with their sizes (ListObjectsV2, every page).
    pub async fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let client = reqwest::Client::new();
        let mut out = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_string()), ("prefix", prefix.into())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let xml = client
                .get(self.bucket_url())
                .query(&query)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for item in xml.split("<Contents>").skip(1) {
                out.push((
                    tag(item, "Key").unwrap(),
                    tag(item, "Size").unwrap().parse().unwrap(),
                ));
            }
            token = tag(&xml, "NextContinuationToken");
            if token.is_none() {
                return out;
            }
        }
    }
}

/// The text of the first `<name>` element in `xml`.
fn tag(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_string())
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
