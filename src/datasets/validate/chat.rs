//! The schema of chat (`fine-tune`) lines: `{"messages": [{"role": .., "content": ..}, ..]}`.
//! Visitors that check each message while writing `messages` in Python's canonical form. The
//! message-list visitors are shared with preference lines (`preference`), whose prompt is
//! checked like chat messages and whose outputs add rules of their own (see [`MessageList`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::ctx::{Code, Ctx, drain_map, drain_seq, scalars_are_wrong_type};
use super::pyjson::{KeySeed, Leaf, transcode_map};
use crate::datasets::stats::{ASSISTANT, ROLES};

/// A whole chat line. Only `messages` is hashed (like Hugging Face `datasets`' dedup); other
/// top-level fields are allowed and skipped (noting in [`Ctx::keys`] whether any of them names
/// another format).
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
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen {
            missing_messages(ctx);
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
        let mut watch = [
            ("role", None),
            ("content", None),
            ("weight", None),
            ("tool_calls", None),
        ];
        transcode_map(self.ctx, map, self.list.sort, &mut watch)?;
        let [(_, role), (_, content), (_, weight), (_, tool_calls)] = watch;
        let m = Message {
            role,
            content,
            weight,
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
    pub(super) tool_calls: Option<Leaf<'de>>,
}

impl Message<'_> {
    /// A non-null `tool_calls`, which lets `content` be missing or null.
    pub(super) fn has_tool_calls(&self) -> bool {
        matches!(self.tool_calls, Some(ref t) if !matches!(t, Leaf::Null))
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
        ..
    } = m;
    let path = list.path;
    let param = |field: &'static str| move || format!("{path}[{i}].{field}");
    let role = match role {
        Some(Leaf::Str(s)) => match s.as_ref() {
            "system" => 0,
            "user" => 1,
            "assistant" => ASSISTANT,
            "tool" => 3,
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
    let has_tool_calls = m.has_tool_calls();
    let chars = match content {
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
            // 3 messages, chars 2 + 5 + 0 = 7
            chat(&[U, A, r#"{"role": "assistant", "content": "", "weight": 0}"#]),
            // 1 message, chars 5
            chat(&[A]),
            // 4 messages, chars 3 + 2 + 5 + 2 = 12 ("日本語" is 3 chars)
            chat(&[
                r#"{"role": "system", "content": "日本語"}"#,
                U,
                A,
                r#"{"role": "tool", "content": "ok"}"#,
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
                mean: 29.0 / 4.0,
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
