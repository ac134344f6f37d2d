//! Base models from a local folder of Hugging Face model folders (`--models-dir`): every immediate
//! subfolder is a candidate, and its folder name is its model id.
//!
//! A folder is loadable when its `config.json` describes an architecture Wick implements (Llama,
//! Qwen2, Mistral), its safetensors weights match that config (only the headers are read, never
//! the tensors), its `tokenizer.json` loads and its chat template (if any) compiles. Any other
//! folder is listed as unloadable with the reason, so an operator can see why it is not offered.
//! A folder's result is cached until the folder, or one of the files the check read, changes, so
//! listing on every request costs a few `stat`s per folder.
//!
//! Hidden entries (`.cache`, `.git`) and plain files beside the folders are not candidates.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use crate::chat::template::{ChatTemplate, TemplateError};
use crate::model::config::{Architecture, ModelConfig};
use crate::model::hf::{self, HfError};

/// The files a check reads; a change to any of them (or to the folder's entries) re-checks it.
const CHECKED_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
];

/// One subfolder of the models folder.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// The folder name.
    pub id: String,
    /// Absolute path of the folder.
    pub path: PathBuf,
    /// The folder's modification time, Unix seconds.
    pub created: i64,
    pub status: LocalStatus,
    /// Differs whenever a file the check read has changed; tells a loaded copy from a stale one.
    pub version: u64,
}

/// Whether a folder can be trained from and chatted with.
#[derive(Debug, Clone)]
pub enum LocalStatus {
    Loadable(Box<LocalInfo>),
    /// Why not, naming the file and the problem.
    Unloadable(String),
}

/// What the check learned about a loadable folder.
#[derive(Debug, Clone)]
pub struct LocalInfo {
    pub config: ModelConfig,
    pub parameters: u64,
    /// Whether the folder has its own chat template (else chat uses ChatML).
    pub chat_template: bool,
}

impl LocalModel {
    pub fn info(&self) -> Option<&LocalInfo> {
        match &self.status {
            LocalStatus::Loadable(info) => Some(info),
            LocalStatus::Unloadable(_) => None,
        }
    }

    pub fn unloadable_reason(&self) -> Option<&str> {
        match &self.status {
            LocalStatus::Loadable(_) => None,
            LocalStatus::Unloadable(reason) => Some(reason),
        }
    }
}

/// The models folder with the results of earlier checks; cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalModels {
    dir: PathBuf,
    cache: Arc<Mutex<HashMap<String, (u64, LocalModel)>>>,
}

/// Whether `name` can be a model id: letters, digits, `.`, `_`, `-`, not hidden. Such ids never
/// collide with trained models (`ft:...`) and are safe to join to a path.
pub fn is_valid_id(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl LocalModels {
    /// The models folder `dir` (made absolute; it need not exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        LocalModels {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            cache: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every candidate folder, loadable or not, by id. Blocking: call off the async runtime.
    pub fn scan(&self) -> Vec<LocalModel> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<LocalModel> = entries
            .flatten()
            .filter_map(|e| self.inspect(&e.file_name()))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        let mut cache = self.cache.lock().expect("local models cache lock");
        cache.retain(|name, _| out.iter().any(|m| &m.id == name));
        out
    }

    /// The folder named `id`, if there is one. Blocking: call off the async runtime.
    pub fn find(&self, id: &str) -> Option<LocalModel> {
        if !is_valid_id(id) {
            return None;
        }
        self.inspect(OsStr::new(id))
    }

    /// [`LocalModels::scan`] on a blocking thread.
    pub async fn list(&self) -> Vec<LocalModel> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.scan())
            .await
            .unwrap_or_default()
    }

    /// [`LocalModels::find`] on a blocking thread.
    pub async fn get(&self, id: &str) -> Option<LocalModel> {
        let (this, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || this.find(&id))
            .await
            .ok()
            .flatten()
    }

    /// The entry `entry`: `None` for a hidden entry, a plain file, or nothing at all.
    fn inspect(&self, entry: &OsStr) -> Option<LocalModel> {
        let name = entry.to_string_lossy();
        let name = name.as_ref();
        if name.starts_with('.') {
            return None;
        }
        let path = self.dir.join(entry);
        let (created, version, status) = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let version = fingerprint(&path, &meta);
                let cached = self
                    .cache
                    .lock()
                    .expect("local models cache lock")
                    .get(name)
                    .filter(|(v, _)| *v == version)
                    .map(|(_, m)| m.clone());
                if cached.is_some() {
                    return cached;
                }
                let status =
                    std::panic::catch_unwind(|| check_folder(&path, name)).unwrap_or_else(|_| {
                        LocalStatus::Unloadable("checking the folder failed unexpectedly".into())
                    });
                (unix_secs(meta.modified().ok()), version, status)
            }
            Ok(_) => return None,
            // Present but unreadable: a broken symlink, or no permission.
            Err(e) if path.symlink_metadata().is_ok() => (
                0,
                0,
                LocalStatus::Unloadable(format!("cannot read the folder: {e}")),
            ),
            Err(_) => return None,
        };
        let model = LocalModel {
            id: name.to_string(),
            path,
            created,
            status,
            version,
        };
        if version != 0 {
            self.cache
                .lock()
                .expect("local models cache lock")
                .insert(name.to_string(), (version, model.clone()));
        }
        Some(model)
    }
}

