//! The `wick` binary. Temporary on the `trainer` branch: dispatches `train` and `estimate` until
//! the lead merges them into the real CLI.

use clap::{Parser, Subcommand};
use wick::cli_train::{EstimateArgs, TrainArgs, run_estimate, run_train};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wick", about = "A training service for language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one training job locally, without a server.
    Train(TrainArgs),
    /// Estimate a job's parameters, memory, FLOPs and time.
    Estimate(EstimateArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Train(a) => run_train(&a),
        Command::Estimate(a) => run_estimate(&a),
    }
}
