//! `wick clean`: the data pipeline's cleaning on a local file, without a server, with progress
//! bars (validating, then cleaning) and the report printed as JSON; the same [`Cleaner`] as
//! `POST /v1/files/{id}/clean`.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::datasets::clean::{CleanOptions, Cleaner};
use crate::datasets::{Purpose, Validator};

/// Arguments of `wick clean`.
#[derive(Debug, Clone, clap::Args)]
pub struct CleanArgs {
    /// The JSONL file to clean.
    #[arg(long)]
    pub input: PathBuf,
    /// Where the cleaned JSONL goes.
    #[arg(long)]
    pub output: PathBuf,
    /// The options as JSON (the body of POST /v1/files/{id}/clean), or @FILE to read them.
    #[arg(long, default_value = "{}")]
    pub options: String,
    /// `fine-tune` or `pretrain` (default: pretrain when the first line has "text", else
    /// fine-tune).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Also write the report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

const CHUNK: usize = 1 << 20;

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(
            "{msg:10} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{eta}]",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// Streams `path` through `f`, a megabyte at a time, with a progress bar.
fn stream(
    path: &PathBuf,
    what: &str,
    mut f: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let progress = bar(file.metadata()?.len(), what);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        f(&buf[..n])?;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Runs `wick clean`.
pub fn run_clean(args: &CleanArgs) -> anyhow::Result<()> {
    let options = match args.options.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)?,
        None => args.options.clone(),
    };
    let options: CleanOptions =
        serde_json::from_str(&options).map_err(|e| anyhow::anyhow!("--options: {e}"))?;
    let purpose = match args.purpose.as_deref() {
        Some("fine-tune") => Purpose::FineTune,
        Some("pretrain") => Purpose::Pretrain,
        Some(other) => anyhow::bail!("--purpose must be fine-tune or pretrain, got {other:?}"),
        None => {
            let mut first = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(std::fs::File::open(&args.input)?),
                &mut first,
            )?;
            let first = crate::datasets::bom::strip_bom_str(&first);
            let has_text = serde_json::from_str::<serde_json::Value>(first)
                .is_ok_and(|v| v.get("text").is_some());
            if has_text {
                Purpose::Pretrain
            } else {
                Purpose::FineTune
            }
        }
    };
    // The format (chat, ShareGPT, ...) is what the validator finds, as for an upload.
    let mut validator = Validator::new(purpose);
    stream(&args.input, "validating", |chunk| {
        validator.feed(chunk);
        Ok(())
    })?;
    let format = validator.finish().format_or_legacy(purpose);
    let source = args.input.display().to_string();
    let mut cleaner = Cleaner::new(options, purpose, format, &source)
        .map_err(|e| anyhow::anyhow!("--options: {e}"))?;
    let mut out = BufWriter::new(std::fs::File::create(&args.output)?);
    stream(&args.input, "cleaning", |chunk| {
        Ok(cleaner.feed(chunk, &mut out)?)
    })?;
    let report = cleaner.finish(&mut out)?;
    out.flush()?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &json)?;
    }
    println!("{json}");
    eprintln!(
        "{} of {} lines kept, written to {} ({:.1} s)",
        report.kept,
        report.lines,
        args.output.display(),
        report.seconds
    );
    Ok(())
}
