//! What the line visitors share: the error codes and their messages, the first problem of a
//! line, the per-piece scratch state (`Ctx`), and the helpers the chat, preference and
//! pretraining visitors have in common.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::datasets::format::DatasetFormat;
use crate::datasets::stats::ROLES;

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
    InvalidToolCalls,
    InvalidToolCallId,
    InvalidFunctionName,
    InvalidFunctionArguments,
    MissingToolCallId,
    InvalidContent,
    EmptyAssistantContent,
    InvalidWeight,
    NoTrainedAssistant,
    MixedFormats,
    MissingInput,
    InvalidInput,
    InvalidTools,
    InvalidParallelToolCalls,
    MissingOutput,
    OutputNotArray,
    EmptyOutput,
    OutputNotAssistant,
    EmptyOutputContent,
    IdenticalOutputs,
    MissingText,
    InvalidText,
    EmptyText,
    MissingConversations,
    ConversationsNotArray,
    EmptyConversations,
    InvalidTurn,
    InvalidFrom,
    InvalidFunctionCall,
    InvalidSystem,
    InvalidInstruction,
    InvalidOutput,
    InvalidHistory,
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
        Code::InvalidToolCalls,
        Code::InvalidToolCallId,
        Code::InvalidFunctionName,
        Code::InvalidFunctionArguments,
        Code::MissingToolCallId,
        Code::InvalidContent,
        Code::EmptyAssistantContent,
        Code::InvalidWeight,
        Code::NoTrainedAssistant,
        Code::MixedFormats,
        Code::MissingInput,
        Code::InvalidInput,
        Code::InvalidTools,
        Code::InvalidParallelToolCalls,
        Code::MissingOutput,
        Code::OutputNotArray,
        Code::EmptyOutput,
        Code::OutputNotAssistant,
        Code::EmptyOutputContent,
        Code::IdenticalOutputs,
        Code::MissingText,
        Code::InvalidText,
        Code::EmptyText,
        Code::MissingConversations,
        Code::ConversationsNotArray,
        Code::EmptyConversations,
        Code::InvalidTurn,
        Code::InvalidFrom,
        Code::InvalidFunctionCall,
        Code::InvalidSystem,
        Code::InvalidInstruction,
        Code::InvalidOutput,
        Code::InvalidHistory,
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
            Code::InvalidToolCalls => "invalid_tool_calls",
            Code::InvalidToolCallId => "invalid_tool_call_id",
            Code::InvalidFunctionName => "invalid_function_name",
            Code::InvalidFunctionArguments => "invalid_function_arguments",
            Code::MissingToolCallId => "missing_tool_call_id",
            Code::InvalidContent => "invalid_content",
            Code::EmptyAssistantContent => "empty_assistant_content",
            Code::InvalidWeight => "invalid_weight",
            Code::NoTrainedAssistant => "no_trained_assistant",
            Code::MixedFormats => "mixed_formats",
            Code::MissingInput => "missing_input",
            Code::InvalidInput => "invalid_input",
            Code::InvalidTools => "invalid_tools",
            Code::InvalidParallelToolCalls => "invalid_parallel_tool_calls",
            Code::MissingOutput => "missing_output",
            Code::OutputNotArray => "output_not_array",
            Code::EmptyOutput => "empty_output",
            Code::OutputNotAssistant => "output_not_assistant",
            Code::EmptyOutputContent => "empty_output_content",
            Code::IdenticalOutputs => "identical_outputs",
            Code::MissingText => "missing_text",
            Code::InvalidText => "invalid_text",
            Code::EmptyText => "empty_text",
            Code::MissingConversations => "missing_conversations",
            Code::ConversationsNotArray => "conversations_not_array",
            Code::EmptyConversations => "empty_conversations",
            Code::InvalidTurn => "invalid_turn",
            Code::InvalidFrom => "invalid_from",
            Code::InvalidFunctionCall => "invalid_function_call",
            Code::InvalidSystem => "invalid_system",
            Code::InvalidInstruction => "invalid_instruction",
            Code::InvalidOutput => "invalid_output",
            Code::InvalidHistory => "invalid_history",
            Code::NoExamples => "no_examples",
        }
    }

    /// The code named `name` (the converters report theirs by name).
    pub(super) fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

