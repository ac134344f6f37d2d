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
    load_weights_with(
        dir,
        cfg,
        device,
        |_| false,
        |_, t| Ok(Some(t.to_dtype(dtype)?)),
    )
}

/// As [`load_weights`], reading one tensor at a time (nothing but that tensor's bytes beside the
/// tensors kept so far) and handing each, in the file's dtype, to `take`, which returns what to
/// keep in the map (converted as it likes) or `None` when it kept the weight its own way: QLoRA
/// quantises each projection as it is read, so the base never exists whole in f32. Tensors `skip`
/// names are not read (a resumed QLoRA job has its projections' codes already). Presence and
/// shapes of every tensor are checked before anything is read.
pub fn load_weights_with(
    dir: &Path,
    cfg: &ModelConfig,
    device: &Device,
    skip: impl Fn(&str) -> bool,
    mut take: impl FnMut(&str, Tensor) -> Result<Option<Tensor>, HfError>,
) -> Result<HashMap<String, Tensor>, HfError> {
    let files = weight_files(dir)?;
    let mut stored: HashMap<String, (usize, safetensors::tensor::TensorInfo)> = HashMap::new();
    let mut data_starts = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let header = read_header(f)?;
        for (name, info) in header.meta.tensors() {
            stored.insert(name, (i, info.clone()));
        }
        data_starts.push(header.data_start);
    }
    let params = cfg.parameter_shapes();
    let mut missing = Vec::new();
    for (name, shape, _) in &params {
        match stored.get(name) {
            Some((_, info)) if info.shape != *shape => {
                return Err(HfError::Weights {
                    path: dir.to_path_buf(),
                    message: format!(
                        "{name} has shape {:?}, the config says {:?}",
                        info.shape, shape
                    ),
                });
            }
            Some(_) => {}
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(HfError::Weights {
            path: dir.to_path_buf(),
            message: format!("missing tensors: {}", missing.join(", ")),
        });
    }
    let mut handles: Vec<Option<std::fs::File>> = files.iter().map(|_| None).collect();
    let mut out = HashMap::new();
    for (name, _, _) in params {
        if skip(&name) {
            continue;
        }
        let (i, info) = &stored[&name];
        let path = &files[*i];
        let file = match &mut handles[*i] {
            Some(f) => f,
            slot => slot.insert(std::fs::File::open(path).map_err(io(path))?),
        };
        let t = read_tensor(file, path, data_starts[*i], &name, info, device)?;
        if let Some(t) = take(&name, t)? {
            out.insert(name, t);
        }
    }
    Ok(out)
}

/// A safetensors file's header and where its tensor data starts.
pub(crate) struct Header {
    pub meta: safetensors::tensor::Metadata,
    pub data_start: u64,
}

/// Reads and checks the header of the safetensors file `f`: a sane length, valid JSON, and no
/// tensor reaching past the end of the file.
pub(crate) fn read_header(f: &Path) -> Result<Header, HfError> {
    use std::io::Read;
    let bad = |message: String| HfError::Weights {
        path: f.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(f).map_err(io(f))?;
    let file_len = file.metadata().map_err(io(f))?.len();
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
    file.read_exact(&mut header).map_err(io(f))?;
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    if 8 + n + meta.data_len() as u64 > file_len {
        return Err(bad(format!(
            "truncated: the header describes {} bytes of tensors, the file holds {}",
            meta.data_len(),
            file_len - 8 - n
        )));
    }
    Ok(Header {
        meta,
        data_start: 8 + n,
    })
}

/// Reads one tensor from an open safetensors file whose data starts at `data_start`. f32, f16 and
/// bf16 data is read straight into the tensor's buffer; f64 goes through one buffer of its bytes.
fn read_tensor(
    file: &mut std::fs::File,
    path: &Path,
    data_start: u64,
    name: &str,
    info: &safetensors::tensor::TensorInfo,
    device: &Device,
) -> Result<Tensor, HfError> {
    use safetensors::Dtype;
    use std::io::{Read, Seek, SeekFrom};
    let dtype = match info.dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        other => {
            return Err(HfError::Weights {
                path: path.to_path_buf(),
                message: format!(
                    "{name} has dtype {other:?}; Wick loads float weights (F32, F16, BF16)"
                ),
            });
        }
    };
    let (begin, end) = info.data_offsets;
    let n: usize = info.shape.iter().product();
    if end - begin != n * dtype.size_in_bytes() {
        return Err(HfError::Weights {
            path: path.to_path_buf(),
            message: format!("{name}: {} bytes for {n} values of {dtype:?}", end - begin),
        });
    }
    file.seek(SeekFrom::Start(data_start + begin as u64))
        .map_err(io(path))?;
    let shape = info.shape.as_slice();
    /// `n` values of `T` read straight into the tensor's buffer.
    fn direct<T: candle_core::WithDType>(
        file: &mut std::fs::File,
        n: usize,
        shape: &[usize],
        device: &Device,
    ) -> std::io::Result<candle_core::Result<Tensor>> {
        let mut values = vec![T::from_f64(0.0); n];
        // SAFETY: any bit pattern is a valid f32, f16 or bf16; safetensors stores little-endian
        // values, as this target holds them.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                values.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(values.as_slice()),
            )
        };
        file.read_exact(bytes)?;
        Ok(Tensor::from_vec(values, shape, device))
    }
    if cfg!(target_endian = "little") {
        let made = match dtype {
            DType::F32 => Some(direct::<f32>(file, n, shape, device)),
            DType::BF16 => Some(direct::<half::bf16>(file, n, shape, device)),
            DType::F16 => Some(direct::<half::f16>(file, n, shape, device)),
            _ => None,
        };
        if let Some(made) = made {
            return Ok(made.map_err(io(path))??);
        }
    }
    let mut bytes = vec![0u8; end - begin];
    file.read_exact(&mut bytes).map_err(io(path))?;
    Ok(Tensor::from_raw_buffer(&bytes, dtype, shape, device)?)
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
    let mut found: HashMap<String, (Dtype, Vec<usize>)> = HashMap::new();
    for f in weight_files(dir)? {
        for (name, info) in read_header(&f)?.meta.tensors() {
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

/// A tensor to be written, made only when the writer reaches it: a model folder is written one
/// tensor at a time (a QLoRA export dequantises and merges each projection as it goes), so no
/// second copy of the whole model is held.
pub struct LazyTensor<'a> {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub make: Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>,
}

impl<'a> LazyTensor<'a> {
    /// An existing tensor (a cheap handle on its storage).
    pub fn of(t: &Tensor) -> LazyTensor<'a> {
        let t = t.clone();
        LazyTensor {
            shape: t.dims().to_vec(),
            dtype: t.dtype(),
            make: Box::new(move || Ok(t.clone())),
        }
    }
}

