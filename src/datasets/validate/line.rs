//! The per-line checker: turns one JSONL line into either a valid example (the md5 of its
//! canonical form, plus its stats) or exactly one error code with a message, dispatching to the
//! pretraining visitor, or for `fine-tune` to the chat or preference visitor by the file's
//! format. While the format is undecided, a line is read as the format its top-level keys name
//! (`messages`: chat; `input`, `preferred_output` or `non_preferred_output`: preference), and
//! the first valid line decides it. Once decided, every line is read as that format; one that
//! lacks that format's keys but has the other's is `mixed_formats`.

use md5::{Digest as _, Md5};
use serde::de::{self, Visitor};

use super::chat::ChatLine;
use super::ctx::{Code, Ctx, too_long_message};
use super::preference::PreferenceLine;
use super::pretrain::PretrainLine;
use super::{ExampleDigest, FormatChoice, PieceError, PieceResult, Purpose};
use crate::datasets::convert;
use crate::datasets::format::DatasetFormat;
use crate::datasets::report::MAX_REPORTED_ERRORS;
use crate::datasets::stats::ASSISTANT;

pub(super) struct Checker {
    pub(super) purpose: Purpose,
    pub(super) max_line: usize,
    /// The `fine-tune` format, once a valid line decided it (in this piece or before).
    pub(super) format: Option<FormatChoice>,
    /// Lines of the file before this piece; only used to number the deciding line, so it only
    /// has to be right for a checker that starts with `format` undecided.
    pub(super) base_line: u64,
    pub(super) ctx: Ctx,
    pub(super) res: PieceResult,
}

impl Checker {
    pub(super) fn new(
        purpose: Purpose,
        format: Option<FormatChoice>,
        base_line: u64,
        max_line: usize,
    ) -> Self {
        Self {
            purpose,
            max_line,
            format,
            base_line,
            ctx: Ctx::default(),
            res: PieceResult::default(),
        }
    }

