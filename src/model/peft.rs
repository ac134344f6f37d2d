//! PEFT export of LoRA adapters, and merging them into a plain Hugging Face model.
//!
//! The adapter folder is what `peft.PeftModel.from_pretrained(base, dir)` loads:
//! `adapter_config.json` and `adapter_model.safetensors` with PEFT's key names
//! `base_model.model.{module}.lora_A.weight` (r, in) and `.lora_B.weight` (out, r), plus whole
//! trained weights listed in `modules_to_save` (`base_model.model.model.embed_tokens.weight`)
//! when the job added tokens (the base must then be resized to the tokenizer first). PEFT only warns
//! about a missing key and then silently uses zeros, so the names are tested against a fixture made
//! by real PEFT (tests/fixtures/make_peft_fixture.py).
//!
//! Merging adds `scaling · B A` to each wrapped base weight and writes a normal model folder, which
//! the service's download and chat use like any other model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde_json::{Value, json};

use super::config::ModelConfig;
use super::hf::{self, HfError};
use super::lora::{LoraAdapter, LoraAdapters, LoraConfig};

/// Why an adapter could not be exported or merged.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error("the base model has no tensor {0}")]
    MissingBase(String),
    #[error("invalid adapter: {0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// PEFT's name for the model weight or adapter variable `name`: `base_model.model.{name}`.
pub fn peft_key(name: &str) -> String {
    format!("base_model.model.{name}")
}

/// The adapter tensors under PEFT's names, e.g.
/// `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
pub fn adapter_tensors(adapters: &LoraAdapters) -> HashMap<String, Tensor> {
    adapters
        .named_vars()
        .into_iter()
        .map(|(name, var)| (peft_key(&name), var.as_tensor().clone()))
        .collect()
}

