//! The text of a parsed line, as cleaning sees it: the string fields that hold what a person
//! wrote (where personal data is masked), their contents joined (what the filters and the
//! language detector measure), and the rendered conversation (what near-duplicate detection
//! shingles). One walk per format, so every stage agrees on what an example's text is.

use serde_json::Value;

use crate::datasets::convert;
use crate::datasets::format::DatasetFormat;

/// Calls `f` on every free-text string of a line of `format`, in order: a document's `text`;
/// a chat's message contents (strings, or the `text` of content parts) and tool-call
/// `arguments`; a ShareGPT line's `system` and turn `value`s; an Alpaca line's `system`,
/// `history`, `instruction`, `input` and `output`; a preference pair's prompt and outputs
/// like chat messages. Other fields (roles, ids, weights, tool schemas) are left alone.
pub fn for_each_text_mut(format: DatasetFormat, line: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Value::Object(obj) = line else { return };
    match format {
        DatasetFormat::Text => str_mut(obj.get_mut("text"), f),
        DatasetFormat::Chat => messages_mut(obj.get_mut("messages"), f),
        DatasetFormat::Preference => {
            if let Some(Value::Object(input)) = obj.get_mut("input") {
                messages_mut(input.get_mut("messages"), f);
            }
            messages_mut(obj.get_mut("preferred_output"), f);
            messages_mut(obj.get_mut("non_preferred_output"), f);
        }
        DatasetFormat::ShareGpt => {
            str_mut(obj.get_mut("system"), f);
            if let Some(Value::Array(turns)) = obj.get_mut("conversations") {
                for t in turns {
                    if let Value::Object(t) = t {
                        str_mut(t.get_mut("value"), f);
                    }
                }
            }
        }
        DatasetFormat::Alpaca => {
            str_mut(obj.get_mut("system"), f);
            if let Some(Value::Array(pairs)) = obj.get_mut("history") {
                for p in pairs {
                    if let Value::Array(p) = p {
                        for s in p {
                            str_mut(Some(s), f);
                        }
                    }
                }
            }
            for key in ["instruction", "input", "output"] {
                str_mut(obj.get_mut(key), f);
            }
        }
    }
}

fn str_mut(v: Option<&mut Value>, f: &mut dyn FnMut(&mut String)) {
    if let Some(Value::String(s)) = v {
        f(s);
    }
}

fn messages_mut(v: Option<&mut Value>, f: &mut dyn FnMut(&mut String)) {
    let Some(Value::Array(messages)) = v else {
        return;
    };
    for m in messages {
        let Value::Object(m) = m else { continue };
        match m.get_mut("content") {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Value::Object(p) = p {
                        str_mut(p.get_mut("text"), f);
                    }
                }
            }
            _ => {}
        }
        if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
            for c in calls {
                if let Some(Value::Object(func)) = c.get_mut("function") {
                    str_mut(func.get_mut("arguments"), f);
                }
            }
        }
    }
}

/// The example's text for the filters and the language detector: its free-text strings (as
/// [`for_each_text_mut`] visits them, tool-call arguments left out) joined with newlines.
pub fn contents(format: DatasetFormat, line: &Value) -> String {
    let mut out = String::new();
    let mut push = |s: &str| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(s);
    };
    match format {
        DatasetFormat::Text => {
            if let Some(t) = line.get("text").and_then(Value::as_str) {
                push(t);
            }
        }
        _ => {
            for (_, content) in messages(format, line) {
                push(&content);
            }
        }
    }
    out
}

/// The conversation as near-duplicate detection shingles it: `role: content` per message,
/// joined with newlines (a document: its text). ShareGPT and Alpaca lines render as the chat
/// they convert to; a preference pair as its prompt, then its preferred and non-preferred output.
pub fn rendered(format: DatasetFormat, line: &Value) -> String {
    if format == DatasetFormat::Text {
        return line
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    let mut out = String::new();
    for (i, (role, content)) in messages(format, line).into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&role);
        out.push_str(": ");
        out.push_str(&content);
    }
    out
}

