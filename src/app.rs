//! Building and running the service: open the store and the blob store, make sure an admin key
//! exists, bind the listener, serve until shutdown. `main` and the tests build the same thing.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::state::AppState;
use crate::store::Db;
use crate::store::{keys, orgs};

/// A built service, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The admin key, when this start created it (a fresh store); shown once.
    pub new_admin_key: Option<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listen = settings.listen;
        // Devices that cannot be used stop the start here, before anything is bound or opened.
        if settings.worker_slots > 0 {
            crate::devices::resolve(settings.devices.as_ref())?;
        }
        let state = AppState::open(settings).await?;
        let new_admin_key = bootstrap_admin_key(&state.db, &state.settings).await?;
        crate::jobs::validation::resume_pending(&state.db, &state.hub, &state.queue_wake).await?;
        crate::cleaning::resume_interrupted(&state.db, &state.blobs).await?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Ok(Application {
            listener,
            state,
            new_admin_key,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves, with the configured worker slots beside the API, until `shutdown` resolves; then
    /// lets requests in flight finish and slots checkpoint and requeue their jobs.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), store = self.state.db.backend(), "wick is serving");
        let stop = CancellationToken::new();
        let slots =
            crate::worker::spawn_slots(&self.state, &stop).map_err(std::io::Error::other)?;
        let limits = crate::http_server::Limits {
            header_timeout: std::time::Duration::from_secs(
                self.state.settings.header_timeout_secs.max(1),
            ),
            max_connections: self.state.settings.max_connections,
        };
        let router = crate::api::router(self.state);
        let stop_serving = stop.clone();
        crate::http_server::serve(self.listener, router, limits, async move {
            shutdown.await;
            stop_serving.cancel();
        })
        .await;
        stop.cancel();
        for s in slots {
            let _ = s.await;
        }
        Ok(())
    }
}

/// On a store with no key at all, creates organization `default` with an admin key, writes the
/// key to a 0600 file in the data folder and returns it so the caller can print it once.
pub async fn bootstrap_admin_key(db: &Db, settings: &Settings) -> anyhow::Result<Option<String>> {
    if keys::count_keys(db).await? > 0 {
        return Ok(None);
    }
    let org = orgs::find_or_create_org(db, "default").await?;
    let (_, key) = keys::create_key(db, &org.id, "admin").await?;
    let path = settings.admin_key_path();
    std::fs::create_dir_all(&settings.data_dir)?;
    write_private(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(key))
}

/// Writes `text` to a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