    /// Checks the lines of `piece` (the last may lack its `\n`) and returns how many bytes
    /// were used: all of them, or with `until_decided`, up to the end of the line that decided
    /// the format.
    pub(super) fn lines(&mut self, piece: &[u8], until_decided: bool) -> usize {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', piece) {
            self.line(&piece[start..nl]);
            start = nl + 1;
            if until_decided && self.format.is_some() {
                return start;
            }
        }
        if start < piece.len() {
            self.line(&piece[start..]);
        }
        piece.len()
    }

    pub(super) fn line(&mut self, line: &[u8]) {
        let rel = self.res.lines;
        self.res.lines += 1;
        if line.len() > self.max_line {
            return self.fail(
                rel,
                Code::LineTooLong,
                String::new(),
                too_long_message(self.max_line),
            );
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            self.res.blank += 1;
            return;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1);
                return self.fail(rel, Code::InvalidUtf8, String::new(), msg);
            }
        };
        if text.starts_with('\u{feff}') {
            // Skipped before line 1 (see `bom`); anywhere else, serde_json would only say
            // "expected value at column 1".
            let msg = "invalid JSON: the line starts with a UTF-8 byte order mark (BOM, U+FEFF), \
                       which is only allowed at the start of the file";
            return self.fail(rel, Code::InvalidJson, String::new(), msg.into());
        }
        self.ctx.reset();
        // Most lines are pure ASCII; then a string's char count is its length, which saves a
        // counting pass over every content string.
        self.ctx.ascii = line.is_ascii();
        let parsed = match self.purpose {
            Purpose::FineTune => self.fine_tune(text),
            Purpose::Pretrain => {
                parse_with(text, PretrainLine(&mut self.ctx)).map(|()| DatasetFormat::Text)
            }
        };
        let format = match parsed {
            Ok(f) => f,
            Err(e) => {
                return self.fail(
                    rel,
                    Code::InvalidJson,
                    String::new(),
                    json_error_message(&e),
                );
            }
        };
        if self.purpose == Purpose::FineTune
            && self.format.is_none()
            && self.res.first_keyed.is_none()
            && self.ctx.keys.named().is_some()
        {
            self.res.first_keyed = Some(FormatChoice {
                format,
                line: self.base_line + rel + 1,
            });
        }
        if convert::is_chat(format) && self.ctx.problem.is_none() && !self.ctx.trained {
            let msg = if self.ctx.roles[ASSISTANT] == 0 {
                "no assistant message: there is nothing to train on"
            } else {
                "every assistant message has weight 0: there is nothing to train on"
            };
            self.ctx.problem(
                Code::NoTrainedAssistant,
                || convert::key_of(format).into(),
                || msg.into(),
            );
        }
        if let Some(p) = self.ctx.problem.take() {
            return self.fail(rel, p.code, p.param, p.message);
        }
        let digest: [u8; 16] = Md5::digest(&self.ctx.out).into();
        self.res.digests.push(ExampleDigest(digest));
        self.res
            .stats
            .add(self.ctx.messages, self.ctx.chars, &self.ctx.roles);
        if format == DatasetFormat::Preference {
            self.res.stats.add_pair(self.ctx.part_chars);
        }
        if self.purpose == Purpose::FineTune && self.format.is_none() {
            let choice = FormatChoice {
                format,
                line: self.base_line + rel + 1,
            };
            self.format = Some(choice);
            self.res.decided = Some(choice);
        }
    }

    /// Parses a `fine-tune` line as the file's format, or while that is undecided as the one
    /// its keys name; returns the format the line was read as.
    fn fine_tune(&mut self, text: &str) -> serde_json::Result<DatasetFormat> {
        let ctx = &mut self.ctx;
        let Some(file) = self.format else {
            parse_with(text, ChatLine(ctx))?;
            return match ctx.keys.named() {
                Some(DatasetFormat::Preference) => {
                    // Only until a line is valid (line 1 of a good preference file): the one
                    // line parsed twice, to find its format without a JSON tree.
                    ctx.reset();
                    parse_with(text, PreferenceLine(ctx))?;
                    Ok(DatasetFormat::Preference)
                }
                Some(f @ (DatasetFormat::ShareGpt | DatasetFormat::Alpaca)) => {
                    ctx.reset();
                    converted(ctx, text, f)?;
                    Ok(f)
                }
                _ => {
                    if !ctx.keys.messages
                        && let Some(p) = ctx.problem.as_mut()
                        && p.code == Code::MissingMessages
                    {
                        p.message = "missing \"messages\" field (a fine-tune line is a chat \
                                     {\"messages\"}, a ShareGPT {\"conversations\"}, an Alpaca \
                                     {\"instruction\", \"output\"} or a preference pair \
                                     {\"input\", \"preferred_output\", \"non_preferred_output\"})"
                            .into();
                    }
                    Ok(DatasetFormat::Chat)
                }
            };
        };
        match file.format {
            DatasetFormat::Preference => parse_with(text, PreferenceLine(ctx))?,
            f @ (DatasetFormat::ShareGpt | DatasetFormat::Alpaca) => converted(ctx, text, f)?,
            _ => parse_with(text, ChatLine(ctx))?,
        }
        if !ctx.keys.has(file.format)
            && let Some(other) = ctx.keys.named()
        {
            mixed_formats(ctx, other, file);
        }
        Ok(file.format)
    }

    fn fail(&mut self, rel: u64, code: Code, param: String, message: String) {
        self.res.invalid += 1;
        self.res.code_counts[code as usize] += 1;
        if self.res.errors.len() < MAX_REPORTED_ERRORS {
            self.res.errors.push(PieceError {
                rel_line: rel,
                code,
                param,
                message,
            });
        }
    }
}

/// Replaces the line's problem (the file format's missing keys, the only one it can have): it
/// is a `line` line in a file that `file` made another format.
fn mixed_formats(ctx: &mut Ctx, line: DatasetFormat, file: FormatChoice) {
    let keys = |f: DatasetFormat| match f {
        DatasetFormat::Preference => "\"input\", \"preferred_output\", \"non_preferred_output\"",
        DatasetFormat::ShareGpt => "\"conversations\"",
        DatasetFormat::Alpaca => "\"instruction\", \"output\"",
        _ => "\"messages\"",
    };
    ctx.problem = None;
    ctx.problem(Code::MixedFormats, String::new, || {
        format!(
            "a {} line ({}) in a {} file ({}, as line {} set): a fine-tune file holds one \
             format (chat, ShareGPT, Alpaca or preference), not a mix",
            line.as_str(),
            keys(line),
            file.format.as_str(),
            keys(file.format),
            file.line,
        )
    });
}

