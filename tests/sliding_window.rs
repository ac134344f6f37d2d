//! Sliding-window attention read from config.json (Mistral's `sliding_window`; Qwen2's with
//! `use_sliding_window`, `max_window_layers` and `layer_types`) gives transformers' logits on a row
//! longer than the window, in a whole forward pass (the one training runs) and token by token
//! through the KV cache (the one generation runs). Reference: `tests/fixtures/
//! make_sliding_window_reference.py` (its "made_by" field names the versions).

#[path = "common/chat_model.rs"]
mod chat_model;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use chat_model::max_abs_diff;
use serde_json::Value;
use wick::model::llama::{KvCache, Llama, sequential_positions};
use wick::model::{ModelConfig, hf};

const CPU: Device = Device::Cpu;

#[test]
fn windowed_layers_match_transformers_in_training_and_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("sliding_window_reference.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    let ids = &ids[0];
    let t = ids.len();
    for (name, v) in r["variants"].as_object().unwrap() {
        let cfg = ModelConfig::from_hf_value(v["config"].clone()).unwrap();
        let window = cfg.sliding_window.clone().expect("a window");
        assert!(
            window.size < t,
            "{name}: the row must be longer than the window"
        );
        let dir = root.join(v["fixture"].as_str().unwrap());
        let load = |cfg: &ModelConfig| {
            let w = hf::load_weights(&dir, cfg, DType::F32, &CPU).unwrap();
            Llama::load(VarBuilder::from_tensors(w, DType::F32, &CPU), cfg).unwrap()
        };
        let model = load(&cfg);
        let rows: Vec<Vec<f32>> = serde_json::from_value(v["logits"].clone()).unwrap();
        let want = Tensor::new(rows, &CPU).unwrap(); // (T, V)
        let input = Tensor::new(ids.as_slice(), &CPU)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos = sequential_positions(1, t, &CPU).unwrap();
        let got = model
            .forward(&input, &pos, None)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff < 1e-4,
            "{name}: forward differs from transformers by {diff}"
        );

        // Without the window the logits are others: the test sees the window.
        let mut plain = cfg.clone();
        plain.sliding_window = None;
        let unwindowed = load(&plain)
            .forward(&input, &pos, None)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert!(
            max_abs_diff(&unwindowed, &want) > 1e-3,
            "{name}: the window changes nothing here"
        );

        // Token by token through the cache: each step's logits are the reference's row.
        let mut cache = KvCache::default();
        for (i, &id) in ids.iter().enumerate() {
            let step = Tensor::new(&[id], &CPU).unwrap().unsqueeze(0).unwrap();
            let logits = model
                .forward_cached(&step, &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let diff = max_abs_diff(&logits, &want.get(i).unwrap());
            assert!(diff < 1e-4, "{name}: cached step {i} differs by {diff}");
        }
    }
}
