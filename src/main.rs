//! The `wick` binary: parse the command line, start logging, run.

// The glibc allocator costs up to 1.7x in training steps (page faults); see shared/notes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = wick::cli::Cli::parse();
    wick::telemetry::init();
    wick::cli::run(cli).await
}