fn unix_secs(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A hash of the folder's and the checked files' sizes and modification times (never 0).
fn fingerprint(dir: &Path, meta: &std::fs::Metadata) -> u64 {
    let stamp = |m: &std::fs::Metadata| (m.len(), m.modified().ok());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stamp(meta).hash(&mut h);
    for f in CHECKED_FILES {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| stamp(&m))
            .hash(&mut h);
    }
    h.finish().max(1)
}

/// Checks the folder `dir` (named `name`) as described in the module documentation.
fn check_folder(dir: &Path, name: &str) -> LocalStatus {
    match check(dir, name) {
        Ok(info) => LocalStatus::Loadable(Box::new(info)),
        Err(reason) => LocalStatus::Unloadable(reason),
    }
}

/// Checks the Hugging Face folder `dir` as a base model named `name`: what it holds, or why it
/// cannot be trained from (naming the file and the problem). Blocking.
pub fn check(dir: &Path, name: &str) -> Result<LocalInfo, String> {
    if !is_valid_id(name) {
        return Err(
            "the folder name is not a usable model id: use only letters, digits, '.', '_' and '-'"
                .into(),
        );
    }
    if crate::model::preset(name).is_some() {
        return Err(format!(
            "{name} is the name of a preset, which takes precedence; rename the folder"
        ));
    }
    let config = read_config(dir)?;
    hf::check_weight_headers(dir, &config).map_err(|e| describe(dir, &e))?;
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.exists() {
        return Err("no tokenizer.json".into());
    }
    let tokenizer = crate::tokenizer::load(&tokenizer_path).map_err(|e| match e {
        crate::tokenizer::TokenizerError::Load { message, .. } => {
            format!("tokenizer.json: {message}")
        }
        other => other.to_string(),
    })?;
    let tokens = tokenizer.get_vocab_size(true);
    if tokens > config.vocab_size {
        return Err(format!(
            "tokenizer.json has {tokens} tokens but config.json's vocab_size is {}",
            config.vocab_size
        ));
    }
    let template = ChatTemplate::from_model_dir(dir).map_err(|e| match e {
        TemplateError::Read(path, message) => {
            let file = Path::new(&path).file_name().unwrap_or_default();
            format!("{}: {message}", file.to_string_lossy())
        }
        TemplateError::Render(e) => format!("the chat template does not compile: {e}"),
    })?;
    Ok(LocalInfo {
        parameters: config.num_parameters(),
        config,
        chat_template: template.from_model,
    })
}

/// Reads config.json, refusing architectures other than the Llama family by name first (a config
/// without `model_type` would otherwise be read as Llama).
fn read_config(dir: &Path) -> Result<ModelConfig, String> {
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no config.json".into());
        }
        Err(e) => return Err(format!("config.json: {e}")),
    };
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("config.json is not valid JSON: {e}"))?;
    let supported = [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Mistral,
    ]
    .map(Architecture::class_name);
    if let Some(class) = v
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        && !supported.contains(&class)
    {
        return Err(format!(
            "config.json: unsupported architecture {class}; Wick loads {}",
            supported.join(", ")
        ));
    }
    ModelConfig::from_hf_value(v).map_err(|e| e.to_string())
}