/// Writes `model.safetensors` with the `{"format": "pt"}` metadata transformers expects.
pub fn save_weights(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), HfError> {
    save_weights_lazy(
        path,
        tensors
            .iter()
            .map(|(k, t)| (k.clone(), LazyTensor::of(t)))
            .collect(),
    )
}

/// As [`save_weights`], making each tensor only as it is written and writing it straight from its
/// storage, so the write holds no copy of any tensor. The file is written beside `path` and renamed
/// into place.
pub fn save_weights_lazy(path: &Path, tensors: Vec<(String, LazyTensor)>) -> Result<(), HfError> {
    save_weights_lazy_with(path, tensors, &[])
}

/// [`save_weights_lazy`] with `metadata` entries beside `{"format": "pt"}`.
pub fn save_weights_lazy_with(
    path: &Path,
    tensors: Vec<(String, LazyTensor)>,
    metadata: &[(&str, &str)],
) -> Result<(), HfError> {
    use std::io::Write;
    let weights_error = |message: String| HfError::Weights {
        path: path.to_path_buf(),
        message,
    };
    // The header: every tensor's dtype, shape and byte range, in the order given.
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), json!("pt"));
    for (k, v) in metadata {
        meta.insert(k.to_string(), json!(v));
    }
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let dtype = match t.dtype {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::U32 => "U32",
            DType::U8 => "U8",
            DType::I64 => "I64",
            other => return Err(weights_error(format!("{name}: cannot write {other:?}"))),
        };
        let len = t.shape.iter().product::<usize>() * t.dtype.size_in_bytes();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).expect("JSON values serialise");
    header.resize(header.len().next_multiple_of(8), b' ');
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    out.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(&header))
        .map_err(io(path))?;
    for (name, t) in &tensors {
        let made = (t.make)()?.to_device(&Device::Cpu)?.contiguous()?;
        if made.dims() != t.shape.as_slice() || made.dtype() != t.dtype {
            return Err(weights_error(format!(
                "{name}: made a {:?} {:?} tensor for a {:?} {:?} slot",
                made.dtype(),
                made.dims(),
                t.dtype,
                t.shape
            )));
        }
        write_storage(&mut out, &made).map_err(io(path))?;
    }
    out.flush().map_err(io(path))?;
    drop(out);
    tmp.persist(path).map_err(|e| HfError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes the values of the contiguous CPU tensor `t` as little-endian bytes, from its storage.
fn write_storage(out: &mut impl std::io::Write, t: &Tensor) -> std::io::Result<()> {
    use candle_core::{CpuStorage, Storage};
    fn bytes<T>(values: &[T]) -> &[u8] {
        // SAFETY: plain numeric values (no padding, any alignment is fine for u8) viewed as the
        // bytes they occupy; this target is little-endian, as safetensors stores values.
        unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        }
    }
    assert!(
        cfg!(target_endian = "little"),
        "safetensors is little-endian"
    );
    let (storage, layout) = t.storage_and_layout();
    let (a, b) = layout
        .contiguous_offsets()
        .expect("write_storage takes contiguous tensors");
    let Storage::Cpu(s) = &*storage else {
        unreachable!("write_storage takes CPU tensors");
    };
    match s {
        CpuStorage::F32(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::F16(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::BF16(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::F64(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::U32(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::U8(v) => out.write_all(bytes(&v[a..b])),
        CpuStorage::I64(v) => out.write_all(bytes(&v[a..b])),
        _ => Err(std::io::Error::other("unsupported dtype")),
    }
}

/// Writes a complete model folder transformers loads with `AutoModelForCausalLM`: config.json,
/// generation_config.json and model.safetensors. Tokenizer files are the caller's to add.
pub fn save_model_folder(
    dir: &Path,
    cfg: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), HfError> {
    let params = cfg
        .parameter_shapes()
        .into_iter()
        .filter_map(|(name, _, _)| tensors.get(&name).map(|t| (name, LazyTensor::of(t))))
        .collect();
    save_model_folder_lazy(dir, cfg, params)
}

/// As [`save_model_folder`], with the weights made one at a time as they are written.
pub fn save_model_folder_lazy(
    dir: &Path,
    cfg: &ModelConfig,
    params: Vec<(String, LazyTensor)>,
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
    save_weights_lazy(&dir.join("model.safetensors"), params)
}