pub(super) fn too_long_message(max: usize) -> String {
    format!("line is longer than {max} bytes")
}

/// The first schema problem of a line; parsing goes on after it so that a later JSON syntax
/// error still wins (a line that is not JSON is reported as such).
pub(super) struct Problem {
    pub(super) code: Code,
    pub(super) param: String,
    pub(super) message: String,
}

/// The top-level keys that say which `fine-tune` format a line is in, whichever visitor read it.
#[derive(Clone, Copy, Default)]
pub(super) struct TopKeys {
    /// `messages`: chat.
    pub(super) messages: bool,
    /// `preferred_output` or `non_preferred_output`: preference.
    pub(super) preference: bool,
    /// `input`: preference, or Alpaca's optional input.
    pub(super) input: bool,
    /// `conversations`: ShareGPT.
    pub(super) conversations: bool,
    /// `instruction` or `output`: Alpaca.
    pub(super) alpaca: bool,
}

impl TopKeys {
    /// Notes one top-level key of the line.
    pub(super) fn note(&mut self, key: &str) {
        match key {
            "messages" => self.messages = true,
            "preferred_output" | "non_preferred_output" => self.preference = true,
            "input" => self.input = true,
            "conversations" => self.conversations = true,
            "instruction" | "output" => self.alpaca = true,
            _ => {}
        }
    }

    /// Whether the line has the keys of `format`.
    pub(super) fn has(&self, format: DatasetFormat) -> bool {
        match format {
            DatasetFormat::Chat => self.messages,
            DatasetFormat::Preference => self.preference || (self.input && !self.alpaca),
            DatasetFormat::ShareGpt => self.conversations,
            DatasetFormat::Alpaca => self.alpaca,
            DatasetFormat::Text => true,
        }
    }

    /// The format the keys name, first of chat, ShareGPT, Alpaca and preference.
    pub(super) fn named(&self) -> Option<DatasetFormat> {
        [
            DatasetFormat::Chat,
            DatasetFormat::ShareGpt,
            DatasetFormat::Alpaca,
            DatasetFormat::Preference,
        ]
        .into_iter()
        .find(|f| self.has(*f))
    }
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
    /// Which format-naming keys the line's top-level object has (its other keys are skipped).
    pub(super) keys: TopKeys,
    /// Chars of a preference line's prompt, preferred and non-preferred output.
    pub(super) part_chars: [u64; 3],
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

    pub(super) fn reset(&mut self) {
        self.out.clear();
        self.entries.clear();
        self.problem = None;
        self.messages = 0;
        self.chars = 0;
        self.roles = [0; ROLES.len()];
        self.trained = false;
        self.keys = TopKeys::default();
        self.part_chars = [0; 3];
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

/// Scalars all mean "wrong type" for the chat, preference and pretraining visitors; only their JSON kind
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

/// Skips a value the visitors do not read, and says which JSON kind it was.
///
/// Unlike serde's `IgnoredAny`, for which serde_json skips a value without any nesting limit,
/// it reads through `deserialize_any`, so serde_json's limit (at most 127 levels of arrays and
/// objects, the line's own included) applies to a skipped value as it does to every value a
/// visitor reads: a 100,000-level value under a key nothing reads is refused as invalid JSON
/// (`recursion limit exceeded`), as it is in a pretraining line, whose visitor reads every
/// value. Each level costs one shallow frame, so the stack stays small.
pub(super) struct Skip(pub(super) &'static str);

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip("null"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip("number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip("string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        drain_seq(seq)?;
        Ok(Skip("array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        drain_map(map)?;
        Ok(Skip("object"))
    }
}

pub(super) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

pub(super) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}
