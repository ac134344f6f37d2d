//! Trainer tests on tiny models: gradients (non-zero, finite differences), the transformers
//! reference fixtures, Hugging Face round trips, overfitting, accumulation, resume and bad specs.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use wick::model::hf;
use wick::model::llama::{Llama, sequential_positions};
use wick::model::{Architecture, ModelConfig, init_varmap, named_vars};
use wick::spec::JobSpec;
use wick::train::loss::shifted_cross_entropy;
use wick::train::optim::{AdamW, AdamWConfig, accumulate};
use wick::train::{RecordingProgress, StopReason, Stopped, TrainError, TrainJob, run_job};

#[path = "common/corpus.rs"]
mod corpus;
use corpus::write_corpus;

const CPU: Device = Device::Cpu;

/// A tiny config with every kind of parameter: GQA, q/k/v/o and MLP biases, separate LM head.
fn tiny_all_kinds() -> ModelConfig {
    let mut c = ModelConfig::llama(24, 16, 20, 2, 4, 2, 64);
    c.qkv_bias = true;
    c.o_bias = true;
    c.mlp_bias = true;
    c.tie_word_embeddings = false;
    c.initializer_range = 0.3;
    c
}

fn build(cfg: &ModelConfig, varmap: &VarMap, dtype: DType) -> Llama {
    Llama::load(VarBuilder::from_varmap(varmap, dtype, &CPU), cfg).unwrap()
}

fn ids(rows: &[&[u32]]) -> Tensor {
    Tensor::new(rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &CPU).unwrap()
}

/// The largest absolute elementwise difference of two tensors of the same shape, as f64.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>())
        .unwrap()
}

/// Mean shifted cross-entropy of `input` with every label counted except those weighted 0.
fn mean_loss(model: &Llama, input: &Tensor, weights: &Tensor) -> Tensor {
    let (b, t) = input.dims2().unwrap();
    let logits = model
        .forward(input, &sequential_positions(b, t, &CPU).unwrap(), None)
        .unwrap();
    let s = shifted_cross_entropy(&logits, input, weights).unwrap();
    (s.loss_sum / s.tokens).unwrap()
}

#[test]
fn every_trainable_parameter_receives_a_nonzero_gradient() {
    for cfg in [tiny_all_kinds(), {
        let mut c = tiny_all_kinds();
        c.tie_word_embeddings = true;
        c.architecture = Architecture::Qwen2;
        c.o_bias = false;
        c.mlp_bias = false;
        c
    }] {
        let varmap = init_varmap(&cfg, 3, DType::F32, &CPU).unwrap();
        let model = build(&cfg, &varmap, DType::F32);
        let input = ids(&[&[1, 5, 7, 2, 9, 11, 3, 0], &[4, 4, 8, 15, 16, 23, 1, 2]]);
        let w = Tensor::ones((2, 8), DType::F32, &CPU).unwrap();
        let grads = mean_loss(&model, &input, &w).backward().unwrap();
        let vars = named_vars(&cfg, &varmap).unwrap();
        assert_eq!(vars.len(), cfg.parameter_shapes().len());
        for (name, var, _) in vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }
}

/// Sets element `i` of `var` to `value`.
fn set_element(var: &Var, i: usize, value: f64) {
    let shape = var.shape().clone();
    let mut v = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    v[i] = value;
    var.set(&Tensor::from_vec(v, shape, &CPU).unwrap()).unwrap();
}

