//! The inference KV cache gives the same next-token logits as running the whole sequence.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use wick::model::llama::{KvCache, Llama, sequential_positions};
use wick::model::{ModelConfig, init_varmap};

#[test]
fn cached_generation_matches_full_forward_at_every_position() {
    let dev = Device::Cpu;
    // GQA (4 heads over 2 kv heads), untied head, biases: every path the cache touches.
    let mut cfg = ModelConfig::llama(40, 32, 48, 2, 4, 2, 64);
    cfg.qkv_bias = true;
    cfg.tie_word_embeddings = false;
    cfg.initializer_range = 0.2;
    let varmap = init_varmap(&cfg, 3, DType::F32, &dev).unwrap();
    let model = Llama::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev), &cfg).unwrap();
    let ids: Vec<u32> = vec![1, 7, 3, 39, 12, 5, 5, 20, 31, 2, 8, 17];
    let full = model
        .forward(
            &Tensor::new(ids.as_slice(), &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            &sequential_positions(1, ids.len(), &dev).unwrap(),
            None,
        )
        .unwrap()
        .squeeze(0)
        .unwrap(); // (T, V)

    let mut cache = KvCache::default();
    let prompt = 5;
    let mut cached = vec![
        model
            .forward_cached(
                &Tensor::new(&ids[..prompt], &dev)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                &mut cache,
            )
            .unwrap(),
    ];
    for &id in &ids[prompt..] {
        cached.push(
            model
                .forward_cached(
                    &Tensor::new(&[id], &dev).unwrap().unsqueeze(0).unwrap(),
                    &mut cache,
                )
                .unwrap(),
        );
    }
    assert_eq!(cache.len, ids.len());
    for (i, logits) in cached.iter().enumerate() {
        let pos = prompt - 1 + i;
        let want = full.i(pos).unwrap();
        let diff = (logits.squeeze(0).unwrap() - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "position {pos}: max |cached - full| = {diff}");
    }
}
