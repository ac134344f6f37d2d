//! Token counts of a dataset for a model's tokenizer, as the trainer would see it: documents
//! tokenised as pretraining does, conversations (OpenAI chat, ShareGPT, Alpaca) rendered with
//! the model's chat template and masked as SFT does (ChatML registered for a model without a
//! template, exactly as a job would), preference pairs as DPO renders each output after its
//! prompt. So a user sees, before training, how many tokens a file holds, how long its examples
//! are against the model's context, and how many tokens the loss will count.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat_tokens::register_chatml;
use super::dpo::data::conversation;
use super::job::TrainError;
use crate::chat::loss_mask::{ChatOutcome, Overlength, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::datasets::convert;
use crate::datasets::format::DatasetFormat;
use crate::datasets::stats::{HistogramBucket, LengthAcc, Summary};

/// Lines are tokenised in parallel batches of about this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// What [`TokenCounter::finish`] reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TokenStats {
    /// The model whose tokenizer counted.
    pub model: String,
    /// Examples counted (lines that are not valid examples are skipped, and counted apart).
    pub examples: u64,
    /// Tokens of every example together.
    pub total: u64,
    /// Tokens per example: a document (without the EOS pretraining adds), a rendered
    /// conversation, or the longer of a preference pair's two rendered rows.
    pub per_example: Summary,
    /// Examples per power-of-two bucket of `per_example`.
    pub length_histogram: Vec<HistogramBucket>,
    /// For conversations and pairs: tokens the loss counts per example (assistant tokens; a
    /// pair's preferred output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_per_example: Option<Summary>,
    /// The model's context length, and the examples longer than it (which a job truncates or
    /// drops, as its `overlength` says).
    pub context_length: u64,
    pub over_context: u64,
    /// Lines skipped because they are not valid examples.
    pub skipped: u64,
}

/// A model's tokenizer and, for conversations, its chat template, prepared as a job prepares
/// them.
pub struct ModelText {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    context_length: u64,
}

impl ModelText {
    /// From a folder with `tokenizer.json`, `tokenizer_config.json` (and `chat_template.jinja`
    /// when the model has one) and `config.json`. The files are copied to a scratch folder where
    /// ChatML is registered when the model has no template, as a supervised job would.
    pub fn from_folder(dir: &Path) -> Result<Self, TrainError> {
        let scratch = tempfile::tempdir().map_err(|source| TrainError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        crate::tokenizer::copy_files(dir, scratch.path())?;
        let mut tokenizer = crate::tokenizer::load(&scratch.path().join("tokenizer.json"))?;
        register_chatml(&mut tokenizer, scratch.path())?;
        let template = ChatTemplate::from_model_dir(scratch.path())
            .map_err(|e| TrainError::Unsupported(e.to_string()))?;
        let context_length = crate::model::hf::read_config(dir)?.max_position_embeddings as u64;
        Ok(ModelText {
            tokenizer,
            template,
            context_length,
        })
    }

    /// The tokenizer, ChatML tokens registered when the model has no template.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template a job renders conversations with.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// (tokens, trained tokens) of one line of `format`; `None` for a line that is not a valid
    /// example.
    fn count(&self, format: DatasetFormat, line: &[u8]) -> Option<(u64, Option<u64>)> {
        let value: Value = serde_json::from_slice(line).ok()?;
        match format {
            DatasetFormat::Text => {
                let text = value.get("text")?.as_str()?;
                let enc = self.tokenizer.encode_fast(text, false).ok()?;
                Some((enc.get_ids().len() as u64, None))
            }
            DatasetFormat::Preference => {
                let input = value.get("input")?;
                let prompt: Vec<TrainMessage> =
                    serde_json::from_value(input.get("messages")?.clone()).ok()?;
                let tools = input.get("tools");
                let mut longest = 0;
                let mut preferred = 0;
                for (i, key) in ["preferred_output", "non_preferred_output"]
                    .into_iter()
                    .enumerate()
                {
                    let output: Vec<TrainMessage> =
                        serde_json::from_value(value.get(key)?.clone()).ok()?;
                    let (n, trained) = self.chat_tokens(&conversation(&prompt, &output), tools)?;
                    longest = longest.max(n);
                    if i == 0 {
                        preferred = trained;
                    }
                }
                Some((longest, Some(preferred)))
            }
            _ => {
                let chat = convert::to_chat_line(value).ok()?;
                let messages: Vec<TrainMessage> =
                    serde_json::from_value(chat.get("messages")?.clone()).ok()?;
                let (n, trained) = self.chat_tokens(&messages, chat.get("tools"))?;
                Some((n, Some(trained)))
            }
        }
    }

    /// Tokens of a rendered conversation and those its loss counts.
    fn chat_tokens(&self, messages: &[TrainMessage], tools: Option<&Value>) -> Option<(u64, u64)> {
        let outcome = tokenize_chat(
            &self.tokenizer,
            &self.template,
            messages,
            tools,
            usize::MAX,
            Overlength::Truncate,
        )
        .ok()?;
        match outcome {
            ChatOutcome::Kept(ex) => {
                let trained = ex.loss_mask.iter().skip(1).filter(|&&m| m != 0).count();
                Some((ex.input_ids.len() as u64, trained as u64))
            }
            _ => None,
        }
    }
}

/// Counts a file fed in arbitrary chunks.
pub struct TokenCounter<'m> {
    model: &'m ModelText,
    name: String,
    format: DatasetFormat,
    buf: Vec<u8>,
    tokens: LengthAcc,
    trained: LengthAcc,
    has_trained: bool,
    examples: u64,
    over_context: u64,
    skipped: u64,
}

impl<'m> TokenCounter<'m> {
    /// A counter for lines of `format` with `model` (named `name` in the report).
    pub fn new(model: &'m ModelText, name: &str, format: DatasetFormat) -> Self {
        TokenCounter {
            model,
            name: name.to_string(),
            format,
            buf: Vec::new(),
            tokens: LengthAcc::EMPTY,
            trained: LengthAcc::EMPTY,
            has_trained: false,
            examples: 0,
            over_context: 0,
            skipped: 0,
        }
    }

    /// Adds the next bytes of the file.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BATCH_BYTES
            && let Some(end) = memchr::memrchr(b'\n', &self.buf)
        {
            let rest = self.buf.split_off(end + 1);
            let batch = std::mem::replace(&mut self.buf, rest);
            self.count_batch(&batch);
        }
    }

    /// Counts what is left and reports.
    pub fn finish(mut self) -> TokenStats {
        let batch = std::mem::take(&mut self.buf);
        self.count_batch(&batch);
        TokenStats {
            model: self.name,
            examples: self.examples,
            total: self.tokens.sum(),
            per_example: self.tokens.summary(self.examples),
            length_histogram: self.tokens.histogram(),
            trained_per_example: self
                .has_trained
                .then(|| self.trained.summary(self.examples)),
            context_length: self.model.context_length,
            over_context: self.over_context,
            skipped: self.skipped,
        }
    }

    fn count_batch(&mut self, batch: &[u8]) {
        let lines: Vec<&[u8]> = batch
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        let (model, format) = (self.model, self.format);
        let counts: Vec<Option<(u64, Option<u64>)>> =
            lines.par_iter().map(|l| model.count(format, l)).collect();
        for c in counts {
            match c {
                None => self.skipped += 1,
                Some((n, trained)) => {
                    self.examples += 1;
                    self.tokens.add(n);
                    if n > self.model.context_length {
                        self.over_context += 1;
                    }
                    if let Some(t) = trained {
                        self.has_trained = true;
                        self.trained.add(t);
                    }
                }
            }
        }
    }
}