#[test]
fn gradients_of_every_parameter_kind_match_central_finite_differences_in_f64() {
    let mut tied = tiny_all_kinds();
    tied.tie_word_embeddings = true;
    for cfg in [tiny_all_kinds(), tied] {
        let varmap = init_varmap(&cfg, 11, DType::F64, &CPU).unwrap();
        // Norm weights away from 1 and biases away from 0, so their gradients are generic.
        for (_, var, kind) in named_vars(&cfg, &varmap).unwrap() {
            if !kind.decays() {
                let noise = (Tensor::randn(0f64, 0.2, var.shape(), &CPU).unwrap()
                    + var.as_tensor())
                .unwrap();
                var.set(&noise).unwrap();
            }
        }
        let model = build(&cfg, &varmap, DType::F64);
        let input = ids(&[&[1, 5, 7, 2, 9, 11, 3], &[4, 4, 8, 15, 16, 23, 1]]);
        let w = Tensor::new(
            &[[0f64, 1., 1., 1., 1., 1., 1.], [0., 1., 1., 1., 1., 0., 0.]],
            &CPU,
        )
        .unwrap();
        let loss_at = || -> f64 { mean_loss(&model, &input, &w).to_scalar().unwrap() };
        let grads = mean_loss(&model, &input, &w).backward().unwrap();
        let h = 1e-6;
        for (name, var, _) in named_vars(&cfg, &varmap).unwrap() {
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let n = g.len();
            for i in [0, n / 3, n - 1] {
                let x = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[i];
                set_element(&var, i, x + h);
                let up = loss_at();
                set_element(&var, i, x - h);
                let down = loss_at();
                set_element(&var, i, x);
                let numeric = (up - down) / (2.0 * h);
                let err = (numeric - g[i]).abs() / (numeric.abs().max(g[i].abs()).max(1e-3));
                assert!(
                    err < 1e-5,
                    "{name}[{i}]: analytic {} vs numeric {numeric} (rel {err:e})",
                    g[i]
                );
            }
        }
    }
}

#[test]
fn loss_at_initialisation_is_close_to_ln_vocab() {
    let cfg = wick::model::preset("wick-llama-1m").unwrap();
    let varmap = init_varmap(&cfg, 0, DType::F32, &CPU).unwrap();
    let model = build(&cfg, &varmap, DType::F32);
    let row: Vec<u32> = (0..64u32)
        .map(|i| i.wrapping_mul(2654435761) % cfg.vocab_size as u32)
        .collect();
    let input = ids(&[&row, &row[..].iter().rev().copied().collect::<Vec<_>>()]);
    let w = Tensor::ones((2, 64), DType::F32, &CPU).unwrap();
    let loss: f32 = mean_loss(&model, &input, &w).to_scalar().unwrap();
    let ln_v = (cfg.vocab_size as f32).ln();
    // Logits at init have a spread of about 0.02·√hidden, which adds roughly σ²/2 to ln V; the
    // tied embedding adds a little more. A broken init or loss lands far away.
    assert!(
        (loss - ln_v).abs() < 0.15,
        "initial loss {loss} vs ln(vocab) {ln_v}"
    );
}