/// (role, content text) of every message of a conversation-like line.
fn messages(format: DatasetFormat, line: &Value) -> Vec<(String, String)> {
    let converted;
    let lists: Vec<&Value> = match format {
        DatasetFormat::Chat => line.get("messages").into_iter().collect(),
        DatasetFormat::Preference => vec![
            line.get("input").and_then(|i| i.get("messages")),
            line.get("preferred_output"),
            line.get("non_preferred_output"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        DatasetFormat::ShareGpt | DatasetFormat::Alpaca => {
            converted = convert::convert(format, line).map(|c| Value::Array(c.messages));
            converted.as_ref().ok().into_iter().collect()
        }
        DatasetFormat::Text => Vec::new(),
    };
    let mut out = Vec::new();
    for list in lists {
        let Some(list) = list.as_array() else {
            continue;
        };
        for m in list {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            out.push((role, content));
        }
    }
    out
}

/// A chat message as [`quick`] reads it: only the role and the content.
#[derive(serde::Deserialize)]
struct QuickMessage<'a> {
    #[serde(borrow, default)]
    role: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    content: Value,
}

#[derive(serde::Deserialize)]
struct QuickChat<'a> {
    #[serde(borrow)]
    messages: Vec<QuickMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct QuickDoc<'a> {
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// [`rendered`] and [`contents`] of a chat or text line straight from its bytes, without a JSON
/// tree of the whole line (the near-duplicate and filter path of a line nothing rewrites); `None`
/// for other formats, or a line that does not read so.
pub fn quick(format: DatasetFormat, line: &[u8]) -> Option<(String, String)> {
    match format {
        DatasetFormat::Text => {
            let d: QuickDoc = serde_json::from_slice(line).ok()?;
            Some((d.text.to_string(), d.text.into_owned()))
        }
        DatasetFormat::Chat => {
            let c: QuickChat = serde_json::from_slice(line).ok()?;
            let (mut rendered, mut contents) = (String::new(), String::new());
            for (i, m) in c.messages.iter().enumerate() {
                let content = match &m.content {
                    Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    Value::Array(parts) => std::borrow::Cow::Owned(
                        parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    _ => std::borrow::Cow::Borrowed(""),
                };
                if i > 0 {
                    rendered.push('\n');
                    contents.push('\n');
                }
                rendered.push_str(m.role.as_deref().unwrap_or(""));
                rendered.push_str(": ");
                rendered.push_str(&content);
                contents.push_str(&content);
            }
            Some((rendered, contents))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn visited(format: DatasetFormat, mut line: Value) -> Vec<String> {
        let mut seen = Vec::new();
        for_each_text_mut(format, &mut line, &mut |s| seen.push(s.clone()));
        seen
    }

    #[test]
    fn each_format_visits_its_free_text_only() {
        let chat = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "part"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"to\": \"a@b.io\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]});
        assert_eq!(
            visited(DatasetFormat::Chat, chat.clone()),
            ["sys", "part", "{\"to\": \"a@b.io\"}", "done"]
        );
        assert_eq!(contents(DatasetFormat::Chat, &chat), "sys\npart\n\ndone");
        assert_eq!(
            rendered(DatasetFormat::Chat, &chat),
            "system: sys\nuser: part\nassistant: \ntool: done"
        );
        let sharegpt = json!({"id": "x", "system": "s", "conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]});
        assert_eq!(
            visited(DatasetFormat::ShareGpt, sharegpt.clone()),
            ["s", "q", "a"]
        );
        assert_eq!(
            rendered(DatasetFormat::ShareGpt, &sharegpt),
            "system: s\nuser: q\nassistant: a"
        );
        let alpaca =
            json!({"instruction": "i", "input": "n", "output": "o", "history": [["h1", "h2"]]});
        assert_eq!(
            visited(DatasetFormat::Alpaca, alpaca.clone()),
            ["h1", "h2", "i", "n", "o"]
        );
        assert_eq!(contents(DatasetFormat::Alpaca, &alpaca), "h1\nh2\ni\nn\no");
        let pair = json!({"input": {"messages": [{"role": "user", "content": "p"}]},
            "preferred_output": [{"role": "assistant", "content": "y"}],
            "non_preferred_output": [{"role": "assistant", "content": "n"}]});
        assert_eq!(
            visited(DatasetFormat::Preference, pair.clone()),
            ["p", "y", "n"]
        );
        assert_eq!(
            rendered(DatasetFormat::Preference, &pair),
            "user: p\nassistant: y\nassistant: n"
        );
        // The quick path reads chats and documents as the tree path does.
        for (format, line) in [
            (DatasetFormat::Chat, &chat),
            (DatasetFormat::Text, &json!({"text": "a\tb", "x": 1})),
        ] {
            let bytes = serde_json::to_vec(line).unwrap();
            assert_eq!(
                quick(format, &bytes),
                Some((rendered(format, line), contents(format, line)))
            );
        }
        assert_eq!(quick(DatasetFormat::Alpaca, b"{}"), None);
        let doc = json!({"text": "hello", "meta": "m"});
        assert_eq!(visited(DatasetFormat::Text, doc.clone()), ["hello"]);
        assert_eq!(rendered(DatasetFormat::Text, &doc), "hello");
    }
}
