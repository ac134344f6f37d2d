//! The schema of chat (`fine-tune`) lines: `{"messages": [{"role": .., "content": ..}, ..],
//! "tools"?: [..]}`, with OpenAI's rules: roles `system`, `user`, `assistant`, `tool`; string
//! content, which only a message with tool calls may leave null and an assistant message may
//! not leave empty; well-formed `tool_calls` (their schema is in `tool_calls`); a
//! `tool_call_id` on every tool message; `weight` 0 or 1 on assistant messages; `tools` an array.
//! Visitors that check each message while writing `messages` in Python's canonical form. The
//! message-list visitors are shared with preference lines (`preference`), whose prompt is
//! checked like chat messages and whose outputs add rules of their own (see [`MessageList`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::ctx::{Code, Ctx, Skip, drain_map, drain_seq, scalars_are_wrong_type};
use super::pyjson::{KeySeed, Leaf, transcode_map_with, watched_value};
use super::tool_calls::{ToolCalls, ToolCallsSeed};
use crate::datasets::stats::{ASSISTANT, ROLES, TOOL};

/// A whole chat line. Only `messages` is hashed (like Hugging Face `datasets`' dedup); `tools`
/// is type-checked, other top-level fields are allowed and skipped (noting in [`Ctx::keys`]
/// whether any of them names another format).
pub(super) struct ChatLine<'c>(pub(super) &'c mut Ctx);

impl ChatLine<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(Code::NotAnObject, String::new, || {
            format!("each line must be a JSON object, got {kind}")
        });
    }
}

impl<'de> Visitor<'de> for ChatLine<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut seen = false;
        // The kind of `tools` when it is wrong, reported after the messages' problems.
        let mut bad_tools = None;
        while let Some(key) = map.next_key_seed(KeySeed { out: None })? {
            ctx.keys.note(&key);
            if key == "messages" {
                if seen {
                    return Err(A::Error::custom("duplicate key \"messages\""));
                }
                seen = true;
                map.next_value_seed(MessagesSeed {
                    ctx: &mut *ctx,
                    list: &CHAT,
                })?;
            } else {
                let Skip(kind) = map.next_value()?;
                if key == "tools" && !matches!(kind, "array" | "null") {
                    bad_tools = Some(kind);
                }
            }
        }
        if !seen {
            missing_messages(ctx);
        }
        if let Some(kind) = bad_tools {
            ctx.problem(
                Code::InvalidTools,
                || "tools".into(),
                || format!("\"tools\" must be an array, got {kind}"),
            );
        }
        Ok(())
    }
}

/// Which list of messages a [`MessagesSeed`] reads, and the rules for it.
pub(super) struct MessageList {
    /// Its JSON path, the start of every `param` about it: `messages`, `input.messages`, ..
    pub(super) path: &'static str,
    /// Hash objects with sorted keys (`sort_keys=True`); chat keeps the file's order.
    pub(super) sort: bool,
    /// A preference output: not-an-array and empty are `output_not_array` and `empty_output`,
    /// and each message is also checked by [`check_output_message`].
    pub(super) output: bool,
}

/// The `messages` of a chat line.
const CHAT: MessageList = MessageList {
    path: "messages",
    sort: false,
    output: false,
};

/// A list of messages (`messages` for chat): written as the hashed canonical list while each
/// message is checked.
pub(super) struct MessagesSeed<'c> {
    pub(super) ctx: &'c mut Ctx,
    pub(super) list: &'static MessageList,
}

