//! Settings for `wick serve` and `wick worker`, read from flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the service needs to start.
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "WICK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Postgres URL (`postgres://...`). Without it, an embedded SQLite file in the data folder.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for the SQLite file, the blob store (datasets, checkpoints, models) and the admin key.
    #[arg(long, env = "WICK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where datasets, checkpoints and models are stored: `file:///absolute/path` or
    /// `s3://bucket/prefix` (with the `AWS_*` variables: `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). Default: `<data-dir>/blobs`. Every API
    /// process and worker of one installation names the same store.
    #[arg(long, env = "WICK_BLOB_STORE")]
    pub blob_store: Option<crate::blob_location::BlobLocation>,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "WICK_MAX_UPLOAD_BYTES", default_value_t = 512_000_000)]
    pub max_upload_bytes: u64,
    /// In-process training slots (`wick serve`) when training on the CPU; 0 runs the API alone.
    /// On GPUs there is one slot per GPU.
    #[arg(long, env = "WICK_WORKER_SLOTS", default_value_t = 1)]
    pub worker_slots: usize,
    /// The devices jobs train on: `cpu`, `cuda` (every GPU) or `cuda:0,1`. Default: every GPU
    /// the CUDA build sees, else the CPU.
    #[arg(long, env = "WICK_DEVICES")]
    pub devices: Option<crate::devices::DeviceChoice>,
    /// A worker that has not renewed its job's lease for this long is presumed dead, and another
    /// worker resumes the job from its last checkpoint.
    #[arg(long, env = "WICK_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,
    /// Compute threads each training process uses; 0 divides this machine's cores among the slots.
    #[arg(long, env = "WICK_THREADS_PER_JOB", default_value_t = 0)]
    pub threads_per_job: usize,
    /// The `wick` executable that training child processes run (default: this one).
    #[arg(long, env = "WICK_TRAINER_EXE")]
    pub trainer_exe: Option<PathBuf>,
    /// Time limit for ordinary API requests, in seconds (uploads, streams, downloads and chat
    /// completions are exempt); a request over it answers 408 `request_timeout`.
    #[arg(long, env = "WICK_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Folder of Hugging Face model folders offered as base models, one subfolder per model, named
    /// by the folder (default: `<data-dir>/models`; none there means no local models). Remote
    /// workers need the same folders under their own setting, or the models imported into the
    /// blob store (`wick models import`).
    #[arg(long, env = "WICK_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (from the connection's start, or the
    /// end of the previous request); a connection that sends them slower is closed.
    #[arg(long, env = "WICK_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds an upload may send nothing before it is cut off (408 `upload_stalled`).
    #[arg(long, env = "WICK_UPLOAD_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub upload_idle_timeout_secs: u64,
    /// Slowest average an upload may keep once it has run for the idle timeout, in bytes per
    /// second (408 `upload_too_slow` below it); 0 turns the check off.
    #[arg(long, env = "WICK_UPLOAD_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub upload_min_bytes_per_sec: u64,
    /// Connections served at once; more wait in the listen queue until one closes.
    #[arg(long, env = "WICK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl Settings {
    /// Defaults for a data folder, as tests and embedders build them.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            database_url: None,
            data_dir: data_dir.into(),
            blob_store: None,
            max_upload_bytes: 512_000_000,
            worker_slots: 1,
            devices: None,
            lease_secs: 30,
            threads_per_job: 0,
            trainer_exe: None,
            request_timeout_secs: 60,
            models_dir: None,
            header_timeout_secs: 10,
            upload_idle_timeout_secs: 30,
            upload_min_bytes_per_sec: 1024,
            max_connections: 1024,
        }
    }

    /// The blob store's location: `blob_store` when set, else the `blobs` folder of the data folder.
    pub fn blob_location(&self) -> crate::blob_location::BlobLocation {
        self.blob_store.clone().unwrap_or_else(|| {
            crate::blob_location::BlobLocation::Local(self.data_dir.join("blobs"))
        })
    }

    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin_key")
    }

    /// The folder of local base models: `models_dir` when set, else `<data_dir>/models` (which
    /// need not exist: then there are no local models).
    pub fn local_models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }
}

impl Settings {
    /// Where imported base models are cached on this machine, one folder per content hash.
    pub fn model_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("base-models")
    }

    /// Where jobs' local files live while they train.
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
}
