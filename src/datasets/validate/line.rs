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
            && (self.ctx.keys.messages || self.ctx.keys.preference)
        {
            self.res.first_keyed = Some(FormatChoice {
                format,
                line: self.base_line + rel + 1,
            });
        }
        if format == DatasetFormat::Chat && self.ctx.problem.is_none() && !self.ctx.trained {
            let msg = if self.ctx.roles[ASSISTANT] == 0 {
                "no assistant message: there is nothing to train on"
            } else {
                "every assistant message has weight 0: there is nothing to train on"
            };
            self.ctx.problem(
                Code::NoTrainedAssistant,
                || "messages".into(),
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
        match self.format {
            Some(file) if file.format == DatasetFormat::Preference => {
                parse_with(text, PreferenceLine(ctx))?;
                if !ctx.keys.preference && ctx.keys.messages {
                    mixed_formats(ctx, DatasetFormat::Chat, file);
                }
                Ok(DatasetFormat::Preference)
            }
            Some(file) => {
                parse_with(text, ChatLine(ctx))?;
                if !ctx.keys.messages && ctx.keys.preference {
                    mixed_formats(ctx, DatasetFormat::Preference, file);
                }
                Ok(DatasetFormat::Chat)
            }
            None => {
                parse_with(text, ChatLine(ctx))?;
                if !ctx.keys.messages && ctx.keys.preference {
                    // Only until a line is valid (line 1 of a good preference file): the one
                    // line parsed twice, to find its format without a JSON tree.
                    ctx.reset();
                    parse_with(text, PreferenceLine(ctx))?;
                    return Ok(DatasetFormat::Preference);
                }
                if !ctx.keys.messages
                    && let Some(p) = ctx.problem.as_mut()
                    && p.code == Code::MissingMessages
                {
                    p.message = "missing \"messages\" field (a preference line has \"input\", \
                                 \"preferred_output\" and \"non_preferred_output\" instead)"
                        .into();
                }
                Ok(DatasetFormat::Chat)
            }
        }
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

/// Replaces the line's problem (the other format's missing keys, the only one it can have):
/// it is a `line` line in a file that `file` made the other format.
fn mixed_formats(ctx: &mut Ctx, line: DatasetFormat, file: FormatChoice) {
    let keys = |f: DatasetFormat| match f {
        DatasetFormat::Preference => "\"input\", \"preferred_output\", \"non_preferred_output\"",
        _ => "\"messages\"",
    };
    ctx.problem = None;
    ctx.problem(Code::MixedFormats, String::new, || {
        format!(
            "a {} line ({}) in a {} file ({}, as line {} set): a fine-tune file holds chat \
             or preference examples, not both",
            line.as_str(),
            keys(line),
            file.format.as_str(),
            keys(file.format),
            file.line,
        )
    });
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