impl MessagesSeed<'_> {
    fn wrong_type(self, kind: &str) {
        let path = self.list.path;
        let code = if self.list.output {
            Code::OutputNotArray
        } else {
            Code::MessagesNotArray
        };
        self.ctx.problem(
            code,
            || path.into(),
            || format!("\"{path}\" must be an array, got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    scalars_are_wrong_type!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        drain_map(map)?;
        self.wrong_type("object");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (ctx, list) = (self.ctx, self.list);
        ctx.out.push(b'[');
        let mut index = 0;
        loop {
            let sep = ctx.out.len();
            if index > 0 {
                ctx.out.extend_from_slice(b", ");
            }
            let seed = MessageSeed {
                ctx: &mut *ctx,
                list,
                index,
            };
            if seq.next_element_seed(seed)?.is_none() {
                ctx.out.truncate(sep);
                break;
            }
            index += 1;
        }
        ctx.out.push(b']');
        end_messages(ctx, list, index);
        Ok(())
    }
}

/// One element of a list of messages.
struct MessageSeed<'c> {
    ctx: &'c mut Ctx,
    list: &'static MessageList,
    index: usize,
}

impl MessageSeed<'_> {
    fn wrong_type(self, kind: &str) {
        let (path, i) = (self.list.path, self.index);
        self.ctx.problem(
            Code::InvalidMessage,
            || format!("{path}[{i}]"),
            || format!("each message must be an object, got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // Keys are hashed in the order they appear in the line. Hugging Face `datasets`' dedup
        // hashes its Arrow-normalised rows instead: keys in the file's first-seen schema order,
        // with fields absent from a message added as null. The two agree whenever every message
        // has the same keys in the same order (what generated datasets and most exporters
        // write); matching Arrow exactly would need a first pass over the whole file.
        let sort = self.list.sort;
        let mut watch = [
            ("role", None),
            ("content", None),
            ("weight", None),
            ("tool_call_id", None),
        ];
        let mut tool_calls = None;
        transcode_map_with(self.ctx, map, sort, |ctx, key, map| {
            if key != "tool_calls" {
                return watched_value(ctx, key, map, sort, &mut watch);
            }
            if tool_calls.is_some() {
                return Err(A::Error::custom("duplicate key \"tool_calls\""));
            }
            tool_calls = Some(map.next_value_seed(ToolCallsSeed { ctx, sort })?);
            Ok(false)
        })?;
        let [(_, role), (_, content), (_, weight), (_, tool_call_id)] = watch;
        let m = Message {
            role,
            content,
            weight,
            tool_call_id,
            tool_calls,
        };
        check_message(self.ctx, self.list, self.index, &m);
        Ok(())
    }
}

fn missing_messages(ctx: &mut Ctx) {
    ctx.problem(
        Code::MissingMessages,
        || "messages".into(),
        || "missing \"messages\" field".into(),
    );
}

/// After the `count` elements of a list of messages were read.
fn end_messages(ctx: &mut Ctx, list: &MessageList, count: usize) {
    ctx.messages += count as u64;
    if count == 0 {
        let path = list.path;
        let code = if list.output {
            Code::EmptyOutput
        } else {
            Code::EmptyMessages
        };
        ctx.problem(
            code,
            || path.into(),
            || format!("\"{path}\" must not be empty"),
        );
    }
}

/// The fields of one message that are checked; the others are only hashed.
pub(super) struct Message<'de> {
    pub(super) role: Option<Leaf<'de>>,
    pub(super) content: Option<Leaf<'de>>,
    pub(super) weight: Option<Leaf<'de>>,
    pub(super) tool_call_id: Option<Leaf<'de>>,
    pub(super) tool_calls: Option<ToolCalls>,
}

impl Message<'_> {
    /// `tool_calls` other than null or an empty array, which lets `content` be missing, null
    /// or empty. (One that is not a well-formed array is reported on its own.)
    pub(super) fn has_tool_calls(&self) -> bool {
        matches!(&self.tool_calls, Some(t) if t.calls > 0 || t.fault.is_some())
    }
}

