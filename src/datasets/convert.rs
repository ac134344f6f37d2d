//! Chat formats other than OpenAI's, read as OpenAI's `{"messages": [...]}`: ShareGPT and
//! Alpaca lines, as LLaMA-Factory documents them (its `data/README.md`) and FastChat and axolotl
//! write them. The upload validator checks a converted line with chat's rules, the trainer reads
//! the converted messages, and cleaning can write them out as chat lines: one conversion for all
//! three, so what is validated is what trains.
//!
//! - ShareGPT: `{"conversations": [{"from": .., "value": ..}, ..], "system"?: str, "tools"?: str}`.
//!   `from` is `human`/`user` (→ `user`), `gpt`/`assistant`/`chatgpt`/`bing`/`bard`/`model`
//!   (→ `assistant`), `system`, `function_call` (an assistant tool call: `value` is the JSON of
//!   `{"name", "arguments"}` or a list of them) or `observation`/`tool` (→ `tool`, answering the
//!   calls before it). The top-level `system` becomes a first system message; `tools` (a JSON
//!   string of function descriptions, or the list itself) becomes OpenAI's `tools`. A turn's
//!   `weight` (0 or 1) is kept.
//! - Alpaca: `{"instruction": str, "input"?: str, "output": str, "system"?: str, "history"?:
//!   [[prompt, response], ..]}`. The user turn is `instruction` and, when `input` is not empty,
//!   `instruction + "\n" + input` (LLaMA-Factory's rule); `history` pairs come before it, their
//!   responses trained like the output.

use serde_json::{Map, Value, json};

use super::format::DatasetFormat;

/// Why a line could not be converted: a validator error code, the JSON path, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// One of the validator's codes (`missing_conversations`, `invalid_from`, ..).
    pub code: &'static str,
    pub param: String,
    pub message: String,
}

impl ConvertError {
    fn new(code: &'static str, param: impl Into<String>, message: impl Into<String>) -> Self {
        ConvertError {
            code,
            param: param.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.param.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.param, self.message)
        }
    }
}

/// A converted line: OpenAI messages, tools, and where each message came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedChat {
    pub messages: Vec<Value>,
    pub tools: Option<Value>,
    /// For each message, the JSON path of the source field holding its text
    /// (`conversations[2].value`, `history[0][1]`, `output`, `system`).
    pub origins: Vec<String>,
    /// The source field that stands for the whole list (`conversations`, `output`).
    pub root: &'static str,
}

impl ConvertedChat {
    /// The OpenAI chat line: `{"messages": [...]}`, plus `tools` when there are some.
    #[must_use]
    pub fn to_line(&self) -> Value {
        let mut line = Map::new();
        line.insert("messages".into(), Value::Array(self.messages.clone()));
        if let Some(t) = &self.tools {
            line.insert("tools".into(), t.clone());
        }
        Value::Object(line)
    }

    /// Rewrites a chat-rule `param` (`messages[3].content`) to the source's path
    /// (`conversations[3].value`); other params are returned as they are.
    #[must_use]
    pub fn source_param(&self, param: &str) -> String {
        if param == "messages" {
            return self.root.to_string();
        }
        let Some(rest) = param.strip_prefix("messages[") else {
            return param.to_string();
        };
        let Some((index, tail)) = rest.split_once(']') else {
            return param.to_string();
        };
        match index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.origins.get(i))
        {
            Some(origin) if tail.is_empty() || tail == ".content" => origin.clone(),
            Some(origin) => {
                // `conversations[2].value` + `.weight` → `conversations[2].weight`.
                let base = origin.strip_suffix(".value").unwrap_or(origin);
                format!("{base}{tail}")
            }
            None => param.to_string(),
        }
    }
}

/// The top-level key that names a converted format, for messages.
pub fn key_of(format: DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::ShareGpt => "conversations",
        DatasetFormat::Alpaca => "instruction",
        DatasetFormat::Chat => "messages",
        DatasetFormat::Preference => "preferred_output",
        DatasetFormat::Text => "text",
    }
}

