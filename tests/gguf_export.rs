//! GGUF export of a model Wick trained: read back by Wick's own reader (metadata, tokenizer,
//! every tensor within its type's bound) for f16, q8_0 and q4_k_m, with an Ollama Modelfile
//! beside it; and read by the `gguf` Python package (`tests/fixtures/check_gguf.py
//! --reader-only`) when the test venv has it (`WICK_SDK_PYTHON`, as `.ci/run` sets; required
//! when `WICK_REQUIRE_SDK=1`). transformers' and llama.cpp's logits on the same files are
//! benchmark figures (docs/benchmarks.md), not part of the suite: they need PyTorch.

#[path = "common/chat_model.rs"]
mod chat_model;

use wick::model::gguf::{self, Quant};
use wick::model::gguf_export::export_folder;

#[test]
fn a_trained_model_exports_to_gguf_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("base");
    chat_model::model_dir(&model);
    let weights = chat_model::tensors(&model);
    let template = std::fs::read_to_string(model.join("tokenizer_config.json")).unwrap();
    let template: serde_json::Value = serde_json::from_str(&template).unwrap();
    for quant in [Quant::F16, Quant::Q8_0, Quant::Q4KM] {
        let out = dir.path().join(quant.as_str());
        let file = format!("m-{}.gguf", quant.as_str());
        let done = export_folder(&model, &out, &file, quant, "tiny").unwrap();
        let bytes = std::fs::read(&done.gguf).unwrap();
        assert_eq!(bytes.len() as u64, done.summary.bytes_written);
        let g = gguf::read_gguf(&bytes).unwrap();
        assert_eq!(
            g.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(g.get("general.name").unwrap().as_str(), Some("tiny"));
        assert_eq!(
            g.get("tokenizer.chat_template")
                .and_then(|v| v.as_str().map(str::to_string)),
            template["chat_template"].as_str().map(str::to_string)
        );
        // Every weight is in the file (the tied LM head once), within its type's bound.
        let embed = g.tensor_f32(&bytes, "token_embd.weight").unwrap();
        let original = weights["model.embed_tokens.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = embed
            .iter()
            .zip(&original)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let absmax = original.iter().fold(0f32, |m, v| m.max(v.abs()));
        let bound = match quant {
            Quant::F16 => absmax / 1024.0,
            Quant::Q8_0 => absmax / 127.0,
            Quant::Q4KM => absmax / 7.0,
        };
        assert!(worst <= bound, "{quant:?}: {worst} > {bound}");
        let modelfile = std::fs::read_to_string(&done.modelfile).unwrap();
        assert!(modelfile.contains(&format!("FROM ./{file}")), "{modelfile}");
        python_reads(&model, &done.gguf);
    }
}

/// The `gguf` package reads the file as Wick wrote it: hyperparameters, tensor types and every
/// weight within its bound, the chat template.
fn python_reads(model: &std::path::Path, file: &std::path::Path) {
    let Ok(python) = std::env::var("WICK_SDK_PYTHON") else {
        assert!(
            std::env::var("WICK_REQUIRE_SDK").is_err(),
            "WICK_REQUIRE_SDK is set but WICK_SDK_PYTHON is not"
        );
        eprintln!("SKIPPED the gguf package's check: no WICK_SDK_PYTHON");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check_gguf.py");
    let out = std::process::Command::new(python)
        .args([script, "--reader-only", "--quiet"])
        .arg(model)
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["problems"], serde_json::json!([]), "{result}");
    assert_eq!(result["chat_template_same"], true, "{result}");
}
