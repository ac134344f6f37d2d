//! Preference pairs for DPO: OpenAI's format read and tokenized, and pairs batched for the model.
//!
//! Each line is `{"input": {"messages": [...], "tools"?}, "preferred_output": [assistant
//! messages], "non_preferred_output": [assistant messages]}`. Each output is rendered after its
//! prompt with the model's chat template and masked exactly as SFT masks an assistant turn
//! ([`crate::chat::loss_mask`]): the output's content and its end-of-turn token count, the
//! prompt (assistant turns in it included) never does. A pair is kept when both outputs keep at
//! least one counted token after `overlength` (a conversation cut at `max_seq_len` keeps its
//! first tokens).
//!
//! A batch of `b` pairs is `2b` rows, the chosen outputs first and the rejected ones after, each
//! row one sequence padded on the right: with causal attention no real token sees the padding,
//! so no mask is needed and each row is computed as if alone.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::chat::loss_mask::{ChatExample, ChatOutcome, Overlength, TrainMessage, tokenize_chat};
use crate::chat::template::ChatTemplate;
use crate::train::data::{DataError, for_each_jsonl_line};
use crate::train::job::TrainError;
use crate::train::objective::Batch;

/// One tokenized pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub chosen: ChatExample,
    pub rejected: ChatExample,
}

impl PreferencePair {
    /// Counted tokens of an output (its mask's ones after the first position).
    pub fn counted(ex: &ChatExample) -> usize {
        ex.loss_mask.iter().skip(1).filter(|&&m| m != 0).count()
    }
}

/// What happened to the pairs of a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairStats {
    pub kept: usize,
    /// Pairs with an output cut at `max_seq_len`.
    pub truncated: usize,
    /// Left out: an output longer than `max_seq_len` with `overlength: drop`, or an output with
    /// no counted token left.
    pub dropped: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    input: Input,
    preferred_output: Vec<TrainMessage>,
    non_preferred_output: Vec<TrainMessage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    messages: Vec<TrainMessage>,
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as OpenAI's format has it; templates do not read it
    parallel_tool_calls: Option<bool>,
}

/// The prompt's messages (none of them trained) followed by `output` (all trained).
pub(crate) fn conversation(prompt: &[TrainMessage], output: &[TrainMessage]) -> Vec<TrainMessage> {
    let mut messages: Vec<TrainMessage> = prompt
        .iter()
        .cloned()
        .map(|mut m| {
            m.weight = Some(0.0);
            m
        })
        .collect();
    messages.extend(output.iter().cloned().map(|mut m| {
        m.weight = None;
        m
    }));
    messages
}

/// Checks an output list: non-empty, assistant messages only.
fn check_output(name: &str, output: &[TrainMessage]) -> Result<(), String> {
    if output.is_empty() {
        return Err(format!("{name} must hold at least one assistant message"));
    }
    if let Some((i, m)) = output
        .iter()
        .enumerate()
        .find(|(_, m)| m.role != "assistant")
    {
        return Err(format!(
            "{name}[{i}] has role {:?}; outputs are assistant messages",
            m.role
        ));
    }
    Ok(())
}

/// Reads a preference JSONL file and tokenizes every pair; also the (1-based) line of each pair
/// kept.
pub fn read_preference_file(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_seq_len: usize,
    overlength: Overlength,
) -> Result<(Vec<PreferencePair>, PairStats, Vec<usize>), TrainError> {
    let mut pairs = Vec::new();
    let mut stats = PairStats::default();
    let mut lines = Vec::new();
    for_each_jsonl_line(path, |n, line| {
        let err = |m: String| TrainError::Data(DataError::line(path, n, m));
        let parsed: Line = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        if parsed.input.messages.is_empty() {
            return Err(err("input.messages must not be empty".into()));
        }
        check_output("preferred_output", &parsed.preferred_output).map_err(err)?;
        check_output("non_preferred_output", &parsed.non_preferred_output).map_err(err)?;
        let tokenize = |output: &[TrainMessage]| {
            tokenize_chat(
                tokenizer,
                template,
                &conversation(&parsed.input.messages, output),
                parsed.input.tools.as_ref(),
                max_seq_len,
                overlength,
            )
            .map_err(|e| err(e.to_string()))
        };
        match (
            tokenize(&parsed.preferred_output)?,
            tokenize(&parsed.non_preferred_output)?,
        ) {
            (ChatOutcome::Kept(chosen), ChatOutcome::Kept(rejected)) => {
                stats.kept += 1;
                stats.truncated += usize::from(chosen.truncated || rejected.truncated);
                pairs.push(PreferencePair { chosen, rejected });
                lines.push(n);
            }
            _ => stats.dropped += 1,
        }
        Ok(())
    })?;
    Ok((pairs, stats, lines))
}

