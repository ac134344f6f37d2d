//! The per-line checker: turns one JSONL line into either a valid example (the md5 of its
//! canonical form, plus its stats) or exactly one error code with a message. Also the error
//! codes themselves, the scratch state shared by the line visitors (`Ctx`), and the helpers
//! the chat and pretraining visitors have in common.

use md5::{Digest as _, Md5};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::chat::ChatLine;
use super::pretrain::PretrainLine;
use super::{ExampleDigest, PieceError, PieceResult, Purpose};
use crate::datasets::report::MAX_REPORTED_ERRORS;
use crate::datasets::stats::{ASSISTANT, ROLES};

/// Error codes; one per rejected line (the first problem found, checked in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Code {
    LineTooLong,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    MissingMessages,
    MessagesNotArray,
    EmptyMessages,
    InvalidMessage,
    InvalidRole,
    InvalidContent,
    InvalidWeight,
    NoTrainedAssistant,
    MissingText,
    InvalidText,
    EmptyText,
    NoExamples,
}

pub(super) const N_CODES: usize = Code::NoExamples as usize + 1;

impl Code {
    pub(super) const ALL: [Code; N_CODES] = [
        Code::LineTooLong,
        Code::InvalidUtf8,
        Code::InvalidJson,
        Code::NotAnObject,
        Code::MissingMessages,
        Code::MessagesNotArray,
        Code::EmptyMessages,
        Code::InvalidMessage,
        Code::InvalidRole,
        Code::InvalidContent,
        Code::InvalidWeight,
        Code::NoTrainedAssistant,
        Code::MissingText,
        Code::InvalidText,
        Code::EmptyText,
        Code::NoExamples,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Code::LineTooLong => "line_too_long",
            Code::InvalidUtf8 => "invalid_utf8",
            Code::InvalidJson => "invalid_json",
            Code::NotAnObject => "not_an_object",
            Code::MissingMessages => "missing_messages",
            Code::MessagesNotArray => "messages_not_array",
            Code::EmptyMessages => "empty_messages",
            Code::InvalidMessage => "invalid_message",
            Code::InvalidRole => "invalid_role",
            Code::InvalidContent => "invalid_content",
            Code::InvalidWeight => "invalid_weight",
            Code::NoTrainedAssistant => "no_trained_assistant",
            Code::MissingText => "missing_text",
            Code::InvalidText => "invalid_text",
            Code::EmptyText => "empty_text",
            Code::NoExamples => "no_examples",
        }
    }
}

pub(super) fn too_long_message(max: usize) -> String {
    format!("line is longer than {max} bytes")
}

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

/// The first schema problem of a line; parsing goes on after it so that a later JSON syntax
/// error still wins (a line that is not JSON is reported as such).
pub(super) struct Problem {
    code: Code,
    param: String,
    message: String,
}

/// Per-piece scratch state, reused for every line so the hot path does not allocate.
#[derive(Default)]
pub(super) struct Ctx {
    /// Python's `json.dumps` of the hashed value of the current line.
    pub(super) out: Vec<u8>,
    /// (key start, key end, value end) in `out` for the entries of the objects being written,
    /// innermost last; used to reject duplicate keys and to sort keys.
    pub(super) entries: Vec<(usize, usize, usize)>,
    /// Scratch for sorting keys; objects are finished one at a time, so one of each will do.
    pub(super) order: Vec<usize>,
    pub(super) sorted: Vec<u8>,
    pub(super) problem: Option<Problem>,
    pub(super) messages: u64,
    pub(super) chars: u64,
    pub(super) roles: [u64; ROLES.len()],
    pub(super) trained: bool,
    /// The line is pure ASCII.
    pub(super) ascii: bool,
}

impl Ctx {
    pub(super) fn char_count(&self, s: &str) -> u64 {
        if self.ascii {
            s.len() as u64
        } else {
            s.chars().count() as u64
        }
    }

    fn reset(&mut self) {
        self.out.clear();
        self.entries.clear();
        self.problem = None;
        self.messages = 0;
        self.chars = 0;
        self.roles = [0; ROLES.len()];
        self.trained = false;
    }

    /// Records a problem unless the line already has one; the strings are built lazily
    /// because the happy path must not allocate.
    pub(super) fn problem(
        &mut self,
        code: Code,
        param: impl FnOnce() -> String,
        message: impl FnOnce() -> String,
    ) {
        if self.problem.is_none() {
            self.problem = Some(Problem {
                code,
                param: param(),
                message: message(),
            });
        }
    }
}

/// Scalars all mean "wrong type" for the chat and pretraining visitors; only their JSON kind
/// matters. Where it is used, `de` must name `serde::de`.
macro_rules! scalars_are_wrong_type {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(self.wrong_type("null"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(self.wrong_type("boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(self.wrong_type("string"))
        }
    };
}

pub(super) use scalars_are_wrong_type;

pub(super) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(super) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}
