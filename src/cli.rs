//! The `wick` command line: `serve`, `worker`, `keys create|list|revoke`, `models import|list`, `gc`,
//! and the training commands.

use clap::{Parser, Subcommand};

use crate::app::{Application, shutdown_signal};
use crate::config::Settings;
use crate::store::{Db, keys, orgs};
use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "wick",
    version,
    about = "A training service for language models"
)]
pub struct Cli {
    /// Log lines as `text` for people or `json` (one object per line) for log shippers. Training
    /// processes started by a worker slot inherit it through `WICK_LOG_FORMAT`.
    #[arg(
        long,
        global = true,
        env = crate::telemetry::LOG_FORMAT_ENV,
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the API (and its in-process training slots).
    Serve(Settings),
    /// Run one training job locally, without a server, with a progress bar.
    Train(crate::cli_train::TrainArgs),
    /// Estimate a job's parameters, memory, FLOPs and time before running it.
    Estimate(crate::cli_train::EstimateArgs),
    /// Clean a local JSONL file into a new one (dedup, personal data, filters, conversion).
    Clean(crate::cli_clean::CleanArgs),
    /// Write a model folder as a GGUF file (llama.cpp, Ollama, LM Studio) with a Modelfile.
    Export(crate::cli_export::ExportArgs),
    /// Run worker slots only (no API), against the same store and blob store as `serve`.
    Worker(Settings),
    /// Run one job's training in this process (started by a worker slot; not for people).
    #[command(hide = true)]
    RunJob {
        #[arg(long)]
        job: std::path::PathBuf,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List the blobs no row points at (older than the grace period), and with `--delete`
    /// remove them. A dry run by default.
    Gc {
        /// Remove what is listed.
        #[arg(long)]
        delete: bool,
        /// Leave blobs changed within this many seconds (uploads and checkpoints in flight).
        #[arg(long, default_value_t = crate::retention::GRACE.as_secs())]
        min_age_secs: u64,
        #[command(flatten)]
        settings: Settings,
    },
    /// Base models in the blob store, for workers that share no folder with this machine.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Check a Hugging Face folder as a base model and copy it into the blob store, where every
    /// worker fetches it (once, cached by content) when a job names it. Importing again under
    /// the same name replaces it; the same bytes are not copied twice.
    Import {
        /// The model folder (config.json, *.safetensors, tokenizer.json).
        dir: std::path::PathBuf,
        /// The model id jobs will name (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// List imported models (id, parameters, size, content hash, imported).
    List {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for an organization (created if new) and print it once.
    Create {
        /// Organization name.
        #[arg(long)]
        org: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// List keys (id, organization, label, first characters, created, revoked); never the keys.
    List {
        /// Only this organization's.
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Revoke a key by its id (`wick keys list` shows them): requests with it answer 401 at once,
    /// in every process sharing the store.
    Revoke {
        /// The key's id (`key-...`).
        id: String,
        #[command(flatten)]
        settings: Settings,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => {
            crate::private_files::restrict_new_files();
            let app = Application::build(settings).await?;
            if let Some(key) = &app.new_admin_key {
                let path = app.state().settings.admin_key_path();
                eprintln!(
                    "Created the admin API key (shown once; also saved to {}):\n\n    {key}\n",
                    path.display()
                );
            }
            app.run_until(shutdown_signal()).await?;
        }
        Command::Train(args) => {
            crate::allocator::keep_freed_memory();
            tokio::task::spawn_blocking(move || crate::cli_train::run_train(&args)).await??
        }
        Command::Estimate(args) => {
            tokio::task::spawn_blocking(move || crate::cli_train::run_estimate(&args)).await??
        }
        Command::Export(args) => {
            tokio::task::spawn_blocking(move || crate::cli_export::run_export(&args)).await??
        }
        Command::Clean(args) => {
            tokio::task::spawn_blocking(move || crate::cli_clean::run_clean(&args)).await??
        }
        Command::Worker(settings) => {
            crate::private_files::restrict_new_files();
            let state = crate::state::AppState::open(settings).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let slots = crate::worker::spawn_slots(&state, &stop)?;
            shutdown_signal().await;
            tracing::info!("shutting down: checkpointing running jobs");
            stop.cancel();
            for s in slots {
                let _ = s.await;
            }
        }
        Command::RunJob { job } => {
            crate::allocator::keep_freed_memory();
            tokio::task::spawn_blocking(move || crate::worker::child::run_child(&job)).await??;
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    org,
                    name,
                    settings,
                },
        } => {
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            let org = orgs::find_or_create_org(&db, &org).await?;
            let (_, key) = keys::create_key(&db, &org.id, &name).await?;
            println!("{key}");
        }
        Command::Keys {
            command: KeysCommand::List { org, settings },
        } => {
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            let rows = keys::list_keys(&db, org.as_deref()).await?;
            println!("id\torganization\tname\tprefix\tcreated\trevoked");
            for k in rows {
                let revoked = k.revoked_at.map_or("-".to_string(), |t| t.to_rfc3339());
                println!(
                    "{}\t{}\t{}\t{}…\t{}\t{revoked}",
                    k.id,
                    k.org_name,
                    k.name,
                    k.key_prefix,
                    k.created_at.to_rfc3339()
                );
            }
        }
        Command::Keys {
            command: KeysCommand::Revoke { id, settings },
        } => {
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            match keys::revoke_key(&db, &id).await? {
                keys::Revoked::Now => println!("revoked {id}"),
                keys::Revoked::Already => println!("{id} was already revoked"),
                keys::Revoked::Unknown => {
                    anyhow::bail!("no key with id {id:?} (wick keys list shows them)")
                }
            }
        }
        Command::Models {
            command:
                ModelsCommand::Import {
                    dir,
                    name,
                    settings,
                },
        } => {
            let name = match name {
                Some(n) => n,
                None => std::path::absolute(&dir)?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        anyhow::anyhow!("{} has no folder name; pass --name", dir.display())
                    })?,
            };
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            let blobs = crate::blob::Blobs::open(&settings.blob_location())?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )?
                .progress_chars("=> "),
            );
            bar.set_message(format!("importing {name} (hash, then copy)"));
            let m = crate::catalog::imported::import_folder(&db, &blobs, &dir, &name, &bar).await?;
            bar.finish_and_clear();
            println!(
                "imported {} ({} parameters, {} bytes) to {} in {}",
                m.row.id,
                m.row.parameters,
                m.row.bytes,
                m.row.blob_path,
                settings.blob_location()
            );
        }
        Command::Gc {
            delete,
            min_age_secs,
            settings,
        } => {
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            let blobs = crate::blob::Blobs::open(&settings.blob_location())?;
            let orphans = crate::retention::find_orphans(
                &db,
                &blobs,
                std::time::Duration::from_secs(min_age_secs),
            )
            .await?;
            let total: u64 = orphans.iter().map(|o| o.bytes).sum();
            println!("path\tbytes\tmodified");
            for o in &orphans {
                println!("{}\t{}\t{}", o.path, o.bytes, o.modified.to_rfc3339());
            }
            if !delete {
                println!(
                    "{} orphaned blobs, {total} bytes, in {} (dry run: --delete removes them)",
                    orphans.len(),
                    settings.blob_location()
                );
                return Ok(());
            }
            let bar = indicatif::ProgressBar::new(orphans.len() as u64);
            for o in &orphans {
                blobs.delete(&o.path).await?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!("deleted {} orphaned blobs, {total} bytes", orphans.len());
        }
        Command::Models {
            command: ModelsCommand::List { settings },
        } => {
            let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
            println!("id\tparameters\tbytes\tcontent_hash\timported");
            for m in crate::store::imported_models::list(&db).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    m.id,
                    m.parameters,
                    m.bytes,
                    m.content_hash,
                    m.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(())
}