#[test]
fn tiny_model_overfits_one_batch() {
    let mut cfg = ModelConfig::llama(32, 32, 64, 2, 4, 2, 64);
    cfg.tie_word_embeddings = false;
    let varmap = init_varmap(&cfg, 5, DType::F32, &CPU).unwrap();
    let model = build(&cfg, &varmap, DType::F32);
    let vars = named_vars(&cfg, &varmap).unwrap();
    let mut opt = AdamW::new(
        vars.into_iter()
            .map(|(n, v, k)| (n, v, k.decays()))
            .collect(),
        AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let input = ids(&[
        &[3, 14, 15, 9, 26, 5, 31, 8, 27, 18, 2, 8],
        &[1, 1, 2, 3, 5, 8, 13, 21, 3, 24, 27, 19],
    ]);
    let w = Tensor::ones((2, 12), DType::F32, &CPU).unwrap();
    let mut first = None;
    let mut last = 0f32;
    for _ in 0..200 {
        let loss = mean_loss(&model, &input, &w);
        last = loss.to_scalar().unwrap();
        first.get_or_insert(last);
        opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
    }
    assert!(first.unwrap() > 3.0, "starts near ln 32");
    assert!(last < 0.1, "loss after 200 steps on one batch: {last}");
}

/// Loads a fixture folder written by tests/fixtures/make_reference.py.
fn fixture(name: &str) -> (ModelConfig, Llama, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let cfg = hf::read_config(&dir).unwrap();
    let weights = hf::load_weights(&dir, &cfg, DType::F32, &CPU).unwrap();
    let model = Llama::load(VarBuilder::from_tensors(weights, DType::F32, &CPU), &cfg).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (cfg, model, reference)
}

fn check_against_transformers(name: &str) {
    // Reference numbers: transformers' *ForCausalLM (eager attention, float32) on the same weights,
    // see tests/fixtures/make_reference.py and the "made_by" field of reference.json.
    let (_, model, r) = fixture(name);
    let rows: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    let input = Tensor::new(rows.clone(), &CPU).unwrap();
    let (b, t) = input.dims2().unwrap();
    let logits = model
        .forward(&input, &sequential_positions(b, t, &CPU).unwrap(), None)
        .unwrap();
    let expected: Vec<Vec<Vec<f32>>> = serde_json::from_value(r["logits"].clone()).unwrap();
    let expected = Tensor::new(expected, &CPU).unwrap();
    let max_diff = max_abs_diff(&logits, &expected) as f32;
    let scale: f32 = expected
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        max_diff < 1e-4 * scale.max(1.0),
        "{name}: logits differ by {max_diff} (scale {scale})"
    );
    let w = Tensor::ones((b, t), DType::F32, &CPU).unwrap();
    let s = shifted_cross_entropy(&logits, &input, &w).unwrap();
    let loss = s.loss_sum.to_scalar::<f32>().unwrap() as f64 / s.tokens;
    let ref_loss = r["loss"].as_f64().unwrap();
    assert!(
        (loss - ref_loss).abs() < 1e-5,
        "{name}: loss {loss} vs transformers {ref_loss}"
    );
    // Labels set to -100 in the reference are weight 0 here.
    let masked: Vec<Vec<i64>> = serde_json::from_value(r["masked_labels"].clone()).unwrap();
    let weights: Vec<Vec<f32>> = masked
        .iter()
        .map(|row| row.iter().map(|&l| if l < 0 { 0.0 } else { 1.0 }).collect())
        .collect();
    let s = shifted_cross_entropy(&logits, &input, &Tensor::new(weights, &CPU).unwrap()).unwrap();
    let loss = s.loss_sum.to_scalar::<f32>().unwrap() as f64 / s.tokens;
    let ref_loss = r["loss_masked"].as_f64().unwrap();
    assert!(
        (loss - ref_loss).abs() < 1e-5,
        "{name}: masked loss {loss} vs transformers {ref_loss}"
    );
}

#[test]
fn llama_gqa_logits_and_loss_match_transformers() {
    check_against_transformers("tiny-llama-gqa");
}

#[test]
fn qwen2_bias_logits_and_loss_match_transformers() {
    let (cfg, _, _) = fixture("tiny-qwen2-bias");
    assert!(cfg.qkv_bias && cfg.tie_word_embeddings && cfg.architecture == Architecture::Qwen2);
    check_against_transformers("tiny-qwen2-bias");
}

