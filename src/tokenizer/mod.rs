//! Tokenizers through the `tokenizers` crate: a base model's `tokenizer.json`, or a byte-level BPE
//! trained from scratch on the training text for pretraining a preset.
//!
//! A trained tokenizer registers `<|endoftext|>` (BOS, EOS and document separator, as GPT-2 does),
//! `<|pad|>`, and the ChatML tokens `<|im_start|>` / `<|im_end|>`, so the same model can later be
//! fine-tuned on chats without growing its vocabulary.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Document separator, BOS and EOS of a trained tokenizer.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Padding token of a trained tokenizer.
pub const PAD: &str = "<|pad|>";
/// ChatML turn markers.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
/// The special tokens a trained tokenizer registers, in id order (0..4).
pub const SPECIAL_TOKENS: [&str; 4] = [ENDOFTEXT, PAD, IM_START, IM_END];

/// ChatML, the default chat template of a trained tokenizer (and of models that have none).
/// Assistant tool calls are written as Qwen2.5 writes them: `<tool_call>\n{function json}\n</tool_call>`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{% if message['content'] %}{{ message['content'] }}{% endif %}{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}{{ '<tool_call>\\n' + (call['function'] | tojson) + '\\n</tool_call>' }}{% endfor %}{% endif %}{{'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Why a tokenizer could not be loaded, trained or saved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("training the tokenizer failed: {0}")]
    Train(String),
    #[error("{path}: {message}")]
    Save { path: PathBuf, message: String },
    #[error("the tokenizer has no {0} token")]
    MissingToken(&'static str),
}

/// The token ids the trainer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
}

/// Loads a `tokenizer.json`.
pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Trains a byte-level BPE with `vocab_size` entries (special tokens included) on `texts`.
/// Deterministic for the same texts and size.
pub fn train_bpe<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer, TokenizerError>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let specials = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    // No prefix space: a document's first word is encoded as written, as GPT-2 does.
    let byte_level = ByteLevel::new(false, true, true);
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));
    tokenizer.with_post_processor(Some(byte_level));
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| TokenizerError::Train(e.to_string()))?;
    Ok(tokenizer)
}

/// Finds BOS/EOS/PAD: from the model's config ids when given, else by the usual token names.
pub fn special_ids(
    tokenizer: &Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
) -> Result<SpecialIds, TokenizerError> {
    let find = |names: &[&str]| names.iter().find_map(|n| tokenizer.token_to_id(n));
    let eos = eos
        .or_else(|| find(&[ENDOFTEXT, "</s>", "<|end_of_text|>", "<|eot_id|>", "<eos>"]))
        .ok_or(TokenizerError::MissingToken("EOS"))?;
    let bos = bos.or_else(|| find(&["<s>", "<|begin_of_text|>", "<bos>"]));
    let pad = pad
        .or_else(|| find(&[PAD, "<pad>", "<|finetune_right_pad_id|>"]))
        .unwrap_or(eos);
    Ok(SpecialIds { bos, eos, pad })
}

/// Writes `tokenizer.json` and a `tokenizer_config.json` naming the special tokens and ChatML as
/// the chat template, so transformers' `AutoTokenizer` loads the folder.
pub fn save_trained(
    tokenizer: &Tokenizer,
    dir: &Path,
    model_max_length: usize,
) -> Result<(), TokenizerError> {
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, false)
        .map_err(|e| TokenizerError::Save {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let added: serde_json::Map<String, Value> = SPECIAL_TOKENS
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t).map(|id| (id, t)))
        .map(|(id, t)| {
            (
                id.to_string(),
                json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": true}),
            )
        })
        .collect();
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "pad_token": PAD,
        "unk_token": null,
        "add_bos_token": false,
        "add_prefix_space": false,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": false,
        "added_tokens_decoder": added,
        "chat_template": CHATML_TEMPLATE,
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&config).expect("JSON serialises") + "\n",
    )
    .map_err(|e| TokenizerError::Save {
        path,
        message: e.to_string(),
    })
}

/// The tokens that end a generated turn: the end-of-turn markers of the common chat templates
/// (ChatML, Llama 3, Mistral) the tokenizer has, and the model's EOS.
pub fn stop_ids(tokenizer: &Tokenizer, eos: Option<u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = [IM_END, ENDOFTEXT, "<|eot_id|>", "<|end_of_text|>", "</s>"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    ids.extend(eos);
    ids
}

/// The tokenizer files a Hugging Face folder may have (the chat template among them).
pub const FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Copies the tokenizer files ([`FILES`]) a Hugging Face folder has from `from` to `to`.
pub fn copy_files(from: &Path, to: &Path) -> Result<(), TokenizerError> {
    for name in FILES {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).map_err(|e| TokenizerError::Save {
                path: to.join(name),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Token ids of `text` without special tokens added.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    tokenizer
        .encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| TokenizerError::Train(format!("encoding failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_registers_specials_and_round_trips_text() {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("The cat number {i} sat on the mat. The dog ran after the cat."))
            .collect();
        let tok = train_bpe(texts.iter(), 300).unwrap();
        for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(i as u32), "{t}");
        }
        assert!(tok.get_vocab_size(true) <= 300);
        let ids = encode(&tok, "The cat sat on the mat.").unwrap();
        // Merges were learned: far fewer tokens than bytes.
        assert!(ids.len() < 12, "{ids:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), "The cat sat on the mat.");
        // Special tokens in text are recognised as one token.
        let ids = encode(&tok, "hi<|endoftext|>").unwrap();
        assert_eq!(*ids.last().unwrap(), 0);
        let s = special_ids(&tok, None, None, None).unwrap();
        assert_eq!((s.eos, s.pad), (0, 1));
    }
}
