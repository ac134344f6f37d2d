//! ChatML for models that come without a chat template. When a supervised job's base model has no
//! `chat_template` (in `tokenizer_config.json` or `chat_template.jinja`), Wick renders ChatML; if
//! the tokenizer also lacks `<|im_start|>` / `<|im_end|>`, they are registered as special tokens
//! (so each is one token and `<|im_end|>` can be trained as the end of turn and stop generation),
//! the embeddings (and an untied LM head) grow by as many rows, initialised to the mean of the
//! existing rows (transformers' `mean_resizing` without its noise), and they are trained (LoRA jobs
//! train the two matrices whole, as PEFT's `modules_to_save`). The tokenizer files written with
//! the model carry the tokens and the template, so inference renders exactly what training did.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{Value, json};
use tokenizers::{AddedToken, Tokenizer};

use super::job::TrainError;
use crate::model::ModelConfig;
use crate::tokenizer::{CHATML_TEMPLATE, IM_END, IM_START, TokenizerError};

/// The weights that hold one row per token, by Hugging Face name.
pub const VOCAB_WEIGHTS: [&str; 2] = ["model.embed_tokens.weight", "lm_head.weight"];

/// Whether the model folder `dir` brings its own chat template.
pub fn has_chat_template(dir: &Path) -> bool {
    if dir.join("chat_template.jinja").is_file() {
        return true;
    }
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|c| !c["chat_template"].is_null())
}

/// For a model folder `dir` without a chat template: writes ChatML into its
/// `tokenizer_config.json` and adds the ChatML tokens the tokenizer lacks (saving `tokenizer.json`).
/// Returns the ids of the tokens added (none when the model has a template or the tokens).
pub fn register_chatml(tokenizer: &mut Tokenizer, dir: &Path) -> Result<Vec<u32>, TrainError> {
    if has_chat_template(dir) {
        return Ok(Vec::new());
    }
    let missing: Vec<&str> = [IM_START, IM_END]
        .into_iter()
        .filter(|t| tokenizer.token_to_id(t).is_none())
        .collect();
    let added_tokens: Vec<AddedToken> =
        missing.iter().map(|t| AddedToken::from(*t, true)).collect();
    tokenizer
        .add_special_tokens(added_tokens)
        .map_err(|e| TrainError::Unsupported(format!("adding the ChatML tokens: {e}")))?;
    let added: Vec<u32> = missing
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    if !added.is_empty() {
        let path = dir.join("tokenizer.json");
        tokenizer
            .save(&path, false)
            .map_err(|e| TokenizerError::Save {
                path: path.clone(),
                message: e.to_string(),
            })?;
    }
    let path = dir.join("tokenizer_config.json");
    let mut config: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    config["chat_template"] = json!(CHATML_TEMPLATE);
    if !config["added_tokens_decoder"].is_object() {
        config["added_tokens_decoder"] = json!({});
    }
    for (t, id) in missing.iter().zip(&added) {
        config["added_tokens_decoder"][id.to_string()] = json!({"content": t, "lstrip": false,
            "normalized": false, "rstrip": false, "single_word": false, "special": true});
    }
    let text = serde_json::to_string_pretty(&config).expect("JSON serialises") + "\n";
    std::fs::write(&path, text).map_err(|source| TrainError::Io { path, source })?;
    Ok(added)
}

/// Grows the vocabulary rows of `weights` to `vocab` (when the tokenizer has more tokens than the
/// model has rows), each new row the mean of the old ones; updates `cfg.vocab_size`. True when
/// anything grew.
pub fn grow_vocab(
    weights: &mut HashMap<String, Tensor>,
    cfg: &mut ModelConfig,
    vocab: usize,
) -> candle_core::Result<bool> {
    if vocab <= cfg.vocab_size {
        return Ok(false);
    }
    let extra = vocab - cfg.vocab_size;
    for name in VOCAB_WEIGHTS {
        if let Some(w) = weights.get(name) {
            // Grown rows train, in f32 (a QLoRA base may hold its embeddings in bf16).
            let w = w.to_dtype(candle_core::DType::F32)?;
            let mean = w.mean_keepdim(0)?; // (1, C)
            let rows = mean.repeat((extra, 1))?;
            let grown = Tensor::cat(&[&w, &rows], 0)?;
            weights.insert(name.to_string(), grown);
        }
    }
    cfg.vocab_size = vocab;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn new_rows_are_the_mean_of_the_old_ones_and_old_rows_stay() {
        let mut cfg = ModelConfig::llama(3, 2, 4, 1, 1, 1, 8);
        cfg.tie_word_embeddings = true;
        let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 9.]], &Device::Cpu).unwrap();
        let mut weights = HashMap::from([("model.embed_tokens.weight".to_string(), w)]);
        assert!(grow_vocab(&mut weights, &mut cfg, 5).unwrap());
        assert_eq!(cfg.vocab_size, 5);
        let rows = weights["model.embed_tokens.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![1., 2.],
                vec![3., 4.],
                vec![5., 9.],
                vec![3., 5.],
                vec![3., 5.]
            ]
        );
        assert!(!grow_vocab(&mut weights, &mut cfg, 5).unwrap(), "no-op");
    }

    #[test]
    fn chatml_tokens_are_added_once_and_saved_with_the_template() {
        let dir = tempfile::tempdir().unwrap();
        // A word-level tokenizer without any ChatML token, as many base models come.
        let vocab = [("plain", 0u32), ("text", 1), ("[UNK]", 2)]
            .into_iter()
            .map(|(t, i)| (t.to_string(), i))
            .collect();
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"eos_token": "[UNK]"}"#,
        )
        .unwrap();
        assert!(!has_chat_template(dir.path()));
        let added = register_chatml(&mut tok, dir.path()).unwrap();
        assert_eq!(added, vec![3, 4]);
        assert_eq!(tok.token_to_id(IM_END), Some(4));
        assert!(has_chat_template(dir.path()));
        let saved = crate::tokenizer::load(&dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(saved.token_to_id(IM_START), Some(3));
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["eos_token"], "[UNK]",
            "the rest of the config is kept"
        );
        assert_eq!(config["added_tokens_decoder"]["4"]["content"], IM_END);
        // The folder now has a template: nothing more is added.
        assert!(register_chatml(&mut tok, dir.path()).unwrap().is_empty());
    }
}