#[test]
fn hf_round_trip_gives_identical_logits() {
    let mut qwen = tiny_all_kinds();
    qwen.architecture = Architecture::Qwen2;
    qwen.o_bias = false;
    qwen.mlp_bias = false;
    qwen.tie_word_embeddings = true;
    for cfg in [tiny_all_kinds(), qwen] {
        let varmap = init_varmap(&cfg, 9, DType::F32, &CPU).unwrap();
        let model = build(&cfg, &varmap, DType::F32);
        let dir = tempfile::tempdir().unwrap();
        let weights: HashMap<String, Tensor> = wick::model::varmap_tensors(&varmap);
        hf::save_model_folder(dir.path(), &cfg, &weights).unwrap();
        let cfg2 = hf::read_config(dir.path()).unwrap();
        assert_eq!(cfg2, cfg);
        let loaded = hf::load_weights(dir.path(), &cfg2, DType::F32, &CPU).unwrap();
        let model2 =
            Llama::load(VarBuilder::from_tensors(loaded, DType::F32, &CPU), &cfg2).unwrap();
        let input = ids(&[&[1, 2, 3, 4, 5, 6]]);
        let pos = sequential_positions(1, 6, &CPU).unwrap();
        let a = model
            .forward(&input, &pos, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = model2
            .forward(&input, &pos, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
        // The metadata transformers requires.
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .unwrap()
                .get("format")
                .map(String::as_str),
            Some("pt")
        );
    }
}

#[test]
fn accumulated_micro_batches_equal_one_batch_normalised_by_window_tokens() {
    let cfg = tiny_all_kinds();
    let varmap = init_varmap(&cfg, 2, DType::F64, &CPU).unwrap();
    let model = build(&cfg, &varmap, DType::F64);
    let vars: Vec<Var> = named_vars(&cfg, &varmap)
        .unwrap()
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    let a = ids(&[&[1, 2, 3, 4, 5, 6, 7, 8]]);
    let b = ids(&[&[9, 10, 11, 0, 0, 0, 0, 0]]);
    let wa = Tensor::new(&[[0f64, 1., 1., 1., 1., 1., 1., 1.]], &CPU).unwrap(); // 7 labels
    let wb = Tensor::new(&[[0f64, 1., 1., 0., 0., 0., 0., 0.]], &CPU).unwrap(); // 2 labels (padded)
    let sums = |x: &Tensor, w: &Tensor| {
        let logits = model
            .forward(x, &sequential_positions(1, 8, &CPU).unwrap(), None)
            .unwrap();
        shifted_cross_entropy(&logits, x, w).unwrap().loss_sum
    };
    // One batch of both rows, mean over its 9 counted labels.
    let both = Tensor::cat(&[&a, &b], 0).unwrap();
    let wboth = Tensor::cat(&[&wa, &wb], 0).unwrap();
    let logits = model
        .forward(&both, &sequential_positions(2, 8, &CPU).unwrap(), None)
        .unwrap();
    let full = (shifted_cross_entropy(&logits, &both, &wboth)
        .unwrap()
        .loss_sum
        / 9.0)
        .unwrap();
    let g_full = full.backward().unwrap();
    // Two micro-batches, each divided by the window's 9 tokens, gradients summed.
    let mut acc = None;
    accumulate(
        &mut acc,
        (sums(&a, &wa) / 9.0).unwrap().backward().unwrap(),
        &vars,
    )
    .unwrap();
    accumulate(
        &mut acc,
        (sums(&b, &wb) / 9.0).unwrap().backward().unwrap(),
        &vars,
    )
    .unwrap();
    let acc = acc.unwrap();
    // The naive mean of per-micro-batch means, which over-weights the short row.
    let mut naive = None;
    accumulate(
        &mut naive,
        ((sums(&a, &wa) / 7.0).unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap(),
        &vars,
    )
    .unwrap();
    accumulate(
        &mut naive,
        ((sums(&b, &wb) / 2.0).unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap(),
        &vars,
    )
    .unwrap();
    let naive = naive.unwrap();
    let mut naive_differs = false;
    for v in &vars {
        let f = g_full.get(v.as_tensor()).unwrap();
        let d = max_abs_diff(f, acc.get(v.as_tensor()).unwrap());
        assert!(d < 1e-12, "accumulated gradient differs by {d}");
        let dn = max_abs_diff(f, naive.get(v.as_tensor()).unwrap());
        naive_differs |= dn > 1e-6;
    }
    assert!(naive_differs);
}

// ---- run_job: pretraining from scratch, resume, bad specs ------------------------------------

fn pretrain_spec(model: &str, extra: serde_json::Value) -> JobSpec {
    let mut h = serde_json::json!({
        "batch_size": 4, "max_seq_len": 32, "vocab_size": 300, "learning_rate": 3e-3,
        "max_steps": 10, "warmup_steps": 2, "eval_every": 5, "checkpoint_every": 3, "n_checkpoints": 2,
        "gradient_accumulation_steps": 2
    });
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "model": model, "training_file": "train.jsonl", "seed": 7,
        "method": {"type": "pretrain", "pretrain": {"hyperparameters": h}}
    }))
    .unwrap()
}

