//! A tiny pretrained-looking chat model folder for whole-job tests (`sft_jobs`, `dpo_jobs`), the
//! jobs they run on it, and the tensor comparisons those tests make.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use wick::model::ModelConfig;
use wick::model::hf;
use wick::spec::JobSpec;
use wick::train::TrainJob;

/// The largest absolute elementwise difference of two tensors of the same shape, as f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .unwrap()
}

pub const TOPICS: [&str; 5] = ["cats", "rain", "tea", "maps", "bread"];

/// A tiny pretrained-looking model folder: trained BPE tokenizer (ChatML template) and random
/// weights.
pub fn model_dir(dir: &Path) -> ModelConfig {
    let texts: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "Tell me about {} please. Sure, {} are nice.",
                TOPICS[i % 5],
                TOPICS[i % 5]
            )
        })
        .collect();
    let tokenizer = wick::tokenizer::train_bpe(texts.iter(), 300).unwrap();
    let mut cfg = ModelConfig::llama(tokenizer.get_vocab_size(true), 32, 64, 2, 4, 2, 128);
    cfg.eos_token_id = Some(0);
    cfg.bos_token_id = Some(0);
    cfg.pad_token_id = Some(1);
    let vm = wick::model::init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
    let w = wick::model::varmap_tensors(&vm);
    hf::save_model_folder(dir, &cfg, &w).unwrap();
    wick::tokenizer::save_trained(&tokenizer, dir, 128).unwrap();
    cfg
}

/// A `method` job (`supervised` or `dpo`) on the model in `dir/base`, training on `dir/file`,
/// writing to `dir/out`.
pub fn job(dir: &Path, method: &str, file: &str, hyper: serde_json::Value, out: &str) -> TrainJob {
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "model": dir.join("base").to_str().unwrap(), "training_file": file, "seed": 3,
        "method": {"type": method, method: {"hyperparameters": hyper}}
    }))
    .unwrap();
    TrainJob {
        spec,
        training_file: dir.join(file),
        validation_file: None,
        output_dir: dir.join(out),
        resume_from: None,
        device: Device::Cpu,
        base_model_name: None,
    }
}

/// The weights of a model folder.
pub fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Asserts that the model folders `a` and `b` hold the same weights within `tol`.
pub fn assert_same_weights(a: &Path, b: &Path, tol: f64) {
    let (wa, wb) = (tensors(a), tensors(b));
    for (name, t) in &wa {
        assert!(max_abs_diff(t, &wb[name]) < tol, "{name}");
    }
}

/// Bitwise equal f32 tensors.
pub fn same(a: &Tensor, b: &Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}
