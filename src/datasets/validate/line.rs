//! The per-line checker: turns one JSONL line into either a valid example (the md5 of its
//! canonical form, plus its stats) or exactly one error code with a message, dispatching to the
//! chat or pretraining visitor by purpose.

use md5::{Digest as _, Md5};
use serde::de::{self, Visitor};

use super::chat::ChatLine;
use super::ctx::{Code, Ctx, too_long_message};
use super::pretrain::PretrainLine;
use super::{ExampleDigest, PieceError, PieceResult, Purpose};
use crate::datasets::report::MAX_REPORTED_ERRORS;
use crate::datasets::stats::ASSISTANT;

pub(super) struct Checker {
    pub(super) purpose: Purpose,
    pub(super) max_line: usize,
    pub(super) ctx: Ctx,
    pub(super) res: PieceResult,
}

impl Checker {
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
            Purpose::FineTune => parse_with(text, ChatLine(&mut self.ctx)),
            Purpose::Pretrain => parse_with(text, PretrainLine(&mut self.ctx)),
        };
        if let Err(e) = parsed {
            return self.fail(
                rel,
                Code::InvalidJson,
                String::new(),
                json_error_message(&e),
            );
        }
        if self.purpose == Purpose::FineTune && self.ctx.problem.is_none() && !self.ctx.trained {
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