fn job(dir: &Path, spec: JobSpec, out: &str) -> TrainJob {
    TrainJob {
        spec,
        training_file: dir.join("train.jsonl"),
        validation_file: None,
        output_dir: dir.join(out),
        resume_from: None,
        device: CPU,
        base_model_name: None,
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run_step_for_step() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 300);
    let spec = pretrain_spec("wick-llama-1m", serde_json::json!({}));

    let mut full = RecordingProgress::default();
    let outcome = run_job(&job(dir.path(), spec.clone(), "full"), &mut full).unwrap();
    assert_eq!(outcome.steps_completed, 10);
    assert_eq!(full.steps.len(), 10);
    assert_eq!(full.steps[0].step, 1);
    let losses: Vec<f64> = full.steps.iter().map(|s| s.train_loss).collect();
    assert!(losses[9] < losses[0] - 0.5, "loss should fall: {losses:?}");
    assert!(
        !full.evals.is_empty()
            && full
                .evals
                .iter()
                .all(|e| (e.valid_perplexity - e.valid_loss.exp()).abs() < 1e-9)
    );
    // The export is a Hugging Face folder; only the newest n_checkpoints remain.
    for f in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.path().join("full").join(f).is_file(), "{f}");
    }
    let kept = wick::train::checkpoint::list(&dir.path().join("full/checkpoints"));
    assert_eq!(kept.len(), 2, "{kept:?}");

    // Pause after 4 steps, then resume from the pause checkpoint.
    let mut first = RecordingProgress {
        stop_after: Some((4, StopReason::Pause)),
        ..Default::default()
    };
    let paused = run_job(&job(dir.path(), spec.clone(), "split"), &mut first).unwrap();
    assert_eq!(paused.stopped, Some(Stopped::Paused));
    assert_eq!(paused.steps_completed, 4);
    let mut rest = RecordingProgress::default();
    let mut resumed_job = job(dir.path(), spec, "split");
    resumed_job.resume_from = paused.last_checkpoint.clone();
    run_job(&resumed_job, &mut rest).unwrap();
    assert_eq!(rest.steps.first().map(|s| s.step), Some(5));
    let split: Vec<f64> = first
        .steps
        .iter()
        .chain(&rest.steps)
        .map(|s| s.train_loss)
        .collect();
    assert_eq!(split.len(), 10);
    for (step, (a, b)) in losses.iter().zip(&split).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6,
            "step {}: uninterrupted {a} vs resumed {b}",
            step + 1
        );
    }
    let lr_a: Vec<f64> = full.steps.iter().map(|s| s.learning_rate).collect();
    let lr_b: Vec<f64> = first
        .steps
        .iter()
        .chain(&rest.steps)
        .map(|s| s.learning_rate)
        .collect();
    assert_eq!(lr_a, lr_b);
}

#[test]
fn bad_specs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 20);
    let err = |spec: JobSpec| {
        run_job(
            &job(dir.path(), spec, "out"),
            &mut RecordingProgress::default(),
        )
        .unwrap_err()
    };

    let e = err(pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"max_steps": 0}),
    ));
    assert!(
        matches!(&e, TrainError::Spec(s) if s.param.ends_with("max_steps")),
        "{e}"
    );

    let e = err(pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"max_seq_len": 4096}),
    ));
    assert!(
        matches!(&e, TrainError::Spec(s) if s.param.ends_with("max_seq_len")),
        "{e}"
    );
    assert!(
        e.to_string().contains("max_position_embeddings 1024"),
        "{e}"
    );

    let e = err(pretrain_spec("wick-llama-7b", serde_json::json!({})));
    assert!(matches!(e, TrainError::UnknownModel(_)));
    assert!(e.to_string().contains("wick-llama-10m"), "{e}");

    let mut spec = pretrain_spec("wick-llama-1m", serde_json::json!({}));
    spec.training_file = "nope.jsonl".into();
    let mut j = job(dir.path(), spec, "out");
    j.training_file = dir.path().join("nope.jsonl");
    let e = run_job(&j, &mut RecordingProgress::default()).unwrap_err();
    assert!(
        matches!(&e, TrainError::MissingFile(p) if p.ends_with("nope.jsonl")),
        "{e}"
    );

    let sft: JobSpec = serde_json::from_value(
        serde_json::json!({"model": "wick-llama-1m", "training_file": "train.jsonl"}),
    )
    .unwrap();
    assert!(matches!(err(sft), TrainError::Unsupported(_)));

    std::fs::write(
        dir.path().join("train.jsonl"),
        "{\"text\": \"fine\"}\n{\"txt\": 1}\n",
    )
    .unwrap();
    let e = err(pretrain_spec("wick-llama-1m", serde_json::json!({})));
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn exploding_loss_stops_the_job_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 100);
    let spec = pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"learning_rate": 1.0, "max_grad_norm": 1e6, "warmup_steps": 0, "max_steps": 40,
                           "gradient_accumulation_steps": 1, "lr_scheduler": "constant"}),
    );
    let mut p = RecordingProgress::default();
    let e = run_job(&job(dir.path(), spec, "out"), &mut p).unwrap_err();
    assert!(matches!(e, TrainError::Diverged { .. }), "{e}");
    assert!(p.steps.len() < 40);
}

