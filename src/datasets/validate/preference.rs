//! The schema of preference (DPO) lines, OpenAI's format under purpose `fine-tune`:
//! `{"input": {"messages": [..], "tools": [..], "parallel_tool_calls": ..}, "preferred_output":
//! [{"role": "assistant", ..}], "non_preferred_output": [{"role": "assistant", ..}]}`.
//!
//! - `input` must be an object with a non-empty `messages`, checked like chat messages (roles,
//!   content types, weights) except that nothing needs to be trained: the prompt may end with a
//!   user message. `tools` (an array) and `parallel_tool_calls` (a boolean) are optional, null
//!   meaning absent; other keys of `input` are allowed.
//! - Both outputs must be non-empty arrays of assistant messages, each with non-blank content
//!   unless it has `tool_calls` (null content is then fine, as in chat), and no `weight`: an
//!   output is compared whole.
//! - The outputs must differ (compared in the canonical form below, so key order and
//!   whitespace do not count).
//! - Other top-level keys are allowed and skipped, as in chat.
//!
//! The hashed canonical form (for duplicates) is Python's
//! `json.dumps({k: row[k] for k in ("input", "preferred_output", "non_preferred_output")},
//! ensure_ascii=False, sort_keys=True)`: the three fields a trainer reads (like chat, which
//! hashes only `messages`, extra top-level fields do not make a line distinct), keys sorted at
//! every level (a pair is the same pair whatever order an exporter wrote its keys in).

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::chat::{MessageList, MessagesSeed};
use super::ctx::{Code, Ctx, Skip, drain_seq, scalars_are_wrong_type};
use super::pyjson::{KeySeed, Leaf, Py, transcode_map_with};

/// The prompt, `input.messages`.
const PROMPT: MessageList = MessageList {
    path: "input.messages",
    sort: true,
    output: false,
};

const PREFERRED: MessageList = MessageList {
    path: "preferred_output",
    sort: true,
    output: true,
};

const NON_PREFERRED: MessageList = MessageList {
    path: "non_preferred_output",
    sort: true,
    output: true,
};

/// The hashed top-level fields, in sorted (hashed) order.
const FIELDS: [&str; 3] = ["input", "non_preferred_output", "preferred_output"];

/// Where each of [`FIELDS`] goes in [`Ctx::part_chars`] (prompt, preferred, non-preferred).
const PART: [usize; 3] = [0, 2, 1];

/// A whole preference line; see the module docs.
pub(super) struct PreferenceLine<'c>(pub(super) &'c mut Ctx);

impl PreferenceLine<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(Code::NotAnObject, String::new, || {
            format!("each line must be a JSON object, got {kind}")
        });
    }
}

impl<'de> Visitor<'de> for PreferenceLine<'_> {
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
        // Each field is written to `out` as `"key": value`, in file order and without
        // separators; (entry start, value start, end) per field of `FIELDS`.
        let mut spans: [Option<(usize, usize, usize)>; 3] = [None; 3];
        while let Some(key) = map.next_key_seed(KeySeed { out: None })? {
            ctx.keys.note(&key);
            let Some(f) = FIELDS.iter().position(|k| *k == key) else {
                map.next_value::<Skip>()?;
                continue;
            };
            if spans[f].is_some() {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            let start = ctx.out.len();
            ctx.out.push(b'"');
            ctx.out.extend_from_slice(FIELDS[f].as_bytes());
            ctx.out.extend_from_slice(b"\": ");
            let value_start = ctx.out.len();
            let chars = ctx.chars;
            let ctx2 = &mut *ctx;
            match f {
                0 => map.next_value_seed(InputSeed(ctx2))?,
                1 => map.next_value_seed(MessagesSeed {
                    ctx: ctx2,
                    list: &NON_PREFERRED,
                })?,
                _ => map.next_value_seed(MessagesSeed {
                    ctx: ctx2,
                    list: &PREFERRED,
                })?,
            }
            ctx.part_chars[PART[f]] = ctx.chars - chars;
            spans[f] = Some((start, value_start, ctx.out.len()));
        }
        end_line(ctx, spans);
        Ok(())
    }
}

