//! Sample generations during training: at each evaluation, the model being trained answers a
//! fixed set of prompts greedily (deterministic: the same weights give the same answers, so the
//! answers change only as the model learns), and the job reports them beside its metrics.
//!
//! The prompts are the job's `eval_prompts` (a user message each for the chat methods, a text to
//! continue for pretraining), else the first `eval_samples` validation examples: a conversation
//! up to its last assistant turn, which is the reference; a preference pair's prompt, its
//! preferred output the reference; a validation row's first tokens, its next tokens the
//! reference.

use std::path::Path;
use std::time::Instant;

use candle_core::{D, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::data::DataError;
use super::job::TrainError;
use super::progress::{Sample, SampleSet};
use crate::chat::template::{ChatMessage, ChatTemplate};
use crate::datasets::convert;
use crate::model::Llama;
use crate::model::llama::KvCache;

/// How many validation examples give prompts when the job names none.
pub const DEFAULT_SAMPLES: usize = 3;
/// Tokens each answer may have.
pub const DEFAULT_MAX_TOKENS: usize = 64;
/// Tokens of a validation row a pretraining prompt shows, and of its continuation the
/// reference shows.
const DOC_PROMPT_TOKENS: usize = 16;
const DOC_REFERENCE_TOKENS: usize = 32;

/// One prompt, ready for the model.
struct Prompt {
    shown: String,
    ids: Vec<u32>,
    reference: Option<String>,
}

/// A job's sample prompts and how to answer them.
pub struct SamplePrompts {
    prompts: Vec<Prompt>,
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    max_new: usize,
    context: usize,
}

impl SamplePrompts {
    fn new(
        prompts: Vec<Prompt>,
        tokenizer: &Tokenizer,
        eos: Option<u32>,
        max_new: usize,
        context: usize,
    ) -> Option<Self> {
        (!prompts.is_empty()).then(|| SamplePrompts {
            stop_ids: crate::tokenizer::stop_ids(tokenizer, eos),
            tokenizer: tokenizer.clone(),
            prompts,
            max_new,
            context,
        })
    }

    /// Chat prompts: each of `user` as one user message, else the first `count` conversations of
    /// the chat (ShareGPT, Alpaca) file `path` (of its `lines`, 1-based, when given) up to their
    /// last assistant turn.
    pub fn for_chats(
        user: &[String],
        path: &Path,
        lines: Option<&[usize]>,
        count: usize,
        tokenizer: &Tokenizer,
        template: &ChatTemplate,
        (eos, max_new, context): (Option<u32>, usize, usize),
    ) -> Result<Option<Self>, TrainError> {
        let conversations = if user.is_empty() {
            first_lines(path, lines, count, |line| {
                let chat = convert::to_chat_line(line).ok()?;
                let messages: Vec<ChatMessage> =
                    serde_json::from_value(chat.get("messages")?.clone()).ok()?;
                let last = messages.iter().rposition(|m| m.role == "assistant")?;
                let reference = messages[last].content.clone();
                Some((messages[..last].to_vec(), Some(reference)))
            })?
        } else {
            user.iter()
                .map(|u| (vec![ChatMessage::new("user", u.as_str())], None))
                .collect()
        };
        let prompts = conversations
            .into_iter()
            .filter_map(|(messages, reference)| {
                chat_prompt(&messages, reference, tokenizer, template)
            })
            .collect();
        Ok(Self::new(prompts, tokenizer, eos, max_new, context))
    }

    /// Preference prompts: each of `user` as one user message, else the first `count` pairs of
    /// `path` (of its `lines`, when given), their preferred output the reference.
    pub fn for_pairs(
        user: &[String],
        path: &Path,
        lines: Option<&[usize]>,
        count: usize,
        tokenizer: &Tokenizer,
        template: &ChatTemplate,
        settings: (Option<u32>, usize, usize),
    ) -> Result<Option<Self>, TrainError> {
        if !user.is_empty() {
            return Self::for_chats(user, path, lines, count, tokenizer, template, settings);
        }
        let (eos, max_new, context) = settings;
        let pairs = first_lines(path, lines, count, |line| {
            let messages: Vec<ChatMessage> =
                serde_json::from_value(line.get("input")?.get("messages")?.clone()).ok()?;
            let reference = line
                .get("preferred_output")?
                .as_array()?
                .iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            Some((messages, Some(reference)))
        })?;
        let prompts = pairs
            .into_iter()
            .filter_map(|(m, r)| chat_prompt(&m, r, tokenizer, template))
            .collect();
        Ok(Self::new(prompts, tokenizer, eos, max_new, context))
    }

    /// Pretraining prompts: each of `texts` to continue, else the first tokens of the first
    /// `count` validation rows, their next tokens the reference.
    pub fn for_documents(
        texts: &[String],
        rows: &[&[u32]],
        count: usize,
        tokenizer: &Tokenizer,
        (eos, max_new, context): (Option<u32>, usize, usize),
    ) -> Option<Self> {
        let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
        let prompts = if texts.is_empty() {
            rows.iter()
                .take(count)
                .filter(|r| r.len() > DOC_PROMPT_TOKENS)
                .map(|r| {
                    let ids = r[..DOC_PROMPT_TOKENS].to_vec();
                    let end = r.len().min(DOC_PROMPT_TOKENS + DOC_REFERENCE_TOKENS);
                    Prompt {
                        shown: decode(&ids),
                        reference: Some(decode(&r[DOC_PROMPT_TOKENS..end])),
                        ids,
                    }
                })
                .collect()
        } else {
            texts
                .iter()
                .filter_map(|t| {
                    let ids = crate::tokenizer::encode(tokenizer, t).ok()?;
                    (!ids.is_empty()).then(|| Prompt {
                        shown: t.clone(),
                        ids,
                        reference: None,
                    })
                })
                .collect()
        };
        Self::new(prompts, tokenizer, eos, max_new, context)
    }

    /// The model's greedy answer to every prompt (a pass without gradients, through a KV cache).
    /// Prompts of the same length are answered together as one batch (pretraining's default
    /// prompts all are): a small model's step costs about the same for three rows as for one.
    pub fn generate(&self, net: &Llama, step: u64) -> Result<SampleSet, TrainError> {
        let started = Instant::now();
        // A training net's RoPE tables cover its sequence length, which may be below the model's
        // context.
        let context = self.context.min(net.max_positions());
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, p) in self.prompts.iter().enumerate() {
            if p.ids.len() >= context {
                continue;
            }
            match groups
                .iter_mut()
                .find(|g| self.prompts[g[0]].ids.len() == p.ids.len())
            {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        let mut answers: Vec<Option<Sample>> = vec![None; self.prompts.len()];
        for group in groups {
            let budget = self.max_new.min(context - self.prompts[group[0]].ids.len());
            let rows: Vec<&[u32]> = group
                .iter()
                .map(|&i| self.prompts[i].ids.as_slice())
                .collect();
            for (&i, (out, stopped)) in group.iter().zip(self.greedy(net, &rows, budget)?) {
                let p = &self.prompts[i];
                answers[i] = Some(Sample {
                    prompt: p.shown.clone(),
                    reference: p.reference.clone(),
                    completion: self.tokenizer.decode(&out, true).unwrap_or_default(),
                    tokens: out.len(),
                    stopped,
                });
            }
        }
        Ok(SampleSet {
            step,
            samples: answers.into_iter().flatten().collect(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Greedy continuations of `rows` (all of one length) as one batch, up to `budget` tokens
    /// each: each row's tokens and whether it ended on a stop token. A row that has stopped is
    /// still fed (its tokens are dropped) until every row has.
    fn greedy(
        &self,
        net: &Llama,
        rows: &[&[u32]],
        budget: usize,
    ) -> Result<Vec<(Vec<u32>, bool)>, TrainError> {
        let device = net.device();
        let mut cache = KvCache::default();
        let mut feed = Tensor::new(rows.concat(), device)?.reshape((rows.len(), ()))?; // (B, T)
        let mut done: Vec<(Vec<u32>, bool)> = vec![(Vec::new(), false); rows.len()];
        for _ in 0..budget {
            let logits = net.forward_cached(&feed, &mut cache)?.detach(); // (B, V)
            let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            for ((out, stopped), &token) in done.iter_mut().zip(&next) {
                if *stopped {
                    continue;
                }
                if self.stop_ids.contains(&token) {
                    *stopped = true;
                } else {
                    out.push(token);
                }
            }
            if done.iter().all(|(_, stopped)| *stopped) {
                break;
            }
            feed = Tensor::new(next, device)?.unsqueeze(1)?; // (B, 1)
        }
        Ok(done)
    }
}

/// A conversation rendered for generation (the template's assistant prefix added); what is shown
/// is its last user message.
fn chat_prompt(
    messages: &[ChatMessage],
    reference: Option<String>,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
) -> Option<Prompt> {
    let shown = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())?;
    let text = template.render(messages, true).ok()?;
    let ids = crate::tokenizer::encode(tokenizer, &text).ok()?;
    Some(Prompt {
        shown,
        ids,
        reference,
    })
}

/// What `take` makes of the first lines of `path` it accepts (among `only`, 1-based, when
/// given), up to `count`.
fn first_lines<T>(
    path: &Path,
    only: Option<&[usize]>,
    count: usize,
    mut take: impl FnMut(Value) -> Option<T>,
) -> Result<Vec<T>, TrainError> {
    use std::io::BufRead;
    let io = |source| {
        TrainError::Data(DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        if out.len() >= count || only.is_some_and(|l| l.last().is_none_or(|&last| i + 1 > last)) {
            break;
        }
        let line = line.map_err(io)?;
        if only.is_some_and(|l| l.binary_search(&(i + 1)).is_err()) {
            continue;
        }
        let line = if i == 0 {
            crate::datasets::bom::strip_bom_str(&line)
        } else {
            &line
        };
        if let Some(t) = serde_json::from_str(line).ok().and_then(&mut take) {
            out.push(t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::model::{ModelConfig, init_varmap};

    /// A random two-layer Llama (its answers are arbitrary but deterministic) and a tokenizer of
    /// its vocabulary's size.
    fn model_and_tokenizer() -> (Llama, Tokenizer) {
        let texts: Vec<String> = (0..40)
            .map(|i| format!("the cat {i} sat on a mat {i}"))
            .collect();
        let tokenizer = crate::tokenizer::train_bpe(texts.iter(), 120).unwrap();
        let mut cfg = ModelConfig::llama(tokenizer.get_vocab_size(true), 32, 64, 2, 4, 2, 64);
        cfg.initializer_range = 0.5;
        let varmap = init_varmap(&cfg, 9, DType::F32, &Device::Cpu).unwrap();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        (Llama::load(vb, &cfg).unwrap(), tokenizer)
    }

    fn prompts(tokenizer: &Tokenizer, rows: &[Vec<u32>], stop: Vec<u32>) -> SamplePrompts {
        let mut p = SamplePrompts::new(
            rows.iter()
                .map(|ids| Prompt {
                    shown: format!("{ids:?}"),
                    ids: ids.clone(),
                    reference: None,
                })
                .collect(),
            tokenizer,
            None,
            12,
            64,
        )
        .unwrap();
        p.stop_ids = stop;
        p
    }

    /// Prompts answered together in one batch get exactly the answers each gets alone, a row that
    /// stops early included, and come back in their order whatever their lengths.
    #[test]
    fn batched_answers_equal_one_at_a_time() {
        let (net, tokenizer) = model_and_tokenizer();
        let rows: Vec<Vec<u32>> = vec![
            vec![5, 9, 14, 3],
            vec![7, 7, 21, 30],
            vec![11, 2],
            vec![40, 8, 19, 25],
        ];
        let alone = |stop: &[u32]| -> Vec<Sample> {
            rows.iter()
                .map(|r| {
                    let p = prompts(&tokenizer, std::slice::from_ref(r), stop.to_vec());
                    p.generate(&net, 1).unwrap().samples.remove(0)
                })
                .collect()
        };
        // Without stops, every answer runs to the budget; then the first row's fourth token
        // becomes a stop token, so that row ends early while the others (may) go on.
        let free = alone(&[]);
        assert!(free.iter().all(|s| s.tokens == 12 && !s.stopped));
        let p = prompts(&tokenizer, &rows, vec![]);
        let (out, _) = &p.greedy(&net, &[rows[0].as_slice()], 12).unwrap()[0];
        let stop = vec![out[3]];
        for stop in [vec![], stop] {
            let expected = alone(&stop);
            let together = prompts(&tokenizer, &rows, stop.clone())
                .generate(&net, 1)
                .unwrap();
            assert_eq!(together.samples, expected, "stop ids {stop:?}");
        }
        let stopped = alone(&[out[3]]);
        assert!(
            stopped[0].stopped && stopped[0].tokens <= 3,
            "{:?}",
            stopped[0]
        );
    }
}