#[test]
fn explicit_masks_match_the_fused_causal_path_and_packed_rows_match_separate_rows() {
    let cfg = tiny_all_kinds();
    let varmap = init_varmap(&cfg, 4, DType::F64, &CPU).unwrap();
    let model = build(&cfg, &varmap, DType::F64);
    let a: &[u32] = &[1, 5, 7, 2, 9];
    let b: &[u32] = &[4, 8, 15];
    let logits =
        |x: &Tensor, pos: &Tensor, mask: Option<&Tensor>| model.forward(x, pos, mask).unwrap();
    let max_diff = max_abs_diff;

    // The composite path with an explicit causal mask equals the fused causal softmax.
    let x = ids(&[a]);
    let pos = sequential_positions(1, 5, &CPU).unwrap();
    let causal = wick::model::llama::causal_mask(5, DType::F64, &CPU).unwrap();
    assert!(max_diff(&logits(&x, &pos, None), &logits(&x, &pos, Some(&causal))) < 1e-12);

    // SFT packing: [a ; b] in one row, positions restarting, block-diagonal causal mask, gives
    // the logits of a and b run on their own.
    let packed = ids(&[&[a, b].concat()]);
    let packed_pos = Tensor::new(&[[0u32, 1, 2, 3, 4, 0, 1, 2]], &CPU).unwrap();
    let mut m = vec![f64::NEG_INFINITY; 64];
    for i in 0..8 {
        for j in 0..=i {
            if (i < 5) == (j < 5) {
                m[i * 8 + j] = 0.0;
            }
        }
    }
    let mask = Tensor::from_vec(m, (1, 1, 8, 8), &CPU).unwrap();
    let out = logits(&packed, &packed_pos, Some(&mask));
    let alone_a = logits(&ids(&[a]), &sequential_positions(1, 5, &CPU).unwrap(), None);
    let alone_b = logits(&ids(&[b]), &sequential_positions(1, 3, &CPU).unwrap(), None);
    assert!(max_diff(&out.narrow(1, 0, 5).unwrap(), &alone_a) < 1e-12);
    assert!(max_diff(&out.narrow(1, 5, 3).unwrap(), &alone_b) < 1e-12);
}

