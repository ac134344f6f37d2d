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
    let files = weight_files(dir)?;
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

/// The safetensors files of a model folder: `model.safetensors`, else every shard that
/// `model.safetensors.index.json` names, each checked to exist inside the folder.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        return Ok(vec![single]);
    }
    if !index.exists() {
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: "no model.safetensors or model.safetensors.index.json".into(),
        });
    }
    let weights_error = |message: String| HfError::Weights {
        path: index.clone(),
        message,
    };
    let text = std::fs::read_to_string(&index).map_err(io(&index))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| weights_error(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| weights_error("no weight_map".into()))?;
    let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(weights_error("weight_map names no files".into()));
    }
    let mut files = Vec::with_capacity(shards.len());
    for shard in shards {
        let rel = Path::new(shard);
        let inside = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(weights_error(format!(
                "names {shard}, which is outside the folder"
            )));
        }
        let file = dir.join(rel);
        if !file.is_file() {
            return Err(weights_error(format!("names {shard}, which is missing")));
        }
        files.push(file);
    }
    Ok(files)
}

/// Checks a folder's weights against `cfg` from the safetensors headers alone (the tensors are not
/// read): every parameter present with the config's shape and a float dtype, and no file shorter
/// than its header says.
pub fn check_weight_headers(dir: &Path, cfg: &ModelConfig) -> Result<(), HfError> {
    use safetensors::Dtype;
    use std::io::Read;
    let mut found: HashMap<String, (Dtype, Vec<usize>)> = HashMap::new();
    for f in weight_files(dir)? {
        let bad = |message: String| HfError::Weights {
            path: f.clone(),
            message,
        };
        let mut file = std::fs::File::open(&f).map_err(io(&f))?;
        let file_len = file.metadata().map_err(io(&f))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|_| bad("too short to be a safetensors file".into()))?;
        let n = u64::from_le_bytes(len);
        // safetensors' own limit on the header.
        if n > 100_000_000 || 8 + n > file_len {
            return Err(bad(format!(
                "not a safetensors file (header length {n}, file length {file_len})"
            )));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(io(&f))?;
        let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
        if 8 + n + meta.data_len() as u64 > file_len {
            return Err(bad(format!(
                "truncated: the header describes {} bytes of tensors, the file holds {}",
                meta.data_len(),
                file_len - 8 - n
            )));
        }
        for (name, info) in meta.tensors() {
            found.insert(name, (info.dtype, info.shape.clone()));
        }
    }
    // Each layer has several tensors; checked before listing the config's (which could be huge).
    if cfg.num_hidden_layers > found.len() {
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: format!(
                "the config has {} layers but the weights hold only {} tensors",
                cfg.num_hidden_layers,
                found.len()
            ),
        });
    }
    let mut missing = Vec::new();
    for (name, shape, _) in cfg.parameter_shapes() {
        match found.get(&name) {
            Some((dtype, _))
                if !matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64) =>
            {
                return Err(HfError::Weights {
                    path: dir.to_path_buf(),
                    message: format!(
                        "{name} has dtype {dtype:?}; Wick loads float weights (F32, F16, BF16)"
                    ),
                });
            }
            Some((_, got)) if *got != shape => {
                return Err(HfError::Weights {
                    path: dir.to_path_buf(),
                    message: format!("{name} has shape {got:?}, the config says {shape:?}"),
                });
            }
            Some(_) => {}
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        let more = missing.len().saturating_sub(3);
        missing.truncate(3);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: format!("missing tensors: {}{tail}", missing.join(", ")),
        });
    }
    Ok(())
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
