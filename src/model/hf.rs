//! Hugging Face folders in and out: `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), `generation_config.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::config::{ConfigError, ModelConfig};

/// Why a model folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<ModelConfig, HfError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    ModelConfig::from_hf_json(&text).map_err(|source| HfError::Config { path, source })
}

/// Loads every weight of the folder (single file or sharded index) as `dtype`, checking that the
/// config's parameters are all present with the right shapes. Extra tensors (a redundant tied
/// `lm_head.weight`, rotary buffers) are dropped.
pub fn load_weights(
    dir: &Path,
    cfg: &ModelConfig,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>, HfError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| HfError::Weights {
            path: index.clone(),
            message: e.to_string(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| HfError::Weights {
                path: index.clone(),
                message: "no weight_map".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: "neither model.safetensors nor model.safetensors.index.json found".into(),
        });
    };
    let mut all = HashMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, device).map_err(|e| HfError::Weights {
            path: f.clone(),
            message: e.to_string(),
        })?;
        all.extend(loaded);
    }
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    for (name, shape, _) in cfg.parameter_shapes() {
        match all.remove(&name) {
            Some(t) if t.dims() == shape.as_slice() => {
                out.insert(name, t.to_dtype(dtype)?);
            }
            Some(t) => {
                return Err(HfError::Weights {
                    path: dir.to_path_buf(),
                    message: format!(
                        "{name} has shape {:?}, the config says {:?}",
                        t.dims(),
                        shape
                    ),
                });
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: format!("missing tensors: {}", missing.join(", ")),
        });
    }
    Ok(out)
}

/// Writes `model.safetensors` with the `{"format": "pt"}` metadata transformers expects.
pub fn save_weights(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), HfError> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    safetensors::serialize_to_file(contiguous, Some(metadata), path).map_err(|e| HfError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes a complete model folder transformers loads with `AutoModelForCausalLM`: config.json,
/// generation_config.json and model.safetensors. Tokenizer files are the caller's to add.
pub fn save_model_folder(
    dir: &Path,
    cfg: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), HfError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let write_json = |name: &str, v: &Value| -> Result<(), HfError> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
        std::fs::write(&path, text + "\n").map_err(io(&path))
    };
    write_json("config.json", &cfg.to_hf_json())?;
    write_json(
        "generation_config.json",
        &json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
                "pad_token_id": cfg.pad_token_id, "do_sample": true, "temperature": 0.8, "top_p": 0.95}),
    )?;
    let params: HashMap<String, Tensor> = cfg
        .parameter_shapes()
        .into_iter()
        .filter_map(|(name, _, _)| tensors.get(&name).map(|t| (name, t.clone())))
        .collect();
    save_weights(&dir.join("model.safetensors"), &params)
}