#[test]
fn continued_pretraining_starts_from_a_hugging_face_folder() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 120);
    let spec = pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"max_steps": 10, "eval_every": 10}),
    );
    let mut base_progress = RecordingProgress::default();
    let first = run_job(&job(dir.path(), spec, "base"), &mut base_progress).unwrap();
    let base = first.model_dir.unwrap();
    // Continue from the exported folder: its tokenizer is reused and its weights are the start.
    let spec = pretrain_spec(
        base.to_str().unwrap(),
        serde_json::json!({"max_steps": 2, "eval_every": 1}),
    );
    let mut p = RecordingProgress::default();
    let out = run_job(&job(dir.path(), spec, "continued"), &mut p).unwrap();
    assert_eq!(out.steps_completed, 2);
    // It starts where the base left off, well below the from-scratch first step (about ln V).
    let scratch_first = base_progress.steps[0].train_loss;
    assert!(
        p.steps[0].train_loss < scratch_first - 0.5,
        "{} vs {scratch_first}",
        p.steps[0].train_loss
    );
    assert_eq!(
        std::fs::read(base.join("tokenizer.json")).unwrap(),
        std::fs::read(dir.path().join("continued/tokenizer.json")).unwrap()
    );
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama-gqa");
    let cfg = hf::read_config(&src).unwrap();
    let weights = hf::load_weights(&src, &cfg, DType::F32, &CPU).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), weights[*n].clone()))
            .collect();
        hf::save_weights(&dir.path().join(file), &shard).unwrap();
        for n in part {
            map.insert((*n).clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let loaded = hf::load_weights(dir.path(), &cfg, DType::F32, &CPU).unwrap();
    assert_eq!(loaded.len(), weights.len());
    for (k, v) in &weights {
        assert_eq!(
            loaded[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // A missing shard is an error, not a silently partial model.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert!(hf::load_weights(dir.path(), &cfg, DType::F32, &CPU).is_err());
}

/// Pretraining with activation recompute: the same losses, step for step, as without it.
#[test]
fn gradient_checkpointing_pretraining_matches_plain_step_for_step() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 120);
    let losses = |recompute: bool, out: &str| -> Vec<f64> {
        let spec = pretrain_spec(
            "wick-llama-1m",
            serde_json::json!({"max_steps": 4, "gradient_checkpointing": recompute}),
        );
        let mut progress = RecordingProgress::default();
        run_job(&job(dir.path(), spec, out), &mut progress).unwrap();
        progress.steps.iter().map(|s| s.train_loss).collect()
    };
    let (plain, recomputed) = (losses(false, "plain"), losses(true, "recomputed"));
    assert_eq!(plain.len(), 4);
    for (step, (a, b)) in plain.iter().zip(&recomputed).enumerate() {
        assert!((a - b).abs() <= 1e-6, "step {}: {a} vs {b}", step + 1);
    }
}

/// The mixed-precision mode trains like f32 (losses within 1% per step) where the processor has
/// bf16 dot products, and differs from it (the products really are bf16); elsewhere the job runs
/// f32, identically, and says so.
#[test]
fn bf16_precision_tracks_f32_or_says_it_runs_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 120);
    let run = |precision: &str, out: &str| {
        let spec = pretrain_spec(
            "wick-llama-1m",
            serde_json::json!({"max_steps": 8, "precision": precision}),
        );
        let mut progress = RecordingProgress::default();
        run_job(&job(dir.path(), spec, out), &mut progress).unwrap();
        progress
    };
    let (f32_run, bf16_run) = (run("f32", "f32"), run("bf16", "bf16"));
    let losses = |p: &RecordingProgress| p.steps.iter().map(|s| s.train_loss).collect::<Vec<_>>();
    let (a, b) = (losses(&f32_run), losses(&bf16_run));
    assert_eq!(a.len(), 8);
    let told = bf16_run
        .phases
        .iter()
        .any(|(p, _, _)| p == wick::train::BF16_UNAVAILABLE);
    if wick::model::bf16_gemm::available() {
        assert!(!told);
        assert_ne!(a, b, "bf16 products round their inputs");
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() / x < 0.01,
                "step {}: f32 {x} vs bf16 {y}",
                step + 1
            );
        }
    } else {
        assert!(told, "the job says it runs f32");
        assert_eq!(a, b);
    }
    assert!(f32_run.phases.is_empty());
    // TF32 is a GPU's mode for f32 products: on the CPU the job is the f32 job, to the bit.
    let tf32_run = run("tf32", "tf32");
    assert_eq!(losses(&tf32_run), a);
    assert!(tf32_run.phases.is_empty());
}