/// `pairs` as one batch of `2·len` rows (chosen first, then rejected), padded on the right with
/// `pad`; label weights 1 on each output's counted tokens.
pub(crate) fn collate_pairs(
    pairs: &[&PreferencePair],
    pad: u32,
    device: &Device,
) -> Result<Batch, TrainError> {
    let rows: Vec<&ChatExample> = pairs
        .iter()
        .map(|p| &p.chosen)
        .chain(pairs.iter().map(|p| &p.rejected))
        .collect();
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(1);
    let n = rows.len();
    let (mut ids, mut pos, mut weights) = (
        Vec::with_capacity(n * t),
        Vec::with_capacity(n * t),
        Vec::with_capacity(n * t),
    );
    let (mut counted, mut real) = (0, 0);
    for r in &rows {
        let len = r.input_ids.len();
        real += len;
        ids.extend_from_slice(&r.input_ids);
        ids.extend(std::iter::repeat_n(pad, t - len));
        pos.extend(0..t as u32);
        for (p, &m) in r.loss_mask.iter().enumerate() {
            // Position 0 is never a label: nothing predicts it.
            let w = u8::from(p > 0 && m != 0);
            counted += usize::from(w);
            weights.push(f32::from(w));
        }
        weights.extend(std::iter::repeat_n(0f32, t - len));
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (n, t), device)?,
        positions: Tensor::from_vec(pos, (n, t), device)?,
        label_weights: Tensor::from_vec(weights, (n, t), device)?.to_dtype(DType::F32)?,
        mask: None,
        counted_tokens: counted,
        input_tokens: real,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], mask: &[u8]) -> ChatExample {
        ChatExample {
            input_ids: ids.to_vec(),
            loss_mask: mask.to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn pairs_collate_chosen_first_and_pad_right() {
        let a = PreferencePair {
            chosen: ex(&[1, 5, 6, 2], &[0, 0, 1, 1]),
            rejected: ex(&[1, 5, 7, 8, 2], &[0, 0, 1, 1, 1]),
        };
        let b = PreferencePair {
            chosen: ex(&[1, 9, 2], &[1, 1, 1]),
            rejected: ex(&[1, 9, 3], &[0, 1, 1]),
        };
        let batch = collate_pairs(&[&a, &b], 0, &Device::Cpu).unwrap();
        let ids = batch.input_ids.to_vec2::<u32>().unwrap();
        assert_eq!(
            ids,
            vec![
                vec![1, 5, 6, 2, 0],
                vec![1, 9, 2, 0, 0],
                vec![1, 5, 7, 8, 2],
                vec![1, 9, 3, 0, 0]
            ]
        );
        let w = batch.label_weights.to_vec2::<f32>().unwrap();
        // The first position never counts, even when its mask says 1.
        assert_eq!(w[1], vec![0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(w[2], vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(batch.counted_tokens, 2 + 2 + 3 + 2);
        assert_eq!(batch.input_tokens, 4 + 3 + 5 + 3);
        assert_eq!(PreferencePair::counted(&b.chosen), 2);
        assert!(batch.mask.is_none());
        assert_eq!(
            batch.positions.to_vec2::<u32>().unwrap()[3],
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn the_prompt_never_trains_and_the_output_always_does() {
        let prompt = vec![
            TrainMessage::new("user", "q"),
            TrainMessage::new("assistant", "earlier"),
            TrainMessage::new("user", "again"),
        ];
        let mut out = TrainMessage::new("assistant", "a");
        out.weight = Some(0.0);
        let msgs = conversation(&prompt, &[out]);
        let trained: Vec<bool> = msgs.iter().map(TrainMessage::trained).collect();
        assert_eq!(trained, vec![false, false, false, true]);
        assert!(check_output("preferred_output", &[]).is_err());
        assert!(
            check_output("x", &[TrainMessage::new("user", "no")])
                .unwrap_err()
                .contains("x[0]")
        );
    }
}