fn check_message(ctx: &mut Ctx, list: &MessageList, i: usize, m: &Message) {
    if ctx.problem.is_some() {
        return;
    }
    if list.output && !check_output_message(ctx, list.path, i, m) {
        return;
    }
    let Message {
        role,
        content,
        weight,
        tool_call_id,
        tool_calls,
    } = m;
    let path = list.path;
    let param = |field: &'static str| move || format!("{path}[{i}].{field}");
    let role = match role {
        Some(Leaf::Str(s)) => match s.as_ref() {
            "system" => 0,
            "user" => 1,
            "assistant" => ASSISTANT,
            "tool" => TOOL,
            _ => {
                let msg = || format!("invalid role {s:?}: must be one of {}", ROLES.join(", "));
                return ctx.problem(Code::InvalidRole, param("role"), msg);
            }
        },
        None | Some(Leaf::Null) => {
            return ctx.problem(Code::InvalidRole, param("role"), || "missing role".into());
        }
        Some(other) => {
            let msg = || format!("role must be a string, got {}", other.kind());
            return ctx.problem(Code::InvalidRole, param("role"), msg);
        }
    };
    if let Some(fault) = tool_calls.as_ref().and_then(|t| t.fault.as_ref()) {
        return fault.report(ctx, &format!("{path}[{i}]"));
    }
    if role == TOOL && !matches!(tool_call_id, Some(Leaf::Str(_))) {
        let msg = || match tool_call_id {
            None | Some(Leaf::Null) => {
                "missing \"tool_call_id\": a tool message names the call it answers".into()
            }
            Some(other) => format!("tool_call_id must be a string, got {}", other.kind()),
        };
        return ctx.problem(Code::MissingToolCallId, param("tool_call_id"), msg);
    }
    let has_tool_calls = m.has_tool_calls();
    let chars = match content {
        Some(Leaf::Str(s)) if s.is_empty() && role == ASSISTANT && !has_tool_calls => {
            let msg =
                || "an assistant message's content must not be empty (unless it has tool_calls)";
            return ctx.problem(Code::EmptyAssistantContent, param("content"), || {
                msg().into()
            });
        }
        Some(Leaf::Str(s)) => ctx.char_count(s),
        None | Some(Leaf::Null) if has_tool_calls => 0,
        None | Some(Leaf::Null) => {
            let msg = || "content is missing or null, which only a message with tool_calls may do";
            return ctx.problem(Code::InvalidContent, param("content"), || msg().into());
        }
        Some(other) => {
            let msg = || format!("content must be a string, got {}", other.kind());
            return ctx.problem(Code::InvalidContent, param("content"), msg);
        }
    };
    // Absent and null mean "default" (Arrow writes null for absent fields).
    let weight = match weight {
        None | Some(Leaf::Null) => None,
        Some(_) if role != ASSISTANT => {
            let msg = || "weight is only allowed on assistant messages".into();
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
        // 1.0 and 0.0 pass too: Python's trainer compares them equal to 1 and 0.
        Some(Leaf::Num(w)) if *w == 0.0 || *w == 1.0 => Some(*w),
        Some(Leaf::Num(w)) => {
            let msg = || format!("weight must be 0 or 1, got {w}");
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
        Some(other) => {
            let msg = || format!("weight must be 0 or 1, got {}", other.kind());
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
    };
    ctx.chars += chars;
    ctx.roles[role] += 1;
    if role == ASSISTANT && weight != Some(0.0) {
        ctx.trained = true;
    }
}

/// The rules an output message of a preference pair adds to chat's (which still run after it): assistant role,
/// non-blank content unless there are tool calls, no weight. False when it found a problem.
pub(super) fn check_output_message(ctx: &mut Ctx, path: &str, i: usize, m: &Message) -> bool {
    let param = |field: &'static str| move || format!("{path}[{i}].{field}");
    match &m.role {
        Some(Leaf::Str(s)) if s == "assistant" => {}
        other => {
            let got = match other {
                Some(Leaf::Str(s)) => format!("role {s:?}"),
                None | Some(Leaf::Null) => "a message without role".into(),
                Some(leaf) => format!("a role that is a {}", leaf.kind()),
            };
            let msg = || format!("\"{path}\" must hold assistant messages only, got {got}");
            ctx.problem(Code::OutputNotAssistant, param("role"), msg);
            return false;
        }
    }
    if !matches!(m.weight, None | Some(Leaf::Null)) {
        let msg = || "weight is not allowed in an output: each output is compared whole".into();
        ctx.problem(Code::InvalidWeight, param("weight"), msg);
        return false;
    }
    if let Some(Leaf::Str(s)) = &m.content
        && s.trim().is_empty()
        && !m.has_tool_calls()
    {
        let msg = || "an output's content must not be empty (unless it has tool_calls)".into();
        ctx.problem(Code::EmptyOutputContent, param("content"), msg);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::datasets::stats::Summary;
    use crate::datasets::validate::Purpose;
    use crate::datasets::validate::tests::{A, U, chat, errs, hand_built, run};

    /// An assistant tool call and the tool's answer, as OpenAI's fine-tuning files carry them.
    const CALL: &str = r#"{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 2}"}}]}"#;
    const ANSWER: &str = r#"{"role": "tool", "tool_call_id": "call_1", "content": "4"}"#;

    /// The (line, code, param) of the errors of `lines`, checked as one chat file after a first
    /// line that is a good tool-call conversation (line 1: it must not be among them).
    fn check(lines: &[String]) -> Vec<(u64, String, String)> {
        let mut data = chat(&[U, CALL, ANSWER, A]);
        for l in lines {
            data.push('\n');
            data.push_str(l);
        }
        let r = run(Purpose::FineTune, data.as_bytes());
        errs(&r)
            .into_iter()
            .map(|(l, c, p)| (l, c.to_string(), p.to_string()))
            .collect()
    }

    fn want(rows: &[(u64, &str, &str)]) -> Vec<(u64, String, String)> {
        rows.iter()
            .map(|(l, c, p)| (*l, c.to_string(), p.to_string()))
            .collect()
    }

    /// A call like [`CALL`]'s with its object replaced.
    fn call_with(call: &str) -> String {
        format!(r#"{{"role": "assistant", "content": null, "tool_calls": [{call}]}}"#)
    }

    #[test]
    fn empty_assistant_content_is_refused_unless_it_calls_tools() {
        let lines = [
            chat(&[U, r#"{"role": "assistant", "content": ""}"#]),
            chat(&[
                U,
                A,
                U,
                r#"{"role": "assistant", "content": "", "weight": 0}"#,
            ]),
            // With tool calls, empty or null content is fine.
            chat(&[
                U,
                r#"{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}"#,
                r#"{"role": "tool", "tool_call_id": "c", "content": "ok"}"#,
                A,
            ]),
            // Other roles may be empty, as before.
            chat(&[r#"{"role": "system", "content": ""}"#, U, A]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (2, "empty_assistant_content", "messages[1].content"),
                (3, "empty_assistant_content", "messages[3].content"),
            ])
        );
    }

    #[test]
    fn a_tool_call_without_id_is_refused() {
        let lines = [
            chat(&[
                U,
                &call_with(
                    r#"{"type": "function", "function": {"name": "add", "arguments": "{}"}}"#,
                ),
                A,
            ]),
            chat(&[
                U,
                &call_with(
                    r#"{"id": 7, "type": "function", "function": {"name": "add", "arguments": "{}"}}"#,
                ),
                A,
            ]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (2, "invalid_tool_call_id", "messages[1].tool_calls[0].id"),
                (3, "invalid_tool_call_id", "messages[1].tool_calls[0].id"),
            ])
        );
    }

    #[test]
    fn a_function_call_without_name_is_refused() {
        let lines = [
            chat(&[
                U,
                &call_with(r#"{"id": "c", "type": "function", "function": {"arguments": "{}"}}"#),
                A,
            ]),
            chat(&[
                U,
                &call_with(
                    r#"{"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}"#,
                ),
                A,
            ]),
            chat(&[U, &call_with(r#"{"id": "c", "type": "function"}"#), A]),
            chat(&[U, &call_with(r#"{"id": "c", "function": "add"}"#), A]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (
                    2,
                    "invalid_function_name",
                    "messages[1].tool_calls[0].function.name"
                ),
                (
                    3,
                    "invalid_function_name",
                    "messages[1].tool_calls[0].function.name"
                ),
                (
                    4,
                    "invalid_function_name",
                    "messages[1].tool_calls[0].function"
                ),
                (
                    5,
                    "invalid_function_name",
                    "messages[1].tool_calls[0].function"
                ),
            ])
        );
    }

    #[test]
    fn function_arguments_must_be_a_json_encoded_string() {
        let lines = [
            chat(&[
                U,
                &call_with(
                    r#"{"id": "c", "type": "function", "function": {"name": "add", "arguments": {"a": 2}}}"#,
                ),
                A,
            ]),
            chat(&[
                U,
                &call_with(r#"{"id": "c", "type": "function", "function": {"name": "add"}}"#),
                A,
            ]),
            // The second call of two is checked too.
            chat(&[
                U,
                &call_with(
                    r#"{"id": "c", "type": "function", "function": {"name": "add", "arguments": "{}"}}, {"id": "d", "type": "function", "function": {"name": "add", "arguments": 2}}"#,
                ),
                A,
            ]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (
                    2,
                    "invalid_function_arguments",
                    "messages[1].tool_calls[0].function.arguments"
                ),
                (
                    3,
                    "invalid_function_arguments",
                    "messages[1].tool_calls[0].function.arguments"
                ),
                (
                    4,
                    "invalid_function_arguments",
                    "messages[1].tool_calls[1].function.arguments"
                ),
            ])
        );
        let r = run(Purpose::FineTune, lines[0].as_bytes());
        assert!(
            r.errors[1].message.contains("string"),
            "{}",
            r.errors[1].message
        );
    }

    #[test]
    fn tool_calls_must_be_an_array_of_objects() {
        let lines = [
            chat(&[
                U,
                r#"{"role": "assistant", "content": null, "tool_calls": "add(2, 2)"}"#,
                A,
            ]),
            chat(&[
                U,
                r#"{"role": "assistant", "content": null, "tool_calls": ["add"]}"#,
                A,
            ]),
            // An empty list calls nothing: the content is then required.
            chat(&[
                U,
                r#"{"role": "assistant", "content": null, "tool_calls": []}"#,
                A,
            ]),
            chat(&[
                U,
                r#"{"role": "assistant", "tool_calls": [], "content": "fine"}"#,
            ]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (2, "invalid_tool_calls", "messages[1].tool_calls"),
                (3, "invalid_tool_calls", "messages[1].tool_calls[0]"),
                (4, "invalid_content", "messages[1].content"),
            ])
        );
    }

    #[test]
    fn a_tool_message_without_tool_call_id_is_refused() {
        let lines = [
            chat(&[U, CALL, r#"{"role": "tool", "content": "4"}"#, A]),
            chat(&[
                U,
                CALL,
                r#"{"role": "tool", "tool_call_id": null, "content": "4"}"#,
                A,
            ]),
            chat(&[
                U,
                CALL,
                r#"{"role": "tool", "tool_call_id": 1, "content": "4"}"#,
                A,
            ]),
        ];
        assert_eq!(
            check(&lines),
            want(&[
                (2, "missing_tool_call_id", "messages[2].tool_call_id"),
                (3, "missing_tool_call_id", "messages[2].tool_call_id"),
                (4, "missing_tool_call_id", "messages[2].tool_call_id"),
            ])
        );
    }

    #[test]
    fn tools_must_be_an_array() {
        let msgs = chat(&[U, A]);
        let body = &msgs[1..msgs.len() - 1];
        let lines = [
            format!(r#"{{{body}, "tools": "nope"}}"#),
            format!(r#"{{"tools": {{"type": "function"}}, {body}}}"#),
            format!(
                r#"{{{body}, "tools": [{{"type": "function", "function": {{"name": "add"}}}}]}}"#
            ),
            format!(r#"{{{body}, "tools": null, "source": "x"}}"#),
        ];
        assert_eq!(
            check(&lines),
            want(&[(2, "invalid_tools", "tools"), (3, "invalid_tools", "tools")])
        );
        // Tools are not hashed (only messages are): lines 3 and 4 are the same example.
        let r = run(Purpose::FineTune, lines.join("\n").as_bytes());
        assert_eq!((r.valid_examples, r.duplicates), (2, 1));
    }

    #[test]
    fn hand_built_file() {
        let r = run(Purpose::FineTune, &hand_built());
        assert_eq!(
            errs(&r),
            vec![
                (2, "invalid_role", "messages[0].role"),
                (3, "invalid_weight", "messages[1].weight"),
                (4, "invalid_weight", "messages[0].weight"),
                (5, "invalid_json", ""),
                (6, "invalid_utf8", ""),
                (8, "empty_messages", "messages"),
                (9, "no_trained_assistant", "messages"),
                (11, "invalid_content", "messages[1].content"),
                (14, "not_an_object", ""),
                (15, "missing_messages", "messages"),
                (16, "messages_not_array", "messages"),
                (17, "invalid_message", "messages[0]"),
                (18, "no_trained_assistant", "messages"),
                (20, "invalid_content", "messages[0].content"),
                (21, "invalid_json", ""),
                (22, "invalid_json", ""),
            ]
        );
        assert_eq!(r.total_lines, 23);
        assert_eq!(r.blank_lines, 1);
        assert_eq!(r.invalid_lines, 16);
        assert_eq!(r.valid_examples, 6);
        assert_eq!(r.duplicates, 3);
        assert_eq!(r.error_counts["invalid_json"], 3);
        assert_eq!(r.error_counts["invalid_weight"], 2);
        assert_eq!(r.error_counts.values().sum::<u64>(), 16);
        assert!(!r.is_ok());
        assert!(
            r.errors[1].message.contains("got 2"),
            "{}",
            r.errors[1].message
        );
        assert!(r.errors[0].message.contains("\"bot\""));
        assert_eq!(
            r.errors[3].message,
            "invalid JSON: expected value at column 15"
        );
        assert!(r.errors[14].message.contains("control character"));
        assert!(r.errors[15].message.contains("duplicate key \"content\""));
    }

    #[test]
    fn stats_hand_computed() {
        let data = [
            // 3 messages, chars 2 + 5 + 1 = 8
            chat(&[
                U,
                A,
                r#"{"role": "assistant", "content": "!", "weight": 0}"#,
            ]),
            // 1 message, chars 5
            chat(&[A]),
            // 4 messages, chars 3 + 2 + 5 + 2 = 12 ("日本語" is 3 chars)
            chat(&[
                r#"{"role": "system", "content": "日本語"}"#,
                U,
                A,
                r#"{"role": "tool", "tool_call_id": "c1", "content": "ok"}"#,
            ]),
            // duplicate of the second: still counted in stats
            chat(&[A]),
        ]
        .join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert!(r.is_ok());
        let s = &r.stats;
        assert_eq!(s.examples, 4);
        assert_eq!(r.duplicates, 1);
        assert_eq!(
            s.messages_per_example,
            Summary {
                min: 1,
                mean: 9.0 / 4.0,
                max: 4
            }
        );
        assert_eq!(
            s.chars_per_example,
            Summary {
                min: 5,
                mean: 30.0 / 4.0,
                max: 12
            }
        );
        let roles: Vec<(&str, u64)> = s
            .role_counts
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            roles,
            vec![("assistant", 5), ("system", 1), ("tool", 1), ("user", 2)]
        );
        let hist: Vec<(u64, u64)> = s.length_histogram.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(hist, vec![(8, 3), (16, 1)]);
    }
}