#[test]
fn rope_scaling_extends_the_context_and_is_written_back() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 200);
    // A base whose context is 16 positions.
    let spec = pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"max_seq_len": 16, "max_steps": 6, "eval_every": 6}),
    );
    let base = run_job(
        &job(dir.path(), spec, "base"),
        &mut RecordingProgress::default(),
    )
    .unwrap()
    .model_dir
    .unwrap();
    let cfg_path = base.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    v["max_position_embeddings"] = serde_json::json!(16);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let model = base.to_str().unwrap();

    // Rows of 64 tokens do not fit its context, and the error names the field.
    let long = serde_json::json!({"max_seq_len": 64, "max_steps": 4, "eval_every": 4,
        "checkpoint_every": 2});
    let err = run_job(
        &job(dir.path(), pretrain_spec(model, long.clone()), "refused"),
        &mut RecordingProgress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_seq_len"), "{err}");

    // With YaRN × 4 they do; the exported config carries the scaling and the new context.
    let mut h = long.clone();
    h["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0});
    let spec = pretrain_spec(model, h);
    let mut whole = RecordingProgress::default();
    let out = run_job(&job(dir.path(), spec.clone(), "yarn"), &mut whole).unwrap();
    assert_eq!(out.steps_completed, 4);
    assert!(whole.steps.iter().all(|s| s.train_loss.is_finite()));
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("yarn/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["max_position_embeddings"], 64);
    assert_eq!(written["rope_scaling"]["rope_type"], "yarn");
    assert_eq!(written["rope_scaling"]["factor"], 4.0);
    assert_eq!(
        written["rope_scaling"]["original_max_position_embeddings"],
        16
    );
    let read = hf::read_config(&dir.path().join("yarn")).unwrap();
    assert!(matches!(
        read.rope_scaling,
        Some(wick::model::RopeScaling::Yarn { factor, original_max_position_embeddings: 16, .. })
            if factor == 4.0
    ));

    // Resumed from its step-2 checkpoint (which holds the scaled config), it is not scaled twice:
    // the same losses as the uninterrupted run.
    let mut first = RecordingProgress {
        stop_after: Some((2, StopReason::Pause)),
        ..Default::default()
    };
    let paused = run_job(&job(dir.path(), spec.clone(), "split"), &mut first).unwrap();
    let mut resumed = job(dir.path(), spec, "split");
    resumed.resume_from = paused.last_checkpoint.clone();
    let mut rest = RecordingProgress::default();
    run_job(&resumed, &mut rest).unwrap();
    let split: Vec<f64> = first
        .steps
        .iter()
        .chain(&rest.steps)
        .map(|s| s.train_loss)
        .collect();
    let losses: Vec<f64> = whole.steps.iter().map(|s| s.train_loss).collect();
    assert_eq!(split.len(), losses.len());
    for (a, b) in losses.iter().zip(&split) {
        assert!((a - b).abs() <= 1e-6, "uninterrupted {a} vs resumed {b}");
    }

    // A model with one scaling does not take another on top.
    let mut h = long;
    h["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    let yarn_model = dir.path().join("yarn");
    let err = run_job(
        &job(
            dir.path(),
            pretrain_spec(yarn_model.to_str().unwrap(), h),
            "twice",
        ),
        &mut RecordingProgress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("rope_scaling"), "{err}");
}

/// Pretraining samples continue the beginnings of validation rows (their next tokens the
/// reference), or the job's own texts.
#[test]
fn pretraining_samples_continue_validation_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 300);
    let spec = pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"validation_split": 0.1, "eval_samples": 2, "eval_max_tokens": 6}),
    );
    let mut p = RecordingProgress::default();
    run_job(&job(dir.path(), spec, "docs"), &mut p).unwrap();
    assert_eq!(p.samples.len(), p.evals.len());
    let last = &p.samples.last().unwrap().samples;
    assert_eq!(last.len(), 2);
    for s in last {
        assert!(!s.prompt.is_empty() && s.reference.as_deref().is_some_and(|r| !r.is_empty()));
        assert!(s.tokens <= 6);
    }
    let spec = pretrain_spec(
        "wick-llama-1m",
        serde_json::json!({"eval_prompts": ["Tom saw"], "eval_max_tokens": 6}),
    );
    let mut p = RecordingProgress::default();
    run_job(&job(dir.path(), spec, "own"), &mut p).unwrap();
    let s = &p.samples.last().unwrap().samples[0];
    assert_eq!(
        (s.prompt.as_str(), s.reference.as_deref()),
        ("Tom saw", None)
    );
    // The corpus's grammar: after 10 steps the model continues with its words.
    assert!(!s.completion.trim().is_empty(), "{s:?}");
}

/// Each step reports the training process's resident memory and CPU use.
#[test]
fn steps_report_the_process_memory_and_cpu() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("train.jsonl"), 100);
    let mut p = RecordingProgress::default();
    let spec = pretrain_spec("wick-llama-1m", serde_json::json!({"max_steps": 3}));
    run_job(&job(dir.path(), spec, "proc"), &mut p).unwrap();
    for s in &p.steps {
        assert!(s.extra["process_rss_mib"] > 1.0, "{s:?}");
        let cpu = s.extra["process_cpu_percent"];
        // Up to every core of the machine, and working.
        assert!(cpu > 0.0 && cpu < 100.0 * 64.0, "{cpu}");
    }
}