/// `adapter_config.json` as PEFT writes it for these settings (the keys PEFT has understood since
/// its 0.9 releases, with PEFT's defaults for everything Wick does not use).
pub fn adapter_config(
    spec: &LoraConfig,
    base_model_name_or_path: Option<&str>,
    modules_to_save: &[String],
) -> Value {
    // PEFT names a module to save by its last path component (`embed_tokens`, `lm_head`).
    let modules_to_save: Option<Vec<&str>> = (!modules_to_save.is_empty()).then(|| {
        modules_to_save
            .iter()
            .map(|n| {
                let module = n.strip_suffix(".weight").unwrap_or(n);
                module.rsplit('.').next().unwrap_or(module)
            })
            .collect()
    });
    json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "modules_to_save": modules_to_save,
        "peft_type": "LORA",
        "r": spec.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": spec.target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": spec.use_rslora,
    })
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors`.
pub fn save_adapter(
    dir: &Path,
    adapters: &LoraAdapters,
    base_model_name_or_path: Option<&str>,
) -> Result<(), PeftError> {
    std::fs::create_dir_all(dir).map_err(|source| PeftError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let saved: Vec<String> = adapters
        .modules_to_save
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let config = adapter_config(&adapters.spec, base_model_name_or_path, &saved);
    let path = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise") + "\n";
    std::fs::write(&path, text).map_err(|source| PeftError::Io { path, source })?;
    hf::save_weights(
        &dir.join("adapter_model.safetensors"),
        &adapter_tensors(adapters),
    )?;
    Ok(())
}

/// The base weights with every adapter merged in: `W + scaling · B A` (in `W`'s dtype), and the
/// trained copies of `modules_to_save` in place of their base weights.
pub fn merge_weights(
    base: &HashMap<String, Tensor>,
    adapters: &LoraAdapters,
) -> Result<HashMap<String, Tensor>, PeftError> {
    let mut merged = base.clone();
    for (module, adapter) in &adapters.adapters {
        let key = format!("{module}.weight");
        let w = base
            .get(&key)
            .ok_or_else(|| PeftError::MissingBase(key.clone()))?; // (out, in)
        let delta = adapter.delta_weight()?.to_dtype(w.dtype())?; // (out, in)
        merged.insert(key, (w + delta)?);
    }
    for (name, var) in &adapters.modules_to_save {
        merged.insert(name.clone(), var.as_tensor().detach());
    }
    Ok(merged)
}

/// Merges the adapters into the base and writes a complete model folder to `dir` (config.json,
/// generation_config.json, model.safetensors; tokenizer files are the caller's). `base` gives a
/// base weight by its Hugging Face name, `base_dtype` the dtype it is written in (f32 for merged
/// projections and trained whole weights; a QLoRA base's bf16 embeddings stay bf16); weights are
/// made and merged one at a time, as the file is written, so a QLoRA base can dequantise each
/// projection only then.
pub fn save_merged(
    dir: &Path,
    cfg: &ModelConfig,
    base: &dyn Fn(&str) -> candle_core::Result<Option<Tensor>>,
    base_dtype: &dyn Fn(&str) -> DType,
    adapters: &LoraAdapters,
) -> Result<(), PeftError> {
    let adapter_of: HashMap<String, &LoraAdapter> = adapters
        .adapters
        .iter()
        .map(|(module, a)| (format!("{module}.weight"), a))
        .collect();
    let saved: HashMap<&str, &Var> = adapters
        .modules_to_save
        .iter()
        .map(|(name, var)| (name.as_str(), var))
        .collect();
    let mut params = Vec::new();
    for (name, shape, _) in cfg.parameter_shapes() {
        let adapter = adapter_of.get(&name).copied();
        let var = saved.get(name.as_str()).copied();
        let key = name.clone();
        let dtype = match (var, adapter) {
            (None, None) => base_dtype(&name),
            _ => DType::F32,
        };
        let make = move || -> candle_core::Result<Tensor> {
            if let Some(var) = var {
                return var.as_tensor().detach().to_dtype(DType::F32);
            }
            let w = base(&key)?
                .ok_or_else(|| candle_core::Error::Msg(format!("no base weight {key}")))?;
            match adapter {
                Some(a) => w.to_dtype(DType::F32)? + a.delta_weight()?.to_dtype(DType::F32)?,
                None => w.to_dtype(dtype),
            }
        };
        params.push((
            name,
            hf::LazyTensor {
                shape,
                dtype,
                make: Box::new(make),
            },
        ));
    }
    hf::save_model_folder_lazy(dir, cfg, params)?;
    Ok(())
}

/// `base` with the PEFT adapter folder `dir` merged in (`W + scaling · B A` for each adapted
/// projection, scaling from its `adapter_config.json`; its saved modules, the embeddings and LM
/// head a job grew for new tokens, in place of the base's): what [`merge_weights`] gives for live
/// adapters, from files (a checkpoint's adapter).
pub fn merge_adapter_folder(
    base: &HashMap<String, Tensor>,
    dir: &Path,
) -> Result<HashMap<String, Tensor>, PeftError> {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("adapter_config.json"))
            .map_err(|e| PeftError::Invalid(format!("adapter_config.json: {e}")))?,
    )
    .map_err(|e| PeftError::Invalid(format!("adapter_config.json: {e}")))?;
    let r = config["r"].as_f64().unwrap_or(8.0);
    let alpha = config["lora_alpha"].as_f64().unwrap_or(r);
    let scaling = if config["use_rslora"].as_bool().unwrap_or(false) {
        alpha / r.sqrt()
    } else {
        alpha / r
    };
    let tensors = candle_core::safetensors::load(
        dir.join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    let mut merged = base.clone();
    for (key, t) in &tensors {
        let Some(name) = key.strip_prefix("base_model.model.") else {
            continue;
        };
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            let b_key = format!("base_model.model.{module}.lora_B.weight");
            let b = tensors
                .get(&b_key)
                .ok_or_else(|| PeftError::Invalid(format!("no {b_key} beside {key}")))?;
            let w_key = format!("{module}.weight");
            let w = base
                .get(&w_key)
                .ok_or_else(|| PeftError::MissingBase(w_key.clone()))?;
            let delta = (b.to_dtype(DType::F32)?.matmul(&t.to_dtype(DType::F32)?)? * scaling)?;
            merged.insert(w_key, (w + delta.to_dtype(w.dtype())?)?);
        } else if !name.ends_with(".lora_B.weight") {
            merged.insert(name.to_string(), t.clone());
        }
    }
    Ok(merged)
}

/// Sets every adapter of `adapters` from tensors under PEFT's names
/// (`base_model.model.{module}.lora_A.weight`), as a checkpoint or adapter file holds them.
pub fn load_adapter_tensors(
    adapters: &LoraAdapters,
    tensors: &HashMap<String, Tensor>,
) -> candle_core::Result<()> {
    for (name, var) in adapters.named_vars() {
        let key = peft_key(&name);
        let Some(t) = tensors.get(&key) else {
            candle_core::bail!("the adapter has no tensor {key}");
        };
        if t.dims() != var.dims() {
            candle_core::bail!(
                "adapter tensor {key} has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Llama;
    use crate::model::lora::load_lora_llama;
    use crate::model::lora::tests::{base_tensors, batch, logits, spec, tiny, train};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    #[test]
    fn merged_model_logits_equal_base_plus_adapter() {
        let cfg = tiny();
        let base = base_tensors(&cfg);
        let (model, adapters) =
            load_lora_llama(base.clone(), &cfg, &spec(), 1, 64, DType::F32, &Device::Cpu).unwrap();
        train(&model, &adapters, 3);
        let with_adapters = logits(&model, &batch());
        let base_only = Llama::load(
            VarBuilder::from_tensors(base.clone(), DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dtype = |_: &str| DType::F32;
        save_merged(
            dir.path(),
            &cfg,
            &|n| Ok(base.get(n).cloned()),
            &dtype,
            &adapters,
        )
        .unwrap();
        // Read back from disk, as a plain model.
        let cfg2 = hf::read_config(dir.path()).unwrap();
        let w = hf::load_weights(dir.path(), &cfg2, DType::F32, &Device::Cpu).unwrap();
        let merged =
            Llama::load(VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), &cfg2).unwrap();
        let max_diff = crate::testing::max_abs_diff;
        let d = max_diff(&logits(&merged, &batch()), &with_adapters);
        assert!(d < 1e-5, "merged vs base+adapter: {d}");
        // The adapters matter: without them the logits differ clearly.
        assert!(max_diff(&logits(&base_only, &batch()), &with_adapters) > 1e-3);
    }

    /// An adapter merged from its saved folder equals the live adapters merged.
    #[test]
    fn adapter_folders_merge_as_live_adapters_do() {
        let cfg = tiny();
        let base = base_tensors(&cfg);
        let (model, adapters) =
            load_lora_llama(base.clone(), &cfg, &spec(), 1, 64, DType::F32, &Device::Cpu).unwrap();
        train(&model, &adapters, 3);
        let dir = tempfile::tempdir().unwrap();
        save_adapter(dir.path(), &adapters, Some("base")).unwrap();
        let live = merge_weights(&base, &adapters).unwrap();
        let from_files = merge_adapter_folder(&base, dir.path()).unwrap();
        assert_eq!(live.len(), from_files.len());
        let mut changed = 0;
        for (name, t) in &live {
            let d = crate::testing::max_abs_diff(t, &from_files[name]);
            assert!(d < 1e-6, "{name}: {d}");
            changed += usize::from(crate::testing::max_abs_diff(t, &base[name]) > 0.0);
        }
        assert!(changed > 0, "the adapters changed some weights");
    }

    #[test]
    fn export_matches_peft_format() {
        // tests/fixtures/peft/ was written by real PEFT (make_peft_fixture.py) for the same tiny
        // Llama shape and LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, all 7 projections).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft");
        let read = |name: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap()
        };
        let peft_keys = read("keys.json");
        let peft_config = read("adapter_config.json");
        let cfg = tiny();
        let (_model, adapters) = load_lora_llama(
            base_tensors(&cfg),
            &cfg,
            &spec(),
            1,
            64,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_adapter(dir.path(), &adapters, Some("org/base")).unwrap();

        // Tensors: the same names and shapes, and the same `format: pt` metadata.
        let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut ours: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.shape().to_vec()))
            .collect();
        ours.sort();
        let mut theirs: Vec<(String, Vec<usize>)> = peft_keys["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_value(v.clone()).unwrap()))
            .collect();
        theirs.sort();
        assert_eq!(theirs.len(), 28);
        assert_eq!(ours, theirs);
        let fmt = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned());
        assert_eq!(fmt.as_deref(), peft_keys["metadata"]["format"].as_str());

        // Config: every key we write is one PEFT writes, with PEFT's value (target_modules as a
        // set: PEFT writes a Python set's order).
        let ours: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let required = [
            "base_model_name_or_path",
            "r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "use_rslora",
            "peft_type",
            "task_type",
            "bias",
        ];
        for key in required {
            assert!(ours.get(key).is_some(), "{key} missing");
        }
        assert_eq!(ours["base_model_name_or_path"], "org/base");
        for (key, value) in ours.as_object().unwrap() {
            let theirs = peft_config
                .get(key)
                .unwrap_or_else(|| panic!("PEFT writes no {key}"));
            match key.as_str() {
                "base_model_name_or_path" => {}
                "target_modules" => {
                    let set = |v: &Value| {
                        let mut s: Vec<String> = serde_json::from_value(v.clone()).unwrap();
                        s.sort();
                        s
                    };
                    assert_eq!(set(value), set(theirs));
                }
                "lora_alpha" | "lora_dropout" => {
                    assert_eq!(value.as_f64(), theirs.as_f64(), "{key}")
                }
                _ => assert_eq!(value, theirs, "{key}"),
            }
        }
    }
}