/// After the whole line was read: the missing fields, then identical outputs; on a good line,
/// puts the canonical form together in `out`.
fn end_line(ctx: &mut Ctx, spans: [Option<(usize, usize, usize)>; 3]) {
    let [Some(input), Some(non_preferred), Some(preferred)] = spans else {
        let (code, param) = if spans[0].is_none() {
            (Code::MissingInput, "input")
        } else if spans[2].is_none() {
            (Code::MissingOutput, "preferred_output")
        } else {
            (Code::MissingOutput, "non_preferred_output")
        };
        ctx.problem(
            code,
            || param.into(),
            || format!("missing \"{param}\" field"),
        );
        return;
    };
    if ctx.problem.is_some() {
        return;
    }
    let value = |(_, v, e): (usize, usize, usize)| v..e;
    if ctx.out[value(preferred)] == ctx.out[value(non_preferred)] {
        return ctx.problem(
            Code::IdenticalOutputs,
            || "non_preferred_output".into(),
            || "\"preferred_output\" and \"non_preferred_output\" are the same: the pair teaches nothing".into(),
        );
    }
    let sorted = &mut ctx.sorted;
    sorted.clear();
    sorted.push(b'{');
    for (i, (s, _, e)) in [input, non_preferred, preferred].into_iter().enumerate() {
        if i > 0 {
            sorted.extend_from_slice(b", ");
        }
        sorted.extend_from_slice(&ctx.out[s..e]);
    }
    sorted.push(b'}');
    std::mem::swap(&mut ctx.out, &mut ctx.sorted);
}

/// The `input` object: `messages` checked as the prompt, `tools` and `parallel_tool_calls`
/// type-checked, everything written with sorted keys.
struct InputSeed<'c>(&'c mut Ctx);