/// Whether lines of `format` are chats the supervised trainer reads (OpenAI's, or converted).
#[must_use]
pub fn is_chat(format: DatasetFormat) -> bool {
    matches!(
        format,
        DatasetFormat::Chat | DatasetFormat::ShareGpt | DatasetFormat::Alpaca
    )
}

/// The chat format a parsed `fine-tune` line is written in, by its keys: `messages` chat,
/// `conversations` ShareGPT, `instruction` or `output` Alpaca; `None` for anything else.
#[must_use]
pub fn chat_format_of(line: &Value) -> Option<DatasetFormat> {
    let obj = line.as_object()?;
    if obj.contains_key("messages") {
        Some(DatasetFormat::Chat)
    } else if obj.contains_key("conversations") {
        Some(DatasetFormat::ShareGpt)
    } else if obj.contains_key("instruction") || obj.contains_key("output") {
        Some(DatasetFormat::Alpaca)
    } else {
        None
    }
}

/// A parsed line of any chat format as OpenAI's chat line (a chat line is returned as it is).
pub fn to_chat_line(line: Value) -> Result<Value, ConvertError> {
    match chat_format_of(&line) {
        Some(DatasetFormat::Chat) => Ok(line),
        Some(f) => convert(f, &line).map(|c| c.to_line()),
        None => Err(ConvertError::new(
            "missing_messages",
            "messages",
            "not a chat line: expected \"messages\" (or ShareGPT's \"conversations\", or \
             Alpaca's \"instruction\" and \"output\")",
        )),
    }
}

/// Converts a parsed line of `format` (ShareGPT or Alpaca) to chat.
pub fn convert(format: DatasetFormat, line: &Value) -> Result<ConvertedChat, ConvertError> {
    let Value::Object(obj) = line else {
        return Err(ConvertError::new(
            "not_an_object",
            "",
            format!("each line must be a JSON object, got {}", kind(line)),
        ));
    };
    match format {
        DatasetFormat::ShareGpt => from_sharegpt(obj),
        DatasetFormat::Alpaca => from_alpaca(obj),
        other => Err(ConvertError::new(
            "not_convertible",
            "",
            format!("{} lines are not converted", other.as_str()),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An optional string field: absent or null is `None`.
fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    code: &'static str,
) -> Result<Option<&'a str>, ConvertError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConvertError::new(
            code,
            key,
            format!("\"{key}\" must be a string, got {}", kind(other)),
        )),
    }
}

