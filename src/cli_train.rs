//! `wick train --spec job.json` and `wick estimate --spec job.json`: one job on this machine, no
//! server, with a progress bar. The edge of the trainer, so errors are `anyhow` here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::spec::JobSpec;
use crate::train::{self, EvalMetrics, Progress, StepMetrics, TrainJob};

/// Arguments of `wick train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The job spec (the body of POST /v1/fine_tuning/jobs; files are local paths).
    #[arg(long)]
    pub spec: PathBuf,
    /// Output folder (default: runs/<spec file name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A checkpoint folder to continue from.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// `cpu` or `cuda:N`. Default: the first GPU the CUDA build sees, else the CPU.
    #[arg(long)]
    pub device: Option<crate::devices::DeviceId>,
}

/// Arguments of `wick estimate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EstimateArgs {
    /// The job spec to estimate.
    #[arg(long)]
    pub spec: PathBuf,
}

/// Reads a spec and resolves a file named in it: as given when it exists (relative to the current
/// folder), else relative to the spec's folder.
fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn resolve(spec_path: &Path, file: &str) -> PathBuf {
    let p = PathBuf::from(file);
    if p.is_absolute() || p.exists() {
        return std::path::absolute(&p).unwrap_or(p);
    }
    spec_path.parent().map(|d| d.join(&p)).unwrap_or(p)
}

/// Runs `wick train`.
pub fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let mut spec = read_spec(&args.spec)?;
    spec.localise_files(|f| resolve(&args.spec, f).to_string_lossy().into_owned());
    let training_file = PathBuf::from(spec.training_file_refs()[0]);
    let validation_file = spec.validation_file.as_deref().map(PathBuf::from);
    // A model given as a relative folder is resolved like the files.
    if crate::model::preset(&spec.model).is_none() {
        spec.model = resolve(&args.spec, &spec.model)
            .to_string_lossy()
            .into_owned();
    }
    let stem = args
        .spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into());
    let output_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(stem));
    let device = match args.device {
        Some(d) => d,
        None => crate::devices::resolve(None)?[0],
    };
    eprintln!("training on {device}");
    let job = TrainJob {
        spec,
        training_file,
        validation_file,
        output_dir,
        resume_from: args.resume.clone(),
        device: device.open()?,
        base_model_name: None,
    };
    let mut bar = BarProgress::new();
    let outcome = train::run_job(&job, &mut bar).map_err(anyhow::Error::from)?;
    bar.bar.finish_and_clear();
    println!(
        "{} steps, final train loss {}, valid loss {}{}",
        outcome.steps_completed,
        outcome
            .final_train_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or("-".into()),
        outcome
            .final_valid_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or("-".into()),
        outcome
            .stopped
            .map(|s| format!(" (stopped: {s:?})"))
            .unwrap_or_default()
    );
    if let Some(dir) = outcome.model_dir {
        println!("model written to {}", dir.display());
    }
    Ok(())
}

/// Runs `wick estimate`, printing the estimate as JSON.
pub fn run_estimate(args: &EstimateArgs) -> anyhow::Result<()> {
    let mut spec = read_spec(&args.spec)?;
    spec.localise_files(|f| resolve(&args.spec, f).to_string_lossy().into_owned());
    let files: Vec<&Path> = spec
        .training_file_refs()
        .into_iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let e = train::job_estimate::estimate_job(&spec, &files, true)?;
    println!("{}", serde_json::to_string_pretty(&e)?);
    Ok(())
}

/// An indicatif bar: step, loss, tokens/s, ETA; evaluations and checkpoints printed above it.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// Prints above the bar, or plainly when there is no terminal to draw it on.
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn new() -> Self {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed} < {eta}]")
                .expect("valid template"),
        );
        bar.set_message("preparing data and tokenizer...");
        BarProgress { bar }
    }
}

impl Progress for BarProgress {
    fn on_phase(&mut self, phase: &str, done: u64, total: u64) {
        if phase == train::BF16_UNAVAILABLE {
            self.bar.println(
                "note: bf16 requested, but this processor has no bf16 dot products (AVX512-BF16): running f32",
            );
            return;
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar
            .set_message(format!("{phase}: {done}/{total} pairs, before step 1"));
    }
    fn on_step(&mut self, m: &StepMetrics) {
        self.bar.set_length(m.total_steps);
        self.bar.set_position(m.step);
        let accuracy = m
            .extra
            .get("rewards/accuracies")
            .map(|a| format!(" reward acc {:.2}", a))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "loss {:.4}{accuracy} lr {:.2e} |g| {:.2} {:.0} tok/s",
            m.train_loss, m.learning_rate, m.grad_norm, m.tokens_per_second
        ));
    }
    fn on_eval(&mut self, m: &EvalMetrics) {
        self.say(format!(
            "step {:>6}: valid loss {:.4}, perplexity {:.2}, token accuracy {:.3}",
            m.step, m.valid_loss, m.valid_perplexity, m.valid_mean_token_accuracy
        ));
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        self.say(format!("step {step:>6}: checkpoint {}", path.display()));
    }
}
