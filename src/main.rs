//! The `wick` binary: parse the command line, start logging, run.

// The glibc allocator costs up to 1.7x in training steps (page faults); see docs/candle-notes.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = wick::cli::Cli::parse();
    wick::telemetry::init(cli.log_format);
    // Training child processes (`wick run-job`) read their log format from the environment, so a
    // `--log-format` flag reaches them too. Set before the runtime starts its threads: no other
    // thread exists yet to read the environment concurrently.
    unsafe { std::env::set_var(wick::telemetry::LOG_FORMAT_ENV, cli.log_format.as_str()) };
    // SAFETY: as above, no other thread exists yet.
    unsafe { wick::threads::one_candle_thread() };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(wick::cli::run(cli))
}
