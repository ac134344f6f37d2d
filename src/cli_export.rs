//! `wick export`: a model folder (what a job wrote, or any Llama-family Hugging Face folder with
//! a byte-level BPE tokenizer) as one GGUF file for llama.cpp, Ollama and LM Studio, with an
//! Ollama `Modelfile` beside it; the same export as `GET .../download?format=gguf`.

use std::path::PathBuf;

use crate::model::gguf::Quant;

/// Arguments of `wick export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The folder the GGUF file and the Modelfile go to.
    #[arg(long)]
    pub out: PathBuf,
    /// `f16`, `q8_0` or `q4_k_m`.
    #[arg(long, default_value = "f16")]
    pub quant: String,
    /// The model's name in the file (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs `wick export`.
pub fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    let quant: Quant = args.quant.parse().map_err(|_| {
        anyhow::anyhow!("--quant must be f16, q8_0 or q4_k_m, got {:?}", args.quant)
    })?;
    let folder_name = args
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = args.name.clone().unwrap_or_else(|| folder_name.clone());
    let file = format!("{folder_name}-{}.gguf", quant.as_str());
    let started = std::time::Instant::now();
    let done =
        crate::model::gguf_export::export_folder(&args.model, &args.out, &file, quant, &name)?;
    for line in done.summary.fallbacks.iter().chain(&done.summary.warnings) {
        eprintln!("note: {line}");
    }
    println!(
        "{} ({:.1} MB, {} tensors, {:.1} s) and {}",
        done.gguf.display(),
        done.summary.bytes_written as f64 / 1e6,
        done.summary.tensors.len(),
        started.elapsed().as_secs_f64(),
        done.modelfile.display()
    );
    Ok(())
}
