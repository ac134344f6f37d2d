//! Assistant-only loss masks for supervised fine-tuning.
//!
//! A conversation is rendered with the model's own chat template (the same text the model sees at
//! inference), tokenized once, and every token is marked 1 (trained) or 0 (context only). Trained
//! tokens are the content of each assistant message whose `weight` is not 0, plus the template's
//! end-of-turn marker that follows that content (`<|im_end|>` for ChatML, `<|eot_id|>` for
//! Llama 3, ...), so the model learns to stop. System, user and tool messages and the template's
//! own text (role headers, separators) are never trained on.
//!
//! Where a message's content lands in the rendered text is found without guessing: the template is
//! rendered once with a unique placeholder in place of each content, and the placeholder positions
//! give the spans. Substituting the contents back must reproduce the real rendering exactly (as is,
//! or trimmed for templates that apply `| trim`); otherwise the example is refused rather than
//! masked wrongly. Character spans map to tokens through the tokenizer's byte offsets.

use std::collections::HashSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::template::{ChatMessage, ChatTemplate, TemplateError};

/// What to do with a conversation longer than the row; the job specification's `overlength`
/// converts into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlength {
    /// Keep the first `max_seq_len` tokens (and train on the assistant tokens among them).
    Truncate,
    /// Leave the conversation out.
    Drop,
}

/// One message of a training conversation, as a chat JSONL line holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMessage {
    pub role: String,
    /// `null` (an assistant message that only calls tools) reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// 0 excludes an assistant message from the loss; absent or 1 trains on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// OpenAI's `tool_calls` of an assistant message, rendered by the template and trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl TrainMessage {
    /// A message with no explicit weight.
    pub fn new(role: &str, content: &str) -> Self {
        TrainMessage {
            role: role.into(),
            content: content.into(),
            weight: None,
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }

    /// Whether this message's tokens are trained on.
    pub fn trained(&self) -> bool {
        self.role == "assistant" && self.weight != Some(0.0)
    }
}

/// One tokenized conversation: ids and, per token, 1 when the token is a training target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatExample {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    /// Whether the conversation was cut at `max_seq_len`.
    pub truncated: bool,
}

/// Why a conversation could not be tokenized.
#[derive(Debug, thiserror::Error)]
pub enum LossMaskError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error(
        "the chat template transforms message contents in a way that cannot be located \
         (message {0})"
    )]
    Unlocatable(usize),
}

/// Counts of what happened to examples over a dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Examples kept.
    pub kept: usize,
    /// Longer than `max_seq_len` and cut (`overlength: truncate`).
    pub truncated: usize,
    /// Longer than `max_seq_len` and dropped (`overlength: drop`).
    pub dropped: usize,
    /// Dropped because no trained token was left (all weights 0, or cut away by truncation).
    pub no_trainable: usize,
}

impl ChatStats {
    /// Records the outcome of one [`tokenize_chat`] call.
    pub fn record(&mut self, outcome: &ChatOutcome) {
        match outcome {
            ChatOutcome::Kept(ex) => {
                self.kept += 1;
                self.truncated += usize::from(ex.truncated);
            }
            ChatOutcome::Overlength => self.dropped += 1,
            ChatOutcome::NoTrainableTokens => self.no_trainable += 1,
        }
    }
}

/// What [`tokenize_chat`] made of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutcome {
    Kept(ChatExample),
    /// Longer than `max_seq_len` with `overlength: drop`.
    Overlength,
    /// No token to train on (after truncation, if any).
    NoTrainableTokens,
}

impl ChatOutcome {
    /// The example, when one was kept.
    pub fn example(self) -> Option<ChatExample> {
        match self {
            ChatOutcome::Kept(ex) => Some(ex),
            _ => None,
        }
    }
}

/// Placeholder for message `i`: private-use characters no template or real text produces.
fn placeholder(i: usize) -> String {
    format!("\u{E000}wick{i}\u{E001}")
}