fn message(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

fn from_sharegpt(obj: &Map<String, Value>) -> Result<ConvertedChat, ConvertError> {
    let turns = match obj.get("conversations") {
        None => {
            return Err(ConvertError::new(
                "missing_conversations",
                "conversations",
                "missing \"conversations\" field",
            ));
        }
        Some(Value::Array(t)) => t,
        Some(other) => {
            return Err(ConvertError::new(
                "conversations_not_array",
                "conversations",
                format!("\"conversations\" must be an array, got {}", kind(other)),
            ));
        }
    };
    if turns.is_empty() {
        return Err(ConvertError::new(
            "empty_conversations",
            "conversations",
            "\"conversations\" must not be empty",
        ));
    }
    let mut out = ConvertedChat {
        messages: Vec::with_capacity(turns.len() + 1),
        tools: sharegpt_tools(obj)?,
        origins: Vec::with_capacity(turns.len() + 1),
        root: "conversations",
    };
    if let Some(system) = optional_str(obj, "system", "invalid_system")?
        && !system.is_empty()
    {
        out.messages.push(message("system", system));
        out.origins.push("system".into());
    }
    // Tool calls not yet answered, oldest first: an observation answers the first of them.
    let mut open_calls: std::collections::VecDeque<String> = Default::default();
    let mut call_count = 0usize;
    for (i, turn) in turns.iter().enumerate() {
        let path = format!("conversations[{i}]");
        let Value::Object(t) = turn else {
            return Err(ConvertError::new(
                "invalid_turn",
                path,
                format!("each turn must be an object, got {}", kind(turn)),
            ));
        };
        let from = match t.get("from") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => {
                return Err(ConvertError::new(
                    "invalid_from",
                    format!("{path}.from"),
                    "missing \"from\"",
                ));
            }
            Some(other) => {
                return Err(ConvertError::new(
                    "invalid_from",
                    format!("{path}.from"),
                    format!("\"from\" must be a string, got {}", kind(other)),
                ));
            }
        };
        let value = match t.get("value") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => {
                return Err(ConvertError::new(
                    "invalid_turn",
                    format!("{path}.value"),
                    "missing \"value\"",
                ));
            }
            Some(other) => {
                return Err(ConvertError::new(
                    "invalid_turn",
                    format!("{path}.value"),
                    format!("\"value\" must be a string, got {}", kind(other)),
                ));
            }
        };
        let mut m = match from {
            "human" | "user" => message("user", value),
            "gpt" | "assistant" | "chatgpt" | "bing" | "bard" | "model" => {
                message("assistant", value)
            }
            "system" => message("system", value),
            "function_call" => {
                let calls = tool_calls(value, &format!("{path}.value"), &mut call_count)?;
                for c in &calls {
                    open_calls.push_back(c["id"].as_str().unwrap_or_default().to_string());
                }
                json!({"role": "assistant", "content": null, "tool_calls": calls})
            }
            "observation" | "tool" => {
                let mut m = message("tool", value);
                if let Some(id) = open_calls.pop_front() {
                    m["tool_call_id"] = Value::String(id);
                }
                m
            }
            other => {
                return Err(ConvertError::new(
                    "invalid_from",
                    format!("{path}.from"),
                    format!(
                        "unknown \"from\" {other:?}: expected human, gpt, system, \
                         function_call or observation (or user, assistant, tool)"
                    ),
                ));
            }
        };
        if let Some(w) = t.get("weight").filter(|w| !w.is_null()) {
            m["weight"] = w.clone();
        }
        out.messages.push(m);
        out.origins.push(format!("{path}.value"));
    }
    Ok(out)
}