/// A ShareGPT or Alpaca line: converted to chat ([`convert`]), then checked and hashed by chat's
/// rules, so it hashes like the chat line it becomes; problems name the source's fields.
fn converted(ctx: &mut Ctx, text: &str, format: DatasetFormat) -> serde_json::Result<()> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    if let serde_json::Value::Object(o) = &value {
        for k in o.keys() {
            ctx.keys.note(k);
        }
    }
    match convert::convert(format, &value) {
        Err(e) => {
            let code = Code::from_name(e.code).unwrap_or(Code::NotAnObject);
            ctx.problem(code, || e.param, || e.message);
        }
        Ok(chat) => {
            let line = chat.to_line().to_string();
            let keys = ctx.keys;
            parse_with(&line, ChatLine(ctx))?;
            ctx.keys = keys;
            if let Some(p) = ctx.problem.as_mut() {
                p.param = chat.source_param(&p.param);
            }
        }
    }
    Ok(())
}

fn parse_with<'de, V: Visitor<'de, Value = ()>>(text: &'de str, v: V) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_any(&mut de, v)?;
    de.end()
}

/// serde_json says "at line 1 column N"; every line is parsed alone, so the line is noise.
fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let reason = full
        .rfind(" at line ")
        .map_or(full.as_str(), |i| &full[..i]);
    if e.column() > 0 {
        format!("invalid JSON: {reason} at column {}", e.column())
    } else {
        format!("invalid JSON: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errs, run};
    use super::*;

    const SHAREGPT_OK: &str = r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#;

    #[test]
    fn sharegpt_files_validate_with_line_numbers_and_source_params() {
        let data = [
            SHAREGPT_OK,
            r#"{"conversations": [{"from": "robot", "value": "x"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "only a question"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x", "weight": 3}]}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}"#,
            r#"{"conversations": "nope"}"#,
            r#"{"id": "b", "system": "be brief", "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}"#,
            SHAREGPT_OK,
            r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt""#,
        ]
        .join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert_eq!(r.format, Some(DatasetFormat::ShareGpt));
        assert_eq!(
            errs(&r),
            vec![
                (2, "invalid_from", "conversations[0].from"),
                (3, "no_trained_assistant", "conversations"),
                (4, "invalid_weight", "conversations[1].weight"),
                (5, "mixed_formats", ""),
                (6, "conversations_not_array", "conversations"),
                (9, "invalid_json", ""),
            ]
        );
        assert_eq!((r.valid_examples, r.duplicates), (3, 1));
        // Line 7: a system message, a user and an assistant turn; line 1 (twice): user, assistant.
        assert_eq!(r.stats.role_counts["system"], 1);
        assert_eq!(r.stats.role_counts["user"], 3);
        assert_eq!(r.stats.role_counts["assistant"], 3);
        assert!(
            r.errors[3].message.contains("sharegpt file"),
            "{}",
            r.errors[3].message
        );
    }

    #[test]
    fn alpaca_files_validate_and_a_chat_line_in_them_is_mixed() {
        let data = [
            r#"{"instruction": "Add", "input": "2 and 3", "output": "5"}"#,
            r#"{"instruction": "Add", "output": 5}"#,
            r#"{"instruction": "Add"}"#,
            r#"{"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}"#,
            r#"{"instruction": "Say hi", "input": "", "output": "hi", "history": [["a", "b"]]}"#,
        ]
        .join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert_eq!(r.format, Some(DatasetFormat::Alpaca));
        assert_eq!(
            errs(&r),
            vec![
                (2, "invalid_output", "output"),
                (3, "missing_output", "output"),
                (4, "mixed_formats", ""),
            ]
        );
        assert_eq!(r.valid_examples, 2);
        // "Add\n2 and 3" (11) + "5" (1); "a" + "b" + "Say hi" + "hi" = 10.
        assert_eq!(r.stats.chars_per_example.max, 12);
        assert_eq!(r.stats.chars_per_example.min, 10);
    }

    /// A converted line hashes as the chat line it becomes, so duplicates are the same
    /// examples whatever format they were written in.
    #[test]
    fn converted_lines_hash_like_their_chat_form() {
        let digest = |line: &str| {
            let mut c = Checker::new(Purpose::FineTune, None, 0, usize::MAX);
            c.lines(line.as_bytes(), false);
            assert_eq!(c.res.invalid, 0, "{line}");
            c.res.digests[0].0
        };
        let chat = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
        assert_eq!(digest(SHAREGPT_OK), digest(chat));
        let alpaca = r#"{"instruction": "hi", "input": "", "output": "hello"}"#;
        assert_eq!(digest(alpaca), digest(chat));
    }
}
