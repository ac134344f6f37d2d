//! A model loaded for inference, frozen, with its tokenizer, chat template and end-of-turn
//! tokens, and the generation loop that streams tokens out as they are chosen.

use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::sampler::Sampler;
use crate::chat::template::{ChatMessage, ChatTemplate, TemplateError};
use crate::model::ModelConfig;
use crate::model::hf::{self, HfError};
use crate::model::llama::{KvCache, Llama};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("the prompt has {0} tokens; this model reads at most {1}")]
    PromptTooLong(usize, usize),
}

/// Settings of one generation.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

pub struct LoadedModel {
    model: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    cfg: ModelConfig,
    /// Tokens that end the assistant's turn: EOS and the template's end-of-turn marker.
    stop_ids: Vec<u32>,
}

impl LoadedModel {
    /// Loads a Hugging Face folder written by the trainer (or any Llama-family folder) onto
    /// `device` (the serving process's: its first GPU when it has one).
    pub fn load(dir: &Path, device: crate::devices::DeviceId) -> Result<Self, InferError> {
        let device = device.open()?;
        let cfg = hf::read_config(dir)?;
        let weights = hf::load_weights(dir, &cfg, DType::F32, &device)?;
        let model = Llama::load(VarBuilder::from_tensors(weights, DType::F32, &device), &cfg)?;
        let tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
        let template = ChatTemplate::from_model_dir(dir)?;
        let stop_ids = crate::tokenizer::stop_ids(&tokenizer, cfg.eos_token_id);
        Ok(LoadedModel {
            model,
            tokenizer,
            template,
            cfg,
            stop_ids,
        })
    }

    /// The prompt for `messages`, rendered with the model's template and tokenised.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, InferError> {
        let text = self.template.render(messages, true)?;
        Ok(crate::tokenizer::encode(&self.tokenizer, &text)?)
    }

    /// A raw prompt, tokenised as it is (no template): what text completions continue.
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>, InferError> {
        Ok(crate::tokenizer::encode(&self.tokenizer, text)?)
    }

    /// Continues `prompt`, calling `on_text` with each new piece of text; `on_text` returning
    /// false stops early (the client went away).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, InferError> {
        let max_ctx = self.cfg.max_position_embeddings;
        if prompt.len() >= max_ctx {
            return Err(InferError::PromptTooLong(prompt.len(), max_ctx));
        }
        let device = self.model.device().clone();
        let mut sampler = Sampler::new(params.temperature, params.top_p, params.seed);
        let mut cache = KvCache::default();
        let mut completion: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        let budget = params.max_tokens.min(max_ctx - prompt.len());
        // The prompt goes through once; after that each step feeds only the newest token.
        let mut feed: Vec<u32> = prompt.to_vec();
        for _ in 0..budget {
            let input = Tensor::new(feed.as_slice(), &device)?.unsqueeze(0)?; // (1, Tn)
            let last = self.model.forward_cached(&input, &mut cache)?.squeeze(0)?; // (V)
            let next = sampler.pick(&last.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            if self.stop_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            feed = vec![next];
            completion.push(next);
            // Decode the whole completion each time so multi-byte characters split across
            // tokens come out whole; send only what is new.
            let decoded = self.tokenizer.decode(&completion, true).unwrap_or_default();
            let (cut, hit_stop) = match params
                .stop
                .iter()
                .filter_map(|s| decoded.find(s.as_str()))
                .min()
            {
                Some(i) => (i, true),
                None => (decoded.len(), false),
            };
            let fresh = decoded[..cut]
                .strip_prefix(text.as_str())
                .map(str::to_string);
            if let Some(piece) = fresh.filter(|p| !p.is_empty() && !p.ends_with('\u{FFFD}')) {
                text.push_str(&piece);
                if !on_text(&piece) {
                    break;
                }
            }
            if hit_stop {
                finish = FinishReason::Stop;
                break;
            }
        }
        Ok(Generation {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: completion.len(),
            finish_reason: finish,
        })
    }
}