/// `tools`: a JSON string holding a list (or one) of function descriptions, as LLaMA-Factory
/// writes it, or the list itself; each description becomes `{"type": "function", "function":
/// description}` unless it already has that shape.
fn sharegpt_tools(obj: &Map<String, Value>) -> Result<Option<Value>, ConvertError> {
    let bad = |msg: String| ConvertError::new("invalid_tools", "tools", msg);
    let parsed = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| bad(format!("\"tools\" is not valid JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    let list = match parsed {
        Value::Array(l) => l,
        o @ Value::Object(_) => vec![o],
        other => {
            return Err(bad(format!(
                "\"tools\" must describe functions (a list of objects), got {}",
                kind(&other)
            )));
        }
    };
    let tools = list
        .into_iter()
        .map(|d| match d {
            Value::Object(ref o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                Ok(d)
            }
            Value::Object(_) => Ok(json!({"type": "function", "function": d})),
            other => Err(bad(format!(
                "each tool must be an object, got {}",
                kind(&other)
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!tools.is_empty()).then_some(Value::Array(tools)))
}

/// A `function_call` turn's value: `{"name", "arguments"}` or a list of them, as JSON text;
/// `arguments` may be an object (written back as JSON text, as OpenAI's `tool_calls` carry it)
/// or already a string.
fn tool_calls(value: &str, path: &str, count: &mut usize) -> Result<Vec<Value>, ConvertError> {
    let bad = |msg: String| ConvertError::new("invalid_function_call", path, msg);
    let parsed: Value = serde_json::from_str(value)
        .map_err(|e| bad(format!("a function_call value must be JSON: {e}")))?;
    let list = match parsed {
        Value::Array(l) => l,
        other => vec![other],
    };
    if list.is_empty() {
        return Err(bad("a function_call value must name a function".into()));
    }
    list.into_iter()
        .map(|call| {
            let Value::Object(c) = call else {
                return Err(bad(format!(
                    "a function call must be an object, got {}",
                    kind(&call)
                )));
            };
            let Some(name) = c
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            else {
                return Err(bad("a function call needs a \"name\"".into()));
            };
            let arguments = match c.get("arguments") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            let id = format!("call_{}", *count);
            *count += 1;
            Ok(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }))
        })
        .collect()
}

fn from_alpaca(obj: &Map<String, Value>) -> Result<ConvertedChat, ConvertError> {
    let instruction = match obj.get("instruction") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            return Err(ConvertError::new(
                "invalid_instruction",
                "instruction",
                "missing \"instruction\" field",
            ));
        }
        Some(other) => {
            return Err(ConvertError::new(
                "invalid_instruction",
                "instruction",
                format!("\"instruction\" must be a string, got {}", kind(other)),
            ));
        }
    };
    let input = optional_str(obj, "input", "invalid_input")?.unwrap_or("");
    let output = match obj.get("output") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            return Err(ConvertError::new(
                "missing_output",
                "output",
                "missing \"output\" field",
            ));
        }
        Some(other) => {
            return Err(ConvertError::new(
                "invalid_output",
                "output",
                format!("\"output\" must be a string, got {}", kind(other)),
            ));
        }
    };
    let prompt = if input.is_empty() {
        instruction.to_string()
    } else if instruction.is_empty() {
        input.to_string()
    } else {
        format!("{instruction}\n{input}")
    };
    if prompt.trim().is_empty() {
        return Err(ConvertError::new(
            "invalid_instruction",
            "instruction",
            "\"instruction\" and \"input\" are both empty: there is no prompt",
        ));
    }
    let mut out = ConvertedChat {
        messages: Vec::new(),
        tools: None,
        origins: Vec::new(),
        root: "output",
    };
    if let Some(system) = optional_str(obj, "system", "invalid_system")?
        && !system.is_empty()
    {
        out.messages.push(message("system", system));
        out.origins.push("system".into());
    }
    match obj.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pairs)) => {
            for (i, pair) in pairs.iter().enumerate() {
                let p = match pair {
                    Value::Array(p) if p.len() == 2 => p,
                    _ => {
                        return Err(ConvertError::new(
                            "invalid_history",
                            format!("history[{i}]"),
                            "each history entry must be a [prompt, response] pair of strings",
                        ));
                    }
                };
                for (j, role) in ["user", "assistant"].into_iter().enumerate() {
                    let Value::String(text) = &p[j] else {
                        return Err(ConvertError::new(
                            "invalid_history",
                            format!("history[{i}][{j}]"),
                            format!("must be a string, got {}", kind(&p[j])),
                        ));
                    };
                    out.messages.push(message(role, text));
                    out.origins.push(format!("history[{i}][{j}]"));
                }
            }
        }
        Some(other) => {
            return Err(ConvertError::new(
                "invalid_history",
                "history",
                format!("\"history\" must be an array of pairs, got {}", kind(other)),
            ));
        }
    }
    out.messages.push(message("user", &prompt));
    out.origins.push(if instruction.is_empty() {
        "input".into()
    } else {
        "instruction".into()
    });
    out.messages.push(message("assistant", output));
    out.origins.push("output".into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(format: DatasetFormat, line: &str) -> Result<ConvertedChat, ConvertError> {
        convert(format, &serde_json::from_str(line).unwrap())
    }

    /// LLaMA-Factory's `data/README.md`, "Sharegpt Format / Supervised Fine-Tuning Dataset",
    /// the documented example (one line of its JSON array).
    #[test]
    fn sharegpt_documented_example() {
        let line = r#"{"conversations": [{"from": "human", "value": "human instruction"}, {"from": "gpt", "value": "model response"}, {"from": "human", "value": "human instruction"}, {"from": "gpt", "value": "model response"}], "system": "system prompt (optional)", "tools": "tool description (optional)"}"#;
        // The documented `tools` placeholder is prose, not JSON: refused, naming the field.
        let e = conv(DatasetFormat::ShareGpt, line).unwrap_err();
        assert_eq!((e.code, e.param.as_str()), ("invalid_tools", "tools"));
        let line = line.replace(r#", "tools": "tool description (optional)""#, "");
        let c = conv(DatasetFormat::ShareGpt, &line).unwrap();
        assert_eq!(
            c.to_line(),
            json!({"messages": [
                {"role": "system", "content": "system prompt (optional)"},
                {"role": "user", "content": "human instruction"},
                {"role": "assistant", "content": "model response"},
                {"role": "user", "content": "human instruction"},
                {"role": "assistant", "content": "model response"},
            ]})
        );
        assert_eq!(c.origins[0], "system");
        assert_eq!(c.origins[4], "conversations[3].value");
        assert_eq!(
            c.source_param("messages[2].content"),
            "conversations[1].value"
        );
        assert_eq!(
            c.source_param("messages[2].weight"),
            "conversations[1].weight"
        );
        assert_eq!(c.source_param("messages"), "conversations");
    }

    /// FastChat's `data/dummy_conversation.json` shape (Vicuna's ShareGPT): an `id` beside the
    /// conversation, no system.
    #[test]
    fn sharegpt_fastchat_example() {
        let line = r#"{"id": "identity_0", "conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS)."}]}"#;
        let c = conv(DatasetFormat::ShareGpt, line).unwrap();
        assert_eq!(c.messages.len(), 2);
        assert_eq!(
            c.messages[0],
            json!({"role": "user", "content": "Who are you?"})
        );
        assert_eq!(c.messages[1]["role"], "assistant");
    }

    /// LLaMA-Factory's function-calling ShareGPT (`function_call` then `observation`), with a
    /// JSON `tools` string: OpenAI tool calls with ids the tool answer refers to.
    #[test]
    fn sharegpt_function_calls_become_tool_calls() {
        let line = r#"{"conversations": [{"from": "human", "value": "What is 2+3?"}, {"from": "function_call", "value": "{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}"}, {"from": "observation", "value": "5"}, {"from": "gpt", "value": "It is 5."}], "tools": "[{\"name\": \"add\", \"description\": \"adds\", \"parameters\": {\"type\": \"object\"}}]"}"#;
        let c = conv(DatasetFormat::ShareGpt, line).unwrap();
        assert_eq!(
            c.messages[1],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}]})
        );
        assert_eq!(
            c.messages[2],
            json!({"role": "tool", "content": "5", "tool_call_id": "call_0"})
        );
        assert_eq!(
            c.tools,
            Some(json!([{"type": "function", "function":
                {"name": "add", "description": "adds", "parameters": {"type": "object"}}}]))
        );
    }

    #[test]
    fn sharegpt_errors_name_the_field() {
        let cases = [
            (
                r#"{"conversations": 3}"#,
                "conversations_not_array",
                "conversations",
            ),
            (
                r#"{"conversations": []}"#,
                "empty_conversations",
                "conversations",
            ),
            (
                r#"{"conversations": ["hi"]}"#,
                "invalid_turn",
                "conversations[0]",
            ),
            (
                r#"{"conversations": [{"from": "human"}]}"#,
                "invalid_turn",
                "conversations[0].value",
            ),
            (
                r#"{"conversations": [{"from": "robot", "value": "x"}]}"#,
                "invalid_from",
                "conversations[0].from",
            ),
            (
                r#"{"conversations": [{"value": "x"}]}"#,
                "invalid_from",
                "conversations[0].from",
            ),
            (
                r#"{"conversations": [{"from": "function_call", "value": "add(1)"}]}"#,
                "invalid_function_call",
                "conversations[0].value",
            ),
            (
                r#"{"conversations": [{"from": "human", "value": "x"}], "system": 1}"#,
                "invalid_system",
                "system",
            ),
            (
                r#"{"messages": []}"#,
                "missing_conversations",
                "conversations",
            ),
        ];
        for (line, code, param) in cases {
            let e = conv(DatasetFormat::ShareGpt, line).unwrap_err();
            assert_eq!((e.code, e.param.as_str()), (code, param), "{line}");
        }
    }

    /// LLaMA-Factory's `data/README.md`, "Alpaca Format / Supervised Fine-Tuning Dataset": the
    /// prompt is `instruction\ninput`, `system` a system message, `history` pairs trained too.
    #[test]
    fn alpaca_documented_example() {
        let line = r#"{"instruction": "human instruction (required)", "input": "human input (optional)", "output": "model response (required)", "system": "system prompt (optional)", "history": [["human instruction in the first round (optional)", "model response in the first round (optional)"], ["human instruction in the second round (optional)", "model response in the second round (optional)"]]}"#;
        let c = conv(DatasetFormat::Alpaca, line).unwrap();
        assert_eq!(
            c.to_line(),
            json!({"messages": [
                {"role": "system", "content": "system prompt (optional)"},
                {"role": "user", "content": "human instruction in the first round (optional)"},
                {"role": "assistant", "content": "model response in the first round (optional)"},
                {"role": "user", "content": "human instruction in the second round (optional)"},
                {"role": "assistant", "content": "model response in the second round (optional)"},
                {"role": "user", "content": "human instruction (required)\nhuman input (optional)"},
                {"role": "assistant", "content": "model response (required)"},
            ]})
        );
        assert_eq!(c.origins[3], "history[1][0]");
        assert_eq!(c.source_param("messages[6].content"), "output");
    }

    /// Stanford Alpaca's `alpaca_data.json`: the first record, whose `input` is empty.
    #[test]
    fn alpaca_stanford_record_without_input() {
        let line = r#"{"instruction": "Give three tips for staying healthy.", "input": "", "output": "1.Eat a balanced diet and make sure to include plenty of fruits and vegetables. \n2. Exercise regularly to keep your body active and strong. \n3. Get enough sleep and maintain a consistent sleep schedule."}"#;
        let c = conv(DatasetFormat::Alpaca, line).unwrap();
        assert_eq!(c.messages.len(), 2);
        assert_eq!(
            c.messages[0],
            json!({"role": "user", "content": "Give three tips for staying healthy."})
        );
        assert!(
            c.messages[1]["content"]
                .as_str()
                .unwrap()
                .starts_with("1.Eat")
        );
    }

    #[test]
    fn alpaca_errors_name_the_field() {
        let cases = [
            (r#"{"output": "x"}"#, "invalid_instruction", "instruction"),
            (
                r#"{"instruction": 1, "output": "x"}"#,
                "invalid_instruction",
                "instruction",
            ),
            (r#"{"instruction": "x"}"#, "missing_output", "output"),
            (
                r#"{"instruction": "x", "output": 2}"#,
                "invalid_output",
                "output",
            ),
            (
                r#"{"instruction": "x", "input": [], "output": "y"}"#,
                "invalid_input",
                "input",
            ),
            (
                r#"{"instruction": "", "input": "", "output": "y"}"#,
                "invalid_instruction",
                "instruction",
            ),
            (
                r#"{"instruction": "x", "output": "y", "history": [["a"]]}"#,
                "invalid_history",
                "history[0]",
            ),
            (
                r#"{"instruction": "x", "output": "y", "history": [["a", 1]]}"#,
                "invalid_history",
                "history[0][1]",
            ),
        ];
        for (line, code, param) in cases {
            let e = conv(DatasetFormat::Alpaca, line).unwrap_err();
            assert_eq!((e.code, e.param.as_str()), (code, param), "{line}");
        }
    }
}