/// Renders `messages` and returns the text plus each message's trained span (byte offsets): its
/// content, or for an assistant message that calls tools, everything the template writes for it
/// after the assistant's header (content, calls and end-of-turn marker).
pub fn render_with_spans(
    template: &ChatTemplate,
    messages: &[TrainMessage],
    tools: Option<&serde_json::Value>,
) -> Result<(String, Vec<Range<usize>>), LossMaskError> {
    let as_chat = |content: &dyn Fn(usize, &TrainMessage) -> String| -> Vec<ChatMessage> {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage {
                role: m.role.clone(),
                content: content(i, m),
                tool_calls: m.tool_calls.clone(),
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
            .collect()
    };
    let render = |msgs: &[ChatMessage], gen_prompt: bool| {
        template.render_with_tools(msgs, gen_prompt, tools)
    };
    let real_msgs = as_chat(&|_, m| m.content.clone());
    let real = render(&real_msgs, false)?;
    let marked = render(&as_chat(&|i, _| placeholder(i)), false)?;
    let (real, mut spans) = content_spans(messages, &real, &marked)?;
    // Tool calls: the text message i adds after the assistant header, found by rendering the
    // conversation up to it (with the generation prompt) and through it.
    for (i, m) in messages.iter().enumerate() {
        if m.tool_calls.is_none() || m.role != "assistant" {
            continue;
        }
        let head = render(&real_msgs[..i], true)?;
        let through = render(&real_msgs[..=i], false)?;
        if !(through.starts_with(&head) && real.starts_with(&through)) {
            return Err(LossMaskError::Unlocatable(i));
        }
        spans[i] = head.len()..through.trim_end().len();
    }
    Ok((real, spans))
}

/// Each message's content span in `real`, found from `marked` (the rendering with placeholders).
fn content_spans(
    messages: &[TrainMessage],
    real: &str,
    marked: &str,
) -> Result<(String, Vec<Range<usize>>), LossMaskError> {
    let real = real.to_string();
    // Contents as rendered: as given, or trimmed (Llama 3 applies `| trim`).
    let variants: [fn(&str) -> &str; 2] = [|s| s, str::trim];
    for variant in variants {
        let mut text = String::with_capacity(real.len());
        let mut spans = Vec::with_capacity(messages.len());
        let mut rest = marked;
        let mut ok = true;
        for (i, m) in messages.iter().enumerate() {
            let ph = placeholder(i);
            let Some(at) = rest.find(&ph) else {
                ok = false;
                break;
            };
            text.push_str(&rest[..at]);
            let content = variant(&m.content);
            spans.push(text.len()..text.len() + content.len());
            text.push_str(content);
            rest = &rest[at + ph.len()..];
        }
        text.push_str(rest);
        if ok && text == real {
            return Ok((real, spans));
        }
    }
    // Report the first message whose placeholder is missing or whose content was rewritten.
    let bad = (0..messages.len())
        .find(|&i| !marked.contains(&placeholder(i)))
        .unwrap_or(0);
    Err(LossMaskError::Unlocatable(bad))
}

/// Renders `messages` with `template`, tokenizes the text (no special tokens added: the template
/// writes BOS itself when the model wants one) and marks the trained tokens: every token that
/// overlaps the content of a trained assistant message, plus the special token that follows that
/// content (after optional whitespace) as the end-of-turn marker.
///
/// Longer than `max_seq_len`: cut to its first `max_seq_len` tokens, or dropped, as `overlength`
/// says. A conversation with no trained token left is not kept.
pub fn tokenize_chat(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[TrainMessage],
    tools: Option<&serde_json::Value>,
    max_seq_len: usize,
    overlength: Overlength,
) -> Result<ChatOutcome, LossMaskError> {
    let (text, spans) = render_with_spans(template, messages, tools)?;
    let enc = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| LossMaskError::Tokenize(e.to_string()))?;
    let ids = enc.get_ids().to_vec();
    let offsets = enc.get_offsets(); // byte offsets into `text`
    let special: HashSet<u32> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    let mut mask = vec![0u8; ids.len()];
    for (m, span) in messages.iter().zip(&spans) {
        if !m.trained() {
            continue;
        }
        let mut last = None;
        for (j, &(s, e)) in offsets.iter().enumerate() {
            let overlaps = if span.is_empty() {
                false
            } else {
                s < span.end && e > span.start
            };
            if overlaps {
                mask[j] = 1;
                last = Some(j);
            }
        }
        // The end-of-turn marker: the first special token starting at or after the content's
        // end, with only whitespace in between (unless the span already ends with one, as a
        // tool-calling message's does).
        if last.is_some_and(|j| special.contains(&ids[j])) {
            continue;
        }
        let from = last.map_or(0, |j| j + 1);
        for j in from..ids.len() {
            let (s, _) = offsets[j];
            if s < span.end {
                continue;
            }
            if !text[span.end..s].trim().is_empty() {
                break;
            }
            if special.contains(&ids[j]) {
                mask[j] = 1;
                break;
            }
        }
    }
    let mut ids = ids;
    let mut truncated = false;
    if ids.len() > max_seq_len {
        match overlength {
            Overlength::Drop => return Ok(ChatOutcome::Overlength),
            Overlength::Truncate => {
                ids.truncate(max_seq_len);
                mask.truncate(max_seq_len);
                truncated = true;
            }
        }
    }
    if !mask.contains(&1) {
        return Ok(ChatOutcome::NoTrainableTokens);
    }
    Ok(ChatOutcome::Kept(ChatExample {
        input_ids: ids,
        loss_mask: mask,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::CHATML_TEMPLATE;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, SplitDelimiterBehavior};

    /// A word-level tokenizer whose tokens are easy to write by hand: each run of word characters
    /// is one token, every other character (space, newline, punctuation) is its own token, and
    /// `specials` are atomic special tokens.
    fn tiny_tokenizer(specials: &[&str]) -> Tokenizer {
        let words = [
            "<unk>",
            "system",
            "user",
            "assistant",
            "tool",
            "Be",
            "brief",
            "Hi",
            "Hello",
            "there",
            "Weather",
            "Let",
            "me",
            "check",
            "20",
            "C",
            "It",
            "is",
            "\n",
            " ",
            ".",
            "?",
        ];
        let vocab = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        let split = Split::new(
            SplitPattern::Regex(r"\w+|[^\w]".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        tok.with_pre_tokenizer(Some(split));
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        tok.add_special_tokens(added).unwrap();
        tok
    }

    /// system, two trained assistant turns, a weight-0 assistant turn and a tool message.
    fn conversation() -> Vec<TrainMessage> {
        vec![
            TrainMessage::new("system", "Be brief."),
            TrainMessage::new("user", "Hi"),
            TrainMessage::new("assistant", "Hello there"),
            TrainMessage::new("user", "Weather?"),
            TrainMessage {
                weight: Some(0.0),
                ..TrainMessage::new("assistant", "Let me check")
            },
            TrainMessage::new("tool", "20 C"),
            TrainMessage {
                weight: Some(1.0),
                // Trailing whitespace: Llama 3's template trims it away.
                ..TrainMessage::new("assistant", "It is 20 C.\n")
            },
        ]
    }

    fn check(tok: &Tokenizer, ex: &ChatExample, expected: &[(&str, u8)]) {
        let got: Vec<(String, u8)> = ex
            .input_ids
            .iter()
            .zip(&ex.loss_mask)
            .map(|(&id, &m)| (tok.id_to_token(id).unwrap(), m))
            .collect();
        let want: Vec<(String, u8)> = expected.iter().map(|(t, m)| (t.to_string(), *m)).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "token {i}");
        }
        assert_eq!(got.len(), want.len());
    }

    #[rustfmt::skip]
    // ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message. Written out by hand from
    // the rendered text; 1 = assistant content of a trained turn, and its <|im_end|>.
    const CHATML_EXPECTED: &[(&str, u8)] = &[
        ("<|im_start|>", 0), ("system", 0), ("\n", 0), ("Be", 0), (" ", 0), ("brief", 0),
        (".", 0), ("<|im_end|>", 0), ("\n", 0),
        ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("Hi", 0), ("<|im_end|>", 0), ("\n", 0),
        ("<|im_start|>", 0), ("assistant", 0), ("\n", 0),
        ("Hello", 1), (" ", 1), ("there", 1), ("<|im_end|>", 1), ("\n", 0),
        ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("Weather", 0), ("?", 0), ("<|im_end|>", 0),
        ("\n", 0),
        ("<|im_start|>", 0), ("assistant", 0), ("\n", 0),
        ("Let", 0), (" ", 0), ("me", 0), (" ", 0), ("check", 0), ("<|im_end|>", 0), ("\n", 0),
        ("<|im_start|>", 0), ("tool", 0), ("\n", 0), ("20", 0), (" ", 0), ("C", 0),
        ("<|im_end|>", 0), ("\n", 0),
        ("<|im_start|>", 0), ("assistant", 0), ("\n", 0),
        ("It", 1), (" ", 1), ("is", 1), (" ", 1), ("20", 1), (" ", 1), ("C", 1), (".", 1),
        ("\n", 1), ("<|im_end|>", 1), ("\n", 0),
    ];

    #[rustfmt::skip]
    // Meta-Llama-3-8B-Instruct's template trims contents:
    // "<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>".
    const LLAMA3_EXPECTED: &[(&str, u8)] = &[
        ("<|begin_of_text|>", 0),
        ("<|start_header_id|>", 0), ("system", 0), ("<|end_header_id|>", 0), ("\n", 0), ("\n", 0),
        ("Be", 0), (" ", 0), ("brief", 0), (".", 0), ("<|eot_id|>", 0),
        ("<|start_header_id|>", 0), ("user", 0), ("<|end_header_id|>", 0), ("\n", 0), ("\n", 0),
        ("Hi", 0), ("<|eot_id|>", 0),
        ("<|start_header_id|>", 0), ("assistant", 0), ("<|end_header_id|>", 0), ("\n", 0),
        ("\n", 0), ("Hello", 1), (" ", 1), ("there", 1), ("<|eot_id|>", 1),
        ("<|start_header_id|>", 0), ("user", 0), ("<|end_header_id|>", 0), ("\n", 0), ("\n", 0),
        ("Weather", 0), ("?", 0), ("<|eot_id|>", 0),
        ("<|start_header_id|>", 0), ("assistant", 0), ("<|end_header_id|>", 0), ("\n", 0),
        ("\n", 0), ("Let", 0), (" ", 0), ("me", 0), (" ", 0), ("check", 0), ("<|eot_id|>", 0),
        ("<|start_header_id|>", 0), ("tool", 0), ("<|end_header_id|>", 0), ("\n", 0), ("\n", 0),
        ("20", 0), (" ", 0), ("C", 0), ("<|eot_id|>", 0),
        ("<|start_header_id|>", 0), ("assistant", 0), ("<|end_header_id|>", 0), ("\n", 0),
        ("\n", 0), ("It", 1), (" ", 1), ("is", 1), (" ", 1), ("20", 1), (" ", 1), ("C", 1),
        (".", 1), ("<|eot_id|>", 1),
    ];

    #[test]
    fn chatml_mask_matches_hand_written() {
        let tok = tiny_tokenizer(&["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
        let tmpl = ChatTemplate::new(CHATML_TEMPLATE, "", "<|endoftext|>").unwrap();
        let out =
            tokenize_chat(&tok, &tmpl, &conversation(), None, 1000, Overlength::Drop).unwrap();
        let ex = out.example().unwrap();
        assert!(!ex.truncated);
        check(&tok, &ex, CHATML_EXPECTED);
    }

    fn llama3() -> ChatTemplate {
        let source = include_str!("../../tests/fixtures/chat_templates/llama3.jinja");
        ChatTemplate::new(source.trim_end(), "<|begin_of_text|>", "<|eot_id|>").unwrap()
    }

    fn llama3_tokenizer() -> Tokenizer {
        tiny_tokenizer(&[
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ])
    }

    #[test]
    fn llama3_mask_matches_hand_written() {
        let tok = llama3_tokenizer();
        let out = tokenize_chat(
            &tok,
            &llama3(),
            &conversation(),
            None,
            1000,
            Overlength::Drop,
        )
        .unwrap();
        check(&tok, &out.example().unwrap(), LLAMA3_EXPECTED);
    }

    #[test]
    fn overlength_truncates_or_drops_and_is_counted() {
        let tok = llama3_tokenizer();
        let msgs = conversation();
        let n = LLAMA3_EXPECTED.len();
        let mut stats = ChatStats::default();
        // Exactly max_seq_len tokens is not overlength.
        let fits = tokenize_chat(&tok, &llama3(), &msgs, None, n, Overlength::Drop).unwrap();
        stats.record(&fits);
        assert!(matches!(&fits, ChatOutcome::Kept(ex) if !ex.truncated));
        let dropped = tokenize_chat(&tok, &llama3(), &msgs, None, n - 1, Overlength::Drop).unwrap();
        stats.record(&dropped);
        assert_eq!(dropped, ChatOutcome::Overlength);
        // Cut after the first assistant turn's <|eot_id|> (token 27): the prefix of the mask.
        let cut = tokenize_chat(&tok, &llama3(), &msgs, None, 27, Overlength::Truncate).unwrap();
        stats.record(&cut);
        let ex = cut.example().unwrap();
        assert!(ex.truncated);
        check(&tok, &ex, &LLAMA3_EXPECTED[..27]);
        // Cut before any assistant content: nothing to train on.
        let none = tokenize_chat(&tok, &llama3(), &msgs, None, 20, Overlength::Truncate).unwrap();
        stats.record(&none);
        assert_eq!(none, ChatOutcome::NoTrainableTokens);
        assert_eq!(
            stats,
            ChatStats {
                kept: 2,
                truncated: 1,
                dropped: 1,
                no_trainable: 1
            }
        );
    }

    #[test]
    fn a_template_that_rewrites_content_is_refused() {
        let tok = tiny_tokenizer(&["<|im_end|>"]);
        let tmpl = ChatTemplate::new(
            "{% for m in messages %}{{ m.content | upper }}<|im_end|>{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let msgs = vec![TrainMessage::new("assistant", "Hello")];
        let err = tokenize_chat(&tok, &tmpl, &msgs, None, 100, Overlength::Drop).unwrap_err();
        assert!(matches!(err, LossMaskError::Unlocatable(_)), "{err}");
    }

    #[test]
    fn tool_calls_are_trained_whole_and_tool_results_never() {
        let tok = tiny_tokenizer(&["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
        let tmpl = ChatTemplate::new(CHATML_TEMPLATE, "", "<|endoftext|>").unwrap();
        let line: serde_json::Value = serde_json::from_str(
            r#"{"messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "20 C"},
                {"role": "assistant", "content": "It is 20 C."}],
              "tools": [{"type": "function", "function": {"name": "weather"}}]}"#,
        )
        .unwrap();
        let msgs: Vec<TrainMessage> = serde_json::from_value(line["messages"].clone()).unwrap();
        assert_eq!(msgs[1].content, "", "null content reads as empty");
        let (text, spans) = render_with_spans(&tmpl, &msgs, Some(&line["tools"])).unwrap();
        // The tool-calling turn's span is its whole body up to and including <|im_end|> (keys in
        // the order given, as transformers' `tojson` keeps them).
        assert_eq!(
            &text[spans[1].clone()],
            "<tool_call>\n{\"name\":\"weather\",\"arguments\":\"{}\"}\n</tool_call><|im_end|>"
        );
        let ex = tokenize_chat(
            &tok,
            &tmpl,
            &msgs,
            Some(&line["tools"]),
            1000,
            Overlength::Drop,
        )
        .unwrap()
        .example()
        .unwrap();
        // Split into turns at <|im_start|>; per turn, the masked tokens.
        let start = tok.token_to_id("<|im_start|>").unwrap();
        let end = tok.token_to_id("<|im_end|>").unwrap();
        let mut turns: Vec<Vec<(u32, u8)>> = Vec::new();
        for (&id, &m) in ex.input_ids.iter().zip(&ex.loss_mask) {
            if id == start {
                turns.push(Vec::new());
            }
            turns.last_mut().unwrap().push((id, m));
        }
        assert_eq!(turns.len(), 4);
        let header = 3; // <|im_start|> role \n
        for (t, turn) in turns.iter().enumerate() {
            let trained = t == 1 || t == 3;
            for (k, &(id, m)) in turn.iter().enumerate() {
                let want = trained && k >= header && (id == end || k + 1 < turn.len());
                assert_eq!(m, u8::from(want), "turn {t} token {k}");
            }
            if trained {
                assert_eq!(
                    turn[turn.len() - 2],
                    (end, 1),
                    "turn {t} trains its <|im_end|>"
                );
            }
        }
    }
}
