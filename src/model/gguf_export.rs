//! A Hugging Face model folder written as one GGUF file (for llama.cpp, Ollama, LM Studio and
//! transformers' GGUF support), with an Ollama `Modelfile` beside it: the glue between Wick's
//! model folders and the format writer in [`super::gguf`]. Tensors are handed to the writer one at
//! a time as f32, so the export holds the loaded weights once; the file is written under a
//! temporary name and renamed when complete.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::gguf::{self, GgufError, GgufSummary, ModelMeta, Quant, TensorSpec, TokenizerFiles};
use super::hf::{self, HfError};

/// Why a folder could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] HfError),
    #[error("{0}")]
    Gguf(#[from] GgufError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What an export wrote: the GGUF file, the Modelfile, and the writer's summary (tensor types,
/// fallbacks, warnings).
#[derive(Debug)]
pub struct Exported {
    pub gguf: PathBuf,
    pub modelfile: PathBuf,
    pub summary: GgufSummary,
}

fn read(path: &Path) -> Result<String, ExportError> {
    std::fs::read_to_string(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Writes the model folder `dir` as `out_dir/<file_name>` in `quant`, and `out_dir/Modelfile`
/// naming it. `name` becomes the file's `general.name`.
pub fn export_folder(
    dir: &Path,
    out_dir: &Path,
    file_name: &str,
    quant: Quant,
    name: &str,
) -> Result<Exported, ExportError> {
    let meta = ModelMeta::from_hf_config(&read(&dir.join("config.json"))?, name)?;
    let tokenizer_json = read(&dir.join("tokenizer.json"))?;
    let tokenizer_config = optional(&dir.join("tokenizer_config.json"));
    let template_file = optional(&dir.join("chat_template.jinja"));
    let tokenizer = TokenizerFiles {
        tokenizer_json: &tokenizer_json,
        tokenizer_config_json: tokenizer_config.as_deref(),
        chat_template: template_file.as_deref(),
    };
    let cfg = hf::read_config(dir)?;
    let weights = hf::load_weights(dir, &cfg, DType::F32, &Device::Cpu)?;
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let shapes: Vec<Vec<usize>> = names.iter().map(|n| weights[*n].dims().to_vec()).collect();
    let specs: Vec<TensorSpec> = names
        .iter()
        .zip(&shapes)
        .map(|(n, s)| TensorSpec { name: n, shape: s })
        .collect();
    std::fs::create_dir_all(out_dir).map_err(|source| ExportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let path = out_dir.join(file_name);
    let partial = out_dir.join(format!("{file_name}.partial"));
    let io = |source| ExportError::Io {
        path: partial.clone(),
        source,
    };
    let mut file = std::fs::File::create(&partial).map_err(io)?;
    let summary = gguf::write_gguf_streaming(&mut file, &meta, &tokenizer, &specs, quant, |n| {
        let t = weights
            .get(n)
            .ok_or_else(|| GgufError::InvalidInput(format!("no tensor {n}")))?;
        let v = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| GgufError::InvalidInput(format!("{n}: {e}")))?;
        Ok(Cow::Owned(v))
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)?;
    let template = summary.chat_template.as_deref();
    let modelfile = out_dir.join("Modelfile");
    let text = gguf::ollama_modelfile(
        file_name,
        template,
        &summary.stop_tokens,
        Some(meta.context_length),
    );
    std::fs::write(&modelfile, text).map_err(|source| ExportError::Io {
        path: modelfile.clone(),
        source,
    })?;
    Ok(Exported {
        gguf: path,
        modelfile,
        summary,
    })
}