/// `e` with paths shown relative to the model folder (clients never see server paths).
fn describe(dir: &Path, e: &HfError) -> String {
    let file = |p: &Path| match p.strip_prefix(dir) {
        Ok(rel) if !rel.as_os_str().is_empty() => format!("{}: ", rel.display()),
        _ => String::new(),
    };
    match e {
        HfError::Io { path, source } => format!("{}{source}", file(path)),
        HfError::Config { source, .. } => source.to_string(),
        HfError::Weights { path, message } => format!("{}{message}", file(path)),
        HfError::Candle(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        for ok in ["llama-3.2-1b", "Qwen2_0.5B", "a"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a b", "a/b", "ft:x:y", "é"] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn odd_folders_are_unloadable_with_a_reason() {
        let root = tempfile::tempdir().unwrap();
        let mk = |name: &str, files: &[(&str, &str)]| {
            let d = root.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (f, text) in files {
                std::fs::write(d.join(f), text).unwrap();
            }
        };
        mk("empty", &[]);
        mk("bad-json", &[("config.json", "{not json")]);
        mk(
            "gpt2",
            &[(
                "config.json",
                r#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}"#,
            )],
        );
        mk(
            "no-weights",
            &[(
                "config.json",
                r#"{"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 1, "num_attention_heads": 2}"#,
            )],
        );
        mk("wick-llama-1m", &[]);
        mk("a b", &[]);
        mk(".cache", &[]);
        std::fs::write(root.path().join("README.md"), "not a model").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(root.path().join("gone"), root.path().join("dangling"))
                .unwrap();
            std::fs::create_dir(root.path().join(OsStr::from_bytes(b"not-utf8-\xff"))).unwrap();
        }

        let models = LocalModels::new(root.path());
        let reasons: HashMap<String, String> = models
            .scan()
            .into_iter()
            .map(|m| (m.id.clone(), m.unloadable_reason().unwrap().to_string()))
            .collect();
        assert_eq!(reasons["empty"], "no config.json");
        assert!(
            reasons["bad-json"].starts_with("config.json is not valid JSON"),
            "{reasons:?}"
        );
        assert!(
            reasons["gpt2"].starts_with("config.json: unsupported architecture GPT2LMHeadModel"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons["no-weights"],
            "no model.safetensors or model.safetensors.index.json"
        );
        assert!(reasons["wick-llama-1m"].contains("preset"), "{reasons:?}");
        assert!(reasons["a b"].contains("model id"), "{reasons:?}");
        #[cfg(unix)]
        {
            assert!(
                reasons["dangling"].starts_with("cannot read the folder"),
                "{reasons:?}"
            );
            assert!(
                reasons["not-utf8-\u{fffd}"].contains("model id"),
                "{reasons:?}"
            );
        }
        assert!(!reasons.contains_key(".cache") && !reasons.contains_key("README.md"));
        // Lookups by id see the same, and never leave the folder.
        assert!(models.find("gpt2").unwrap().info().is_none());
        assert!(models.find("../etc").is_none());
        assert!(models.find("missing").is_none());
        // A fixed folder is checked again.
        std::fs::write(root.path().join("empty").join("config.json"), "[]").unwrap();
        assert_eq!(
            models.find("empty").unwrap().unloadable_reason(),
            Some("config.json: expected a JSON object")
        );
    }

    /// A tiny Llama folder as `save_pretrained` would write it.
    fn tiny_llama(dir: &Path) -> ModelConfig {
        let texts: Vec<String> = (0..50).map(|i| format!("The cat {i} sat.")).collect();
        let tokenizer = crate::tokenizer::train_bpe(texts.iter(), 280).unwrap();
        let cfg = ModelConfig::llama(tokenizer.get_vocab_size(true), 16, 32, 1, 2, 1, 64);
        let vm =
            crate::model::init_varmap(&cfg, 1, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let w = crate::model::varmap_tensors(&vm);
        hf::save_model_folder(dir, &cfg, &w).unwrap();
        crate::tokenizer::save_trained(&tokenizer, dir, 64).unwrap();
        cfg
    }

    #[test]
    fn a_valid_folder_is_loadable_until_its_weights_are_damaged() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tiny");
        let cfg = tiny_llama(&dir);
        let models = LocalModels::new(root.path());
        let m = models.find("tiny").unwrap();
        let info = m.info().expect("loadable");
        assert_eq!(info.parameters, cfg.num_parameters());
        assert!(info.chat_template);
        assert!(m.path.is_absolute() && m.created > 0);

        // Cut short: the header promises more bytes than the file has.
        let weights = dir.join("model.safetensors");
        let len = std::fs::metadata(&weights).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&weights)
            .unwrap();
        f.set_len(len - 4).unwrap();
        drop(f);
        let reason = models
            .find("tiny")
            .unwrap()
            .unloadable_reason()
            .unwrap()
            .to_string();
        assert!(
            reason.starts_with("model.safetensors: truncated"),
            "{reason}"
        );

        // A config that does not match the weights.
        tiny_llama(&dir);
        let mut wider = cfg.clone();
        wider.hidden_size = 32;
        wider.head_dim = 16;
        std::fs::write(dir.join("config.json"), wider.to_hf_json().to_string()).unwrap();
        let reason = models
            .find("tiny")
            .unwrap()
            .unloadable_reason()
            .unwrap()
            .to_string();
        assert!(
            reason.contains("model.embed_tokens.weight has shape"),
            "{reason}"
        );
        assert!(
            !reason.contains(&root.path().display().to_string()),
            "{reason}"
        );
    }

    #[test]
    fn sharded_weights_need_every_shard() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("sharded");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("config.json"),
            r#"{"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let m = LocalModels::new(root.path()).find("sharded").unwrap();
        assert_eq!(
            m.unloadable_reason(),
            Some(
                "model.safetensors.index.json: names model-00001-of-00002.safetensors, which is missing"
            )
        );
    }
}