impl InputSeed<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(
            Code::InvalidInput,
            || "input".into(),
            || format!("\"input\" must be an object with \"messages\", got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut messages = false;
        // Sorted objects compare all their keys for duplicates when they end, so the closure
        // need not (its answer only matters to unsorted ones).
        transcode_map_with(ctx, map, true, |ctx, key, map| {
            match key {
                "messages" => {
                    messages = true;
                    map.next_value_seed(MessagesSeed { ctx, list: &PROMPT })?;
                }
                "tools" => {
                    let leaf = map.next_value_seed(Py {
                        ctx: &mut *ctx,
                        sort: true,
                    })?;
                    if !matches!(leaf, Leaf::Array | Leaf::Null) {
                        let kind = leaf.kind();
                        ctx.problem(
                            Code::InvalidTools,
                            || "input.tools".into(),
                            || format!("\"input.tools\" must be an array, got {kind}"),
                        );
                    }
                }
                "parallel_tool_calls" => {
                    let leaf = map.next_value_seed(Py {
                        ctx: &mut *ctx,
                        sort: true,
                    })?;
                    if !matches!(leaf, Leaf::Bool | Leaf::Null) {
                        let kind = leaf.kind();
                        ctx.problem(
                            Code::InvalidParallelToolCalls,
                            || "input.parallel_tool_calls".into(),
                            || {
                                format!(
                                    "\"input.parallel_tool_calls\" must be a boolean, got {kind}"
                                )
                            },
                        );
                    }
                }
                _ => {
                    map.next_value_seed(Py { ctx, sort: true })?;
                }
            }
            Ok(true)
        })?;
        if !messages {
            ctx.problem(
                Code::MissingMessages,
                || "input.messages".into(),
                || "missing \"input.messages\" field".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::datasets::format::DatasetFormat;
    use crate::datasets::stats::{HistogramBucket, Summary};
    use crate::datasets::validate::Purpose;
    use crate::datasets::validate::tests::{
        A, U, assert_one_outcome_each, chat, errs, feed_in, mangle, run,
    };

    const IN: &str = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    const GOOD: &str = r#"{"role": "assistant", "content": "hello"}"#;
    const BAD: &str = r#"{"role": "assistant", "content": "go away"}"#;

    fn pair(input: &str, preferred: &str, non_preferred: &str) -> String {
        format!(
            r#"{{"input": {input}, "preferred_output": [{preferred}], "non_preferred_output": [{non_preferred}]}}"#
        )
    }

    /// A preference line with the given prompt messages and the usual outputs.
    fn prompt(msgs: &[&str]) -> String {
        pair(
            &format!(r#"{{"messages": [{}]}}"#, msgs.join(", ")),
            GOOD,
            BAD,
        )
    }

    pub(in crate::datasets::validate) fn hand_built() -> Vec<u8> {
        let outs = format!(r#""preferred_output": [{GOOD}], "non_preferred_output": [{BAD}]"#);
        let lines = [
            pair(IN, GOOD, BAD),                                                    // 1 ok
            format!("{{{outs}}}"),                                                  // 2
            format!(r#"{{"input": "hi", {outs}}}"#),                                // 3
            format!(r#"{{"input": {{"tools": []}}, {outs}}}"#),                     // 4
            format!(r#"{{"input": {{"messages": []}}, {outs}}}"#),                  // 5
            prompt(&[r#"{"role": "bot", "content": "x"}"#]),                        // 6
            prompt(&[r#"{"role": "user", "content": 5}"#]),                         // 7
            prompt(&[r#""hi""#]),                                                   // 8
            format!(r#"{{"input": {{"messages": {U}}}, {outs}}}"#),                 // 9
            format!(r#"{{"input": {{"messages": [{U}], "tools": "x"}}, {outs}}}"#), // 10
            format!(r#"{{"input": {{"messages": [{U}], "parallel_tool_calls": "yes"}}, {outs}}}"#), // 11
            format!(r#"{{"input": {IN}, "non_preferred_output": [{BAD}]}}"#), // 12
            format!(r#"{{"input": {IN}, "preferred_output": [{GOOD}]}}"#),    // 13
            format!(
                r#"{{"input": {IN}, "preferred_output": {GOOD}, "non_preferred_output": [{BAD}]}}"#
            ), // 14
            format!(
                r#"{{"input": {IN}, "preferred_output": [{GOOD}], "non_preferred_output": []}}"#
            ), // 15
            pair(IN, U, BAD),                                                 // 16
            pair(IN, GOOD, r#"{"role": "assistant", "content": ""}"#),        // 17
            pair(IN, r#"{"role": "assistant", "content": null}"#, BAD),       // 18
            pair(
                IN,
                r#"{"role": "assistant", "content": "x", "weight": 1}"#,
                BAD,
            ), // 19
            pair(IN, GOOD, GOOD),                                             // 20
            pair(IN, GOOD, r#"{"content": "hello", "role": "assistant"}"#),   // 21
            // 22 ok: a multi-turn prompt with tools, a tool call as the preferred output, an
            // extra top-level key.
            format!(
                r#"{{"id": 7, "input": {{"messages": [{{"role": "system", "content": "be brief"}}, {U}, {A}, {U}], "tools": [{{"type": "function"}}], "parallel_tool_calls": true}}, "preferred_output": [{{"role": "assistant", "content": null, "tool_calls": [{{"id": "c1", "type": "function", "function": {{"name": "f", "arguments": "{{}}"}}}}]}}], "non_preferred_output": [{BAD}]}}"#
            ),
            // 23 duplicate of 1: other key order everywhere, other spacing, an extra key.
            r#"{"non_preferred_output":[{"content":"go away","role":"assistant"}],"source":"x","preferred_output":[{"content":"hello","role":"assistant"}],"input":{"messages":[{"content":"hi","role":"user"}]}}"#
                .to_string(),
            format!(r#"{{"input": {IN}, "input": {IN}, {outs}}}"#), // 24
            chat(&[U, A]),                                          // 25
            "{}".to_string(),                                       // 26
            // 27 ok: weights in the prompt follow chat's rules (and train nothing).
            prompt(&[
                U,
                r#"{"role": "assistant", "content": "x", "weight": 0}"#,
                U,
            ]),
            pair(IN, r#"{"role": "assistant", "content": " \n "}"#, BAD), // 28
            prompt(&[U, r#"{"role": "assistant", "content": "x", "weight": 2}"#]), // 29
            pair(IN, GOOD, r#"{"role": "assistant"}"#),                   // 30
        ];
        let mut f = lines.join("\n").into_bytes();
        f.push(b'\n');
        f
    }

    #[test]
    fn every_error_code_with_its_line_and_param() {
        let r = run(Purpose::FineTune, &hand_built());
        assert_eq!(r.format, Some(DatasetFormat::Preference));
        assert_eq!(
            errs(&r),
            vec![
                (2, "missing_input", "input"),
                (3, "invalid_input", "input"),
                (4, "missing_messages", "input.messages"),
                (5, "empty_messages", "input.messages"),
                (6, "invalid_role", "input.messages[0].role"),
                (7, "invalid_content", "input.messages[0].content"),
                (8, "invalid_message", "input.messages[0]"),
                (9, "messages_not_array", "input.messages"),
                (10, "invalid_tools", "input.tools"),
                (
                    11,
                    "invalid_parallel_tool_calls",
                    "input.parallel_tool_calls"
                ),
                (12, "missing_output", "preferred_output"),
                (13, "missing_output", "non_preferred_output"),
                (14, "output_not_array", "preferred_output"),
                (15, "empty_output", "non_preferred_output"),
                (16, "output_not_assistant", "preferred_output[0].role"),
                (
                    17,
                    "empty_output_content",
                    "non_preferred_output[0].content"
                ),
                (18, "invalid_content", "preferred_output[0].content"),
                (19, "invalid_weight", "preferred_output[0].weight"),
                (20, "identical_outputs", "non_preferred_output"),
                (21, "identical_outputs", "non_preferred_output"),
                (24, "invalid_json", ""),
                (25, "mixed_formats", ""),
                (26, "missing_input", "input"),
                (28, "empty_output_content", "preferred_output[0].content"),
                (29, "invalid_weight", "input.messages[1].weight"),
                (30, "invalid_content", "non_preferred_output[0].content"),
            ]
        );
        assert_eq!(
            (
                r.total_lines,
                r.valid_examples,
                r.invalid_lines,
                r.duplicates
            ),
            (30, 4, 26, 1)
        );
        assert_eq!(r.error_counts["identical_outputs"], 2);
        assert_eq!(r.error_counts.values().sum::<u64>(), 26);
        let msg = |line: u64| {
            let e = r.errors.iter().find(|e| e.line == line).unwrap();
            e.message.as_str()
        };
        assert!(
            msg(16).contains("assistant messages only, got role \"user\""),
            "{}",
            msg(16)
        );
        assert!(msg(24).contains("duplicate key \"input\""), "{}", msg(24));
        assert_eq!(
            msg(25),
            "a chat line (\"messages\") in a preference file (\"input\", \"preferred_output\", \
             \"non_preferred_output\", as line 1 set): a fine-tune file holds one format \
             (chat, ShareGPT, Alpaca or preference), not a mix"
        );
        assert_eq!(r.stats.preference.as_ref().unwrap().pairs, 4);
        // Any chunking gives the same report.
        let data = hand_built().repeat(3);
        let whole = run(Purpose::FineTune, &data);
        assert_eq!(whole.duplicates, 3 * 4 - 3);
        assert_eq!(feed_in(Purpose::FineTune, &data, &mut || 1), whole);
        assert_eq!(feed_in(Purpose::FineTune, &data, &mut || 61), whole);
    }

    #[test]
    fn stats_hand_computed() {
        let lines = [
            // prompt 9 + 4 = 13 chars, outputs 1 and 1; 4 messages
            pair(
                r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]}"#,
                r#"{"role": "assistant", "content": "4"}"#,
                r#"{"role": "assistant", "content": "5"}"#,
            ),
            // 3 + 2 + 3 chars; 3 messages
            pair(
                r#"{"messages": [{"role": "user", "content": "日本語"}]}"#,
                r#"{"role": "assistant", "content": "はい"}"#,
                r#"{"role": "assistant", "content": "いいえ"}"#,
            ),
            // 2 + 0 + 2 chars; 3 messages
            pair(
                IN,
                r#"{"role": "assistant", "content": null, "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]}"#,
                r#"{"role": "assistant", "content": "no"}"#,
            ),
        ];
        let r = run(Purpose::FineTune, lines.join("\n").as_bytes());
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.format, Some(DatasetFormat::Preference));
        let s = &r.stats;
        assert_eq!(s.examples, 3);
        let summary = |min, sum: u64, max| Summary {
            min,
            mean: sum as f64 / 3.0,
            max,
        };
        assert_eq!(s.messages_per_example, summary(3, 10, 4));
        assert_eq!(s.chars_per_example, summary(4, 27, 15));
        let roles: Vec<(&str, u64)> = s
            .role_counts
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(roles, vec![("assistant", 6), ("system", 1), ("user", 3)]);
        let hist = |h: &[HistogramBucket]| h.iter().map(|b| (b.le, b.count)).collect::<Vec<_>>();
        assert_eq!(hist(&s.length_histogram), vec![(4, 1), (8, 1), (16, 1)]);
        let p = s.preference.as_ref().unwrap();
        assert_eq!(p.pairs, 3);
        assert_eq!(p.prompt.chars, summary(2, 18, 13));
        assert_eq!(p.preferred.chars, summary(0, 3, 2));
        assert_eq!(p.non_preferred.chars, summary(1, 6, 3));
        assert_eq!(
            hist(&p.prompt.length_histogram),
            vec![(2, 1), (4, 1), (8, 0), (16, 1)]
        );
        assert_eq!(hist(&p.preferred.length_histogram), vec![(1, 2), (2, 1)]);
        assert_eq!(
            hist(&p.non_preferred.length_histogram),
            vec![(1, 1), (2, 1), (4, 1)]
        );
    }

    #[test]
    fn the_first_valid_line_decides_the_format() {
        let good = pair(IN, GOOD, BAD);
        // A chat file: a preference line after its first valid line is the error.
        let data = [chat(&[U, A]), good.clone(), chat(&[U, A])].join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert_eq!(r.format, Some(DatasetFormat::Chat));
        assert_eq!(errs(&r), vec![(2, "mixed_formats", "")]);
        assert!(r.errors[0].message.starts_with("a preference line"));
        assert!(r.errors[0].message.contains("as line 1 set"));
        assert!(r.stats.preference.is_none());
        // Before the first valid line, a line of either format gets its own errors.
        let data = [
            "[]".to_string(),
            "{}".to_string(),
            chat(&[U]),
            pair(IN, GOOD, GOOD),
            good.clone(),
            chat(&[U, A]),
            good,
        ]
        .join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert_eq!(r.format, Some(DatasetFormat::Preference));
        assert_eq!(
            errs(&r),
            vec![
                (1, "not_an_object", ""),
                (2, "missing_messages", "messages"),
                (3, "no_trained_assistant", "messages"),
                (4, "identical_outputs", "non_preferred_output"),
                (6, "mixed_formats", ""),
            ]
        );
        assert!(
            r.errors[1]
                .message
                .contains("or a preference pair {\"input\"")
        );
        assert!(r.errors[4].message.contains("as line 5 set"));
        assert_eq!((r.valid_examples, r.duplicates), (2, 1));
        // The same wherever batches and pieces begin.
        assert_eq!(feed_in(Purpose::FineTune, data.as_bytes(), &mut || 5), r);
        // A line with `messages` is chat whatever else it has.
        let both = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "input": 1, "preferred_output": 2}"#;
        let r = run(Purpose::FineTune, both.as_bytes());
        assert_eq!((r.format, r.valid_examples), (Some(DatasetFormat::Chat), 1));
    }

    #[test]
    fn without_a_valid_line_the_first_keyed_line_names_the_format() {
        let data = ["{}".to_string(), pair(IN, GOOD, GOOD), chat(&[U])].join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert_eq!(r.format, Some(DatasetFormat::Preference));
        assert_eq!(
            errs(&r),
            vec![
                (0, "no_examples", ""),
                (1, "missing_messages", "messages"),
                (2, "identical_outputs", "non_preferred_output"),
                (3, "no_trained_assistant", "messages"),
            ]
        );
        assert_eq!(
            run(Purpose::FineTune, b"{}\n").format,
            Some(DatasetFormat::Chat)
        );
        assert_eq!(
            run(Purpose::Pretrain, b"{}\n").format,
            Some(DatasetFormat::Text)
        );
    }

    #[test]
    fn mangled_preference_lines_give_one_outcome_each() {
        let base = String::from_utf8(hand_built()).unwrap();
        let lines: Vec<&str> = base.lines().take(23).collect();
        let subs = [b'"', b',', b':', b'}', b']', b'{', b'[', b' ', b'n'];
        let res = crate::datasets::validate::check_piece(
            &mangle(&lines, &subs),
            Purpose::FineTune,
            None,
            usize::MAX,
        );
        assert_one_outcome_each(&res);
        assert_eq!(res.decided.unwrap().format, DatasetFormat::Preference);
    }
}
