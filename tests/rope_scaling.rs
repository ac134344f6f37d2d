//! RoPE scaling read from a model's `config.json` (linear, dynamic NTK, YaRN, Llama 3; the
//! transformers 4 `rope_scaling` and transformers 5 `rope_parameters` spellings) gives the logits
//! transformers gives at positions past the original context: reference made by
//! `tests/fixtures/make_rope_reference.py` (its "made_by" field names the versions), the
//! tiny-llama-gqa weights with an original context of 16 and a row of 40 tokens.

#[path = "common/chat_model.rs"]
mod chat_model;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use chat_model::max_abs_diff;
use serde_json::{Value, json};
use wick::model::llama::{Llama, sequential_positions};
use wick::model::{ModelConfig, hf};

const CPU: Device = Device::Cpu;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture's config.json with the original context and one scaling variant, in the
/// transformers 4 spelling (`rope_scaling` beside `rope_theta`) or the 5 one (`rope_parameters`).
fn config_with(params: &Value, original: usize, v5: bool) -> ModelConfig {
    let text = std::fs::read_to_string(fixtures().join("tiny-llama-gqa/config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.insert("max_position_embeddings".into(), json!(original));
    o.remove("rope_parameters");
    if v5 {
        let mut p = params.as_object().unwrap().clone();
        p.insert("rope_theta".into(), json!(10000.0));
        o.insert("rope_parameters".into(), Value::Object(p));
    } else {
        o.insert("rope_theta".into(), json!(10000.0));
        // transformers 4 wrote `type` as well as (later) `rope_type`; use the old key alone.
        let mut p = params.as_object().unwrap().clone();
        if let Some(t) = p.remove("rope_type") {
            p.insert("type".into(), t);
        }
        o.insert("rope_scaling".into(), Value::Object(p));
    }
    ModelConfig::from_hf_value(v).unwrap()
}

fn logits(cfg: &ModelConfig, ids: &[u32]) -> Tensor {
    let dir = fixtures().join("tiny-llama-gqa");
    let weights = hf::load_weights(&dir, cfg, DType::F32, &CPU).unwrap();
    let model = Llama::load_with_context(
        VarBuilder::from_tensors(weights, DType::F32, &CPU),
        cfg,
        ids.len(),
    )
    .unwrap();
    let input = Tensor::new(ids, &CPU).unwrap().unsqueeze(0).unwrap();
    let pos = sequential_positions(1, ids.len(), &CPU).unwrap();
    model
        .forward(&input, &pos, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

#[test]
fn every_scaling_type_matches_transformers_past_the_original_context() {
    let text = std::fs::read_to_string(fixtures().join("rope_reference.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    let original = r["max_position_embeddings"].as_u64().unwrap() as usize;
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    let ids = &ids[0];
    assert!(
        ids.len() > original,
        "the row must run past the original context"
    );
    let expected = |name: &str| {
        let rows: Vec<Vec<f32>> =
            serde_json::from_value(r["variants"][name]["logits"].clone()).unwrap();
        Tensor::new(rows, &CPU).unwrap()
    };
    let default = expected("default");
    let variants = r["variants"].as_object().unwrap();
    assert_eq!(variants.len(), 6);
    for (i, (name, variant)) in variants.iter().enumerate() {
        let want = expected(name);
        if name != "default" {
            // The reference itself moves with the scaling, so matching it is not matching the
            // unscaled model.
            assert!(
                max_abs_diff(&want, &default) > 1e-2,
                "{name}: the reference equals the unscaled logits"
            );
        }
        for v5 in [i % 2 == 0, i % 2 == 1] {
            let cfg = config_with(&variant["rope_parameters"], original, v5);
            let got = logits(&cfg, ids);
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < 1e-4,
                "{name} ({} spelling): logits differ from transformers by {diff}",
                if v5 {
                    "transformers 5"
                } else {
                    "transformers 4"
                }
            );
            // Written back, the config reads as the same scaling.
            let again = ModelConfig::from_hf_value(cfg.to_hf_json()).unwrap();
            assert_eq!(again.rope_scaling, cfg.rope_scaling, "{name}");
        }
    }
}
