//! Chat templates: the model's own `chat_template` (Jinja, from `tokenizer_config.json`) rendered
//! with minijinja the way transformers' `apply_chat_template` renders it; ChatML when a model has
//! none. The settings are what transformers' rendering needs: trim_blocks and lstrip_blocks,
//! minijinja-contrib's Python string methods (`.startswith`, `.strip`, `.items()`), a
//! `raise_exception` function, key order kept (the `preserve_order` features of minijinja and
//! serde_json: templates that loop over a tool's JSON render it in the order it was written), and
//! `bos_token` / `eos_token` always passed.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use crate::tokenizer::CHATML_TEMPLATE;

/// One message as templates see it. Tool fields are passed through as OpenAI writes them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }
}

/// Why a template could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("chat template error: {0}")]
    Render(#[from] Error),
}

/// A compiled chat template with the special tokens it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    pub bos_token: String,
    pub eos_token: String,
    /// Whether the template is the model's own (false: the ChatML fallback).
    pub from_model: bool,
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            from_model: true,
        })
    }

    /// The template of the model folder `dir`: `chat_template` from its `tokenizer_config.json`
    /// (a string, or the `default` of a list of named templates), else `chat_template.jinja`
    /// (where transformers 4.47 and later save it), else ChatML.
    pub fn from_model_dir(dir: &Path) -> Result<Self, TemplateError> {
        let read_error = |path: &Path, e: &dyn std::fmt::Display| {
            TemplateError::Read(path.display().to_string(), e.to_string())
        };
        let path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| read_error(&path, &e))?,
            Err(_) => serde_json::Value::Null,
        };
        let token = |key: &str| match &config[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let named_default = config["chat_template"].as_array().and_then(|list| {
            list.iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
        });
        let jinja = dir.join("chat_template.jinja");
        let own = match config["chat_template"].as_str().or(named_default) {
            Some(s) => Some(s.to_string()),
            None if jinja.is_file() => {
                Some(std::fs::read_to_string(&jinja).map_err(|e| read_error(&jinja, &e))?)
            }
            None => None,
        };
        let source = own.as_deref().unwrap_or(CHATML_TEMPLATE);
        let mut template = Self::new(source, &token("bos_token"), &token("eos_token"))?;
        template.from_model = own.is_some();
        Ok(template)
    }

    /// Renders `messages`, ending with the assistant's opening when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// As [`ChatTemplate::render`], with the conversation's `tools` (OpenAI's function list).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template("chat")?;
        Ok(tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
            tools => tools.map(Value::from_serialize).unwrap_or(Value::from(())),
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_as_transformers_does() {
        // transformers' apply_chat_template with the ChatML template above gives exactly this.
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "<|endoftext|>").unwrap();
        let msgs = vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "2+2?"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_folder_template_comes_from_tokenizer_config_then_chat_template_jinja() {
        let dir = tempfile::tempdir().unwrap();
        let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
        assert!(!t.from_model, "an empty folder falls back to ChatML");
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "J{{ messages[0].content }}",
        )
        .unwrap();
        let msgs = [ChatMessage::new("user", "hi")];
        let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
        assert_eq!(
            (t.from_model, t.render(&msgs, false).unwrap()),
            (true, "Jhi".into())
        );
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template": "C{{ messages[0].content }}"}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
        assert_eq!(t.render(&msgs, false).unwrap(), "Chi");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        assert!(
            t.render(&[], false)
                .unwrap_err()
                .to_string()
                .contains("no system role")
        );
    }
}
