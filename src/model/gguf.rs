//! GGUF export: one Llama-family model (Llama, Qwen2, Mistral) as a single GGUF v3 file that
//! llama.cpp, Ollama, LM Studio and transformers' GGUF loader read.
//!
//! The caller hands over plain data — the hyperparameters ([`ModelMeta`]), the Hugging Face
//! tokenizer files ([`TokenizerFiles`]) and every weight as `f32` under its Hugging Face name
//! ([`TensorIn`]) — and [`write_gguf`] writes the file in one pass: header, metadata, tensor
//! directory (sizes follow from types and shapes), then the tensors, each quantised as it is
//! written (rayon over blocks). [`write_gguf_streaming`] does the same but asks for each tensor's
//! values only when it writes it, so no more than one tensor need be held as f32 at a time.
//!
//! What the file holds follows llama.cpp's own converter (`convert_hf_to_gguf.py`) and quantiser
//! (`llama-quant.cpp`), since those define what llama.cpp expects to read:
//! - llama.cpp's tensor names, with dimensions reversed (GGUF lists the fastest-varying first);
//! - Llama and Mistral `q_proj`/`k_proj` rows permuted from Hugging Face's rotate-half RoPE layout
//!   to the interleaved pairs llama.cpp's `llama` graph rotates (Qwen2 runs rotate-half in
//!   llama.cpp too, so its rows are left alone);
//! - norms and biases in F32 in every mode; F16, Q8_0, or llama.cpp's Q4_K_M mix (Q4_K, with Q6_K
//!   for the output matrix and for `attn_v`/`ffn_down` in the layers llama.cpp's `use_more_bits`
//!   picks), falling back to Q8_0 or F16 where a row does not fill whole blocks;
//! - the tokenizer as llama.cpp's byte-level BPE (`tokenizer.ggml.model = "gpt2"`), with the
//!   pre-tokenizer named by the regex the `tokenizer.json` splits with. Tokenizers llama.cpp would
//!   tokenise differently (SentencePiece, Unigram, an unknown split regex) are refused.
//!
//! A small reader ([`read_gguf`], [`dequantize`]) parses the header and metadata and dequantises
//! F32/F16/Q8_0/Q4_K/Q6_K, for tests and for checking a written file without Python.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use half::f16;
use rayon::prelude::*;
use serde_json::Value;

/// The GGUF version written (and the only one read).
pub const GGUF_VERSION: u32 = 3;
/// Alignment of the tensor data section and of every tensor in it (GGUF's default, so the file
/// needs no `general.alignment` key).
pub const ALIGNMENT: u64 = 32;
/// `general.quantization_version`: the ggml block layouts this file uses (GGML_QNT_VERSION).
pub const QUANTIZATION_VERSION: u32 = 2;

const MAGIC: &[u8; 4] = b"GGUF";
/// Values per Q8_0 block.
const QK8_0: usize = 32;
/// Values per K-quant super-block.
const QK_K: usize = 256;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// How the matrices are stored. Norms, biases and `rope_freqs` stay F32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quant {
    /// Every matrix as IEEE half precision (`general.file_type` 1, MOSTLY_F16).
    F16,
    /// Blocks of 32 int8 with one f16 scale (`general.file_type` 7, MOSTLY_Q8_0).
    Q8_0,
    /// llama.cpp's Q4_K_M mix (`general.file_type` 15, MOSTLY_Q4_K_M).
    Q4KM,
}

impl Quant {
    /// Every mode, in the order a user would read them.
    pub const ALL: [Quant; 3] = [Quant::F16, Quant::Q8_0, Quant::Q4KM];

    /// The spelling llama.cpp and Ollama use: "f16", "q8_0", "q4_k_m".
    pub fn as_str(self) -> &'static str {
        match self {
            Quant::F16 => "f16",
            Quant::Q8_0 => "q8_0",
            Quant::Q4KM => "q4_k_m",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Quant::F16 => 1,
            Quant::Q8_0 => 7,
            Quant::Q4KM => 15,
        }
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quant {
    type Err = GgufError;

    /// Case-insensitive; `-` may stand for `_` ("Q4_K_M", "q4-k-m").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "f16" => Ok(Quant::F16),
            "q8_0" => Ok(Quant::Q8_0),
            "q4_k_m" => Ok(Quant::Q4KM),
            _ => Err(GgufError::InvalidInput(format!(
                "unknown quantisation {s:?}; expected f16, q8_0 or q4_k_m"
            ))),
        }
    }
}

/// The ggml tensor types this module writes and reads.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    Q4_K,
    Q6_K,
}

impl GgmlType {
    /// The id ggml stores in a tensor info.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
        }
    }

    /// The type with ggml id `id`, if it is one of these five.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            _ => return None,
        })
    }

    /// ggml's name ("Q4_K").
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            GgmlType::Q8_0 => QK8_0,
            GgmlType::Q4_K | GgmlType::Q6_K => QK_K,
        }
    }

    /// Bytes per block: Q8_0 = f16 d + 32 i8; Q4_K = f16 d + f16 dmin + 12 packed 6-bit scales
    /// and mins + 128 bytes of nibbles; Q6_K = 128 bytes of low nibbles + 64 of high bit pairs +
    /// 16 i8 scales + f16 d.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q8_0 => 2 + QK8_0,
            GgmlType::Q4_K => 2 + 2 + 12 + QK_K / 2,
            GgmlType::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes that `n` values take (`n` a multiple of the block size).
    pub fn bytes_for(self, n: u64) -> u64 {
        n / self.block_size() as u64 * self.block_bytes() as u64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which Hugging Face architecture the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Llama,
    Qwen2,
    Mistral,
}

impl Arch {
    /// `general.architecture`: Mistral runs on llama.cpp's `llama` graph, as its converter does.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mistral => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Whether llama.cpp's graph for this architecture rotates interleaved pairs (the `llama`
    /// graph, LLAMA_ROPE_TYPE_NORM), so that q/k rows must be permuted from Hugging Face's
    /// rotate-half layout. llama.cpp's `qwen2` graph rotates halves (NEOX) like transformers.
    pub fn permutes_qk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral)
    }
}

/// RoPE frequency scaling, as in a Hugging Face `rope_scaling`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: llama.cpp has no such mode. It changes nothing within the original context, so
    /// the file is written unscaled and the summary warns.
    Dynamic { factor: f64 },
    /// YaRN. `attention_factor`: `None` for transformers' default (`0.1·ln(factor) + 1`, which
    /// llama.cpp also applies by itself); a value different from that default is written as
    /// `rope.scaling.yarn_attn_factor`.
    Yarn {
        factor: f64,
        original_context_length: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
    },
    /// Llama 3.x: written as the per-frequency divisors in a `rope_freqs.weight` tensor, as
    /// llama.cpp's converter does (there are no metadata keys for it).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context_length: usize,
    },
}

/// The hyperparameters the file records; the fields of a Hugging Face `config.json` that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub architecture: Arch,
    /// `general.name`.
    pub name: String,
    /// `max_position_embeddings`.
    pub context_length: usize,
    /// `hidden_size`.
    pub embedding_length: usize,
    /// `num_hidden_layers`.
    pub block_count: usize,
    /// `intermediate_size`.
    pub feed_forward_length: usize,
    /// `num_attention_heads`.
    pub head_count: usize,
    /// `num_key_value_heads` (GQA when smaller than `head_count`).
    pub head_count_kv: usize,
    /// Per-head dimension; written as `attention.key_length`/`value_length` when it is not
    /// `embedding_length / head_count`. RoPE rotates all of it.
    pub head_dim: usize,
    /// `rope_theta`.
    pub rope_freq_base: f64,
    /// `rms_norm_eps`.
    pub rms_eps: f64,
    /// Rows of the embedding (and of the output matrix); the token list is padded to it.
    pub vocab_size: usize,
    pub rope_scaling: Option<RopeScaling>,
    /// When true there is no `output.weight`: llama.cpp reads the embedding in its place.
    pub tie_word_embeddings: bool,
    /// Sliding-window attention size, if the model uses one; llama.cpp's `llama`/`qwen2` graphs
    /// attend to the whole context, so a window shorter than the context is warned about.
    pub sliding_window: Option<usize>,
    /// Special tokens; each falls back to `tokenizer_config.json`'s token of that role.
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// The tokenizer files of a Hugging Face folder, as text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenizerFiles<'a> {
    /// `tokenizer.json` (required: a byte-level BPE).
    pub tokenizer_json: &'a str,
    /// `tokenizer_config.json`: special tokens, `add_bos_token`, `chat_template`.
    pub tokenizer_config_json: Option<&'a str>,
    /// `chat_template.jinja` (transformers 5 writes the template there); wins over the config's.
    pub chat_template: Option<&'a str>,
}

/// One weight under its Hugging Face name, row-major as in safetensors.
#[derive(Debug, Clone, Copy)]
pub struct TensorIn<'a> {
    /// e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: &'a str,
    /// e.g. `[out_features, in_features]`.
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// A weight known by name and shape only, for [`write_gguf_streaming`], which asks for its
/// values when it writes it.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec<'a> {
    /// The Hugging Face name, as in [`TensorIn::name`].
    pub name: &'a str,
    /// Row-major shape, as in [`TensorIn::shape`].
    pub shape: &'a [usize],
}

/// What one written tensor became.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The Hugging Face tensor it came from, or `"(generated)"` for `rope_freqs.weight`.
    pub source: String,
    /// GGUF dimensions (reversed: columns first).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// The type the mode asked for when a row did not fit its blocks and another type was used.
    pub fallback_from: Option<GgmlType>,
    /// Bytes of tensor data (without alignment padding).
    pub bytes: u64,
}

/// What [`write_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    pub quant: Quant,
    /// Bytes written in all: the file's size.
    pub bytes_written: u64,
    /// Metadata key-value pairs written.
    pub metadata_count: usize,
    pub tensors: Vec<TensorSummary>,
    /// One line per tensor that fell back to another type (also in `tensors`).
    pub fallbacks: Vec<String>,
    /// Things a user should know: settings llama.cpp cannot reproduce, values clamped to f16.
    pub warnings: Vec<String>,
    /// `tokenizer.ggml.pre` as written ("gpt-2", "llama-bpe", "qwen2").
    pub tokenizer_pre: String,
    /// The chat template written as `tokenizer.chat_template`, if any.
    pub chat_template: Option<String>,
    /// Token texts a runtime should stop at: EOS, plus the template's end-of-turn token.
    pub stop_tokens: Vec<String>,
}

impl GgufSummary {
    /// Number of tensors of each type, e.g. `[(Q4_K, 60), (Q6_K, 11), (F32, 21)]`, most first.
    pub fn type_counts(&self) -> Vec<(GgmlType, usize)> {
        let mut counts: HashMap<GgmlType, usize> = HashMap::new();
        for t in &self.tensors {
            *counts.entry(t.ggml_type).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id().cmp(&b.0.id())));
        v
    }
}

/// Why a file could not be written or read.
#[derive(Debug)]
pub enum GgufError {
    /// Writing the output failed.
    Io(io::Error),
    /// The hyperparameters or options are inconsistent or unsupported.
    InvalidInput(String),
    /// The tokenizer cannot be expressed as llama.cpp's byte-level BPE.
    Tokenizer(String),
    /// A weight is missing, unexpected, or of the wrong shape.
    Tensor(String),
    /// A GGUF file being read is malformed.
    Read(String),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io(e) => write!(f, "writing the GGUF file failed: {e}"),
            GgufError::InvalidInput(m) => write!(f, "cannot export to GGUF: {m}"),
            GgufError::Tokenizer(m) => write!(f, "cannot export the tokenizer to GGUF: {m}"),
            GgufError::Tensor(m) => write!(f, "cannot export the weights to GGUF: {m}"),
            GgufError::Read(m) => write!(f, "not a readable GGUF file: {m}"),
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for GgufError {
    fn from(e: io::Error) -> Self {
        GgufError::Io(e)
    }
}

/// A metadata value, as GGUF types it.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type id (as in [`GgufValue::type_id`]) and the elements.
    Array(u32, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// GGUF's value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(..) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The value as u32 when it is one.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            GgufValue::U32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as f32 when it is one.
    pub fn as_f32(&self) -> Option<f32> {
        match self {
            GgufValue::F32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as bool when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a string when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements when it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(_, v) => Some(v),
            _ => None,
        }
    }

    fn strings(v: Vec<String>) -> Self {
        GgufValue::Array(8, v.into_iter().map(GgufValue::String).collect())
    }

    fn i32s(v: &[i32]) -> Self {
        GgufValue::Array(5, v.iter().map(|x| GgufValue::I32(*x)).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// ModelMeta from config.json
// ---------------------------------------------------------------------------------------------

impl ModelMeta {
    /// Reads a Hugging Face `config.json` (transformers 4 or 5 spelling: `rope_theta`/
    /// `rope_scaling` or `rope_parameters`). `name` becomes `general.name`.
    pub fn from_hf_config(config_json: &str, name: &str) -> Result<Self, GgufError> {
        let bad = |m: String| GgufError::InvalidInput(format!("config.json: {m}"));
        let v: Value = serde_json::from_str(config_json).map_err(|e| bad(e.to_string()))?;
        let usize_key = |k: &str| -> Result<Option<usize>, GgufError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| bad(format!("{k} must be a non-negative integer"))),
            }
        };
        let need = |k: &str| -> Result<usize, GgufError> {
            usize_key(k)?.ok_or_else(|| bad(format!("missing {k}")))
        };
        let architecture = match v.get("model_type").and_then(Value::as_str) {
            Some("llama") | None => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            Some("mistral") => Arch::Mistral,
            Some(other) => {
                return Err(bad(format!(
                    "model_type {other:?} is not supported (llama, qwen2, mistral)"
                )));
            }
        };
        let token = |k: &str| -> Option<u32> {
            match v.get(k)? {
                Value::Number(n) => n.as_u64().map(|x| x as u32),
                // Several EOS ids: the first is the canonical one.
                Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
                _ => None,
            }
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        if heads == 0 {
            return Err(bad("num_attention_heads is 0".into()));
        }
        let context_length = usize_key("max_position_embeddings")?.unwrap_or(2048);
        let params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_freq_base = v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let scaling = v.get("rope_scaling").filter(|s| s.is_object()).or(params);
        let rope_scaling = match scaling {
            Some(s) => parse_rope_scaling(s, context_length).map_err(bad)?,
            None => None,
        };
        let sliding_window = match architecture {
            Arch::Mistral => usize_key("sliding_window")?,
            Arch::Qwen2 if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) => {
                usize_key("sliding_window")?
            }
            _ => None,
        };
        Ok(ModelMeta {
            architecture,
            name: name.to_string(),
            context_length,
            embedding_length: hidden,
            block_count: need("num_hidden_layers")?,
            feed_forward_length: need("intermediate_size")?,
            head_count: heads,
            head_count_kv: usize_key("num_key_value_heads")?.unwrap_or(heads),
            head_dim: usize_key("head_dim")?.unwrap_or(hidden / heads),
            rope_freq_base,
            rms_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            vocab_size: need("vocab_size")?,
            rope_scaling,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            sliding_window,
            bos_token_id: token("bos_token_id"),
            eos_token_id: token("eos_token_id"),
            pad_token_id: token("pad_token_id"),
        })
    }

    /// Checks the numbers hang together and that llama.cpp's graph for the architecture can run
    /// them.
    fn validate(&self) -> Result<(), GgufError> {
        let bad = |m: String| Err(GgufError::InvalidInput(m));
        if self.embedding_length == 0
            || self.block_count == 0
            || self.feed_forward_length == 0
            || self.head_count == 0
            || self.head_count_kv == 0
            || self.head_dim == 0
            || self.vocab_size == 0
        {
            return bad(format!("a hyperparameter is zero: {self:?}"));
        }
        if !self.head_count.is_multiple_of(self.head_count_kv) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.head_count, self.head_count_kv
            ));
        }
        if self.architecture.permutes_qk() && !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} is odd; RoPE needs pairs",
                self.head_dim
            ));
        }
        // llama.cpp's qwen2 graph sizes the attention output as n_embd × n_embd.
        if self.architecture == Arch::Qwen2
            && self.head_dim * self.head_count != self.embedding_length
        {
            return bad(format!(
                "Qwen2 with head_dim {} × {} heads ≠ hidden size {}: llama.cpp's qwen2 graph \
                 cannot run it",
                self.head_dim, self.head_count, self.embedding_length
            ));
        }
        if u32::try_from(self.vocab_size).is_err() || u32::try_from(self.context_length).is_err() {
            return bad("vocab_size or context_length does not fit in u32".into());
        }
        Ok(())
    }
}

fn parse_rope_scaling(s: &Value, context_length: usize) -> Result<Option<RopeScaling>, String> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str, default: Option<f64>| -> Result<f64, String> {
        s.get(k)
            .and_then(Value::as_f64)
            .or(default)
            .ok_or_else(|| format!("rope scaling {kind} needs {k}"))
    };
    let orig = |default: usize| {
        s.get("original_max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(default)
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: f("factor", None)?,
        }),
        "dynamic" => Some(RopeScaling::Dynamic {
            factor: f("factor", None)?,
        }),
        "yarn" => Some(RopeScaling::Yarn {
            factor: f("factor", None)?,
            original_context_length: orig(context_length),
            beta_fast: f("beta_fast", Some(32.0))?,
            beta_slow: f("beta_slow", Some(1.0))?,
            attention_factor: s.get("attention_factor").and_then(Value::as_f64),
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: f("factor", None)?,
            low_freq_factor: f("low_freq_factor", Some(1.0))?,
            high_freq_factor: f("high_freq_factor", Some(4.0))?,
            original_context_length: orig(8192),
        }),
        other => return Err(format!("rope scaling type {other:?} is not supported")),
    })
}

// ---------------------------------------------------------------------------------------------
// Tokenizer → tokenizer.ggml.*
// ---------------------------------------------------------------------------------------------

/// Llama 3's split regex (tokenizer.json), which llama.cpp implements as pre-tokenizer
/// "llama-bpe".
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits; llama.cpp's "qwen2".
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// The tokenizer as llama.cpp's metadata wants it.
#[derive(Debug)]
struct GgufVocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    pre: &'static str,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    /// Named templates besides the default (`tokenizer.chat_template.<name>`).
    named_templates: Vec<(String, String)>,
    warnings: Vec<String>,
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The parts of a (possibly nested) `Sequence` pre-tokenizer or decoder, in order.
fn flatten_sequence<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    if type_of(v) == "Sequence" {
        if let Some(parts) = v.get(key).and_then(Value::as_array) {
            for p in parts {
                flatten_sequence(p, key, out);
            }
        }
    } else if !v.is_null() {
        out.push(v);
    }
}

/// Names the llama.cpp pre-tokenizer that splits text as this `pre_tokenizer` does. llama.cpp
/// chooses its split rules by this name alone, so an unrecognised split is an error rather than
/// a guess.
fn classify_pre_tokenizer(pre: &Value) -> Result<&'static str, GgufError> {
    let err = |m: String| Err(GgufError::Tokenizer(m));
    let mut parts = Vec::new();
    flatten_sequence(pre, "pretokenizers", &mut parts);
    if let Some(p) = parts.iter().find(|p| type_of(p) == "Metaspace") {
        return err(format!(
            "the pre-tokenizer is {} (SentencePiece style); only byte-level BPE is supported",
            type_of(p)
        ));
    }
    let flag =
        |v: &Value, k: &str, default: bool| v.get(k).and_then(Value::as_bool).unwrap_or(default);
    match parts.as_slice() {
        [bl] if type_of(bl) == "ByteLevel" => {
            if flag(bl, "add_prefix_space", false) {
                return err(
                    "ByteLevel with add_prefix_space=true: no llama.cpp BPE pre-tokenizer adds \
                     a leading space"
                        .into(),
                );
            }
            if !flag(bl, "use_regex", true) {
                return err(
                    "ByteLevel without its regex splits text in no way llama.cpp knows".into(),
                );
            }
            // ByteLevel's own regex is GPT-2's, llama.cpp's "gpt-2" (LLAMA_VOCAB_PRE_TYPE_GPT2).
            Ok("gpt-2")
        }
        [split, bl] if type_of(split) == "Split" && type_of(bl) == "ByteLevel" => {
            if flag(bl, "use_regex", true) || flag(bl, "add_prefix_space", false) {
                return err(
                    "a Split followed by a ByteLevel that splits again (use_regex) or adds a \
                     prefix space is not a layout llama.cpp reproduces"
                        .into(),
                );
            }
            let regex = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str);
            let behaviour = split.get("behavior").and_then(Value::as_str);
            if behaviour != Some("Isolated") || flag(split, "invert", false) {
                return err(format!(
                    "Split with behavior {behaviour:?}/invert is not a layout llama.cpp reproduces"
                ));
            }
            match regex {
                Some(LLAMA3_SPLIT) => Ok("llama-bpe"),
                Some(QWEN2_SPLIT) => Ok("qwen2"),
                Some(r) => err(format!(
                    "the split regex {r:?} is not one this exporter knows llama.cpp's name for \
                     (known: Llama 3's → llama-bpe, Qwen2's → qwen2, GPT-2's ByteLevel → gpt-2)"
                )),
                None => err("Split without a regex pattern".into()),
            }
        }
        _ => err(format!(
            "pre-tokenizer {} is not byte-level BPE as llama.cpp runs it",
            serde_json::to_string(pre).unwrap_or_default()
        )),
    }
}

/// A special token named in tokenizer_config.json: a string or an AddedToken object.
fn config_token(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Whether the post-processor adds a special token before (`first`) or after the text, as a
/// Llama 3 `TemplateProcessing` adds `<|begin_of_text|>`.
fn template_adds(post: &Value, first: bool) -> Option<bool> {
    let mut parts = Vec::new();
    flatten_sequence(post, "processors", &mut parts);
    let tp = parts.iter().find(|p| type_of(p) == "TemplateProcessing")?;
    let single = tp.get("single")?.as_array()?;
    let piece = if first { single.first() } else { single.last() };
    Some(piece.is_some_and(|p| p.get("SpecialToken").is_some()))
}

/// llama.cpp's converter marks added tokens that look like control tokens as control even when
/// the tokenizer does not call them special (`does_token_look_special`).
fn looks_special(token: &str) -> bool {
    (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || token == "<pad>"
        || token == "<mask>"
}

fn build_vocab(files: &TokenizerFiles, meta: &ModelMeta) -> Result<GgufVocab, GgufError> {
    let terr = |m: String| GgufError::Tokenizer(m);
    let tok: Value = serde_json::from_str(files.tokenizer_json)
        .map_err(|e| terr(format!("tokenizer.json is not valid JSON: {e}")))?;
    let cfg: Value = match files.tokenizer_config_json {
        Some(t) => serde_json::from_str(t)
            .map_err(|e| terr(format!("tokenizer_config.json is not valid JSON: {e}")))?,
        None => Value::Null,
    };
    let model = tok
        .get("model")
        .ok_or_else(|| terr("tokenizer.json has no model".into()))?;
    let kind = type_of(model);
    if kind != "BPE" {
        return Err(terr(format!(
            "the tokenizer model is {kind:?}; only byte-level BPE is supported (SentencePiece \
             Unigram/WordPiece tokenizers would need llama.cpp's other vocab types)"
        )));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(terr(
            "a BPE with byte_fallback is a SentencePiece-style tokenizer (Llama 2, Mistral); only \
             byte-level BPE is supported"
                .into(),
        ));
    }
    let pre = classify_pre_tokenizer(tok.get("pre_tokenizer").unwrap_or(&Value::Null))?;
    let mut decoders = Vec::new();
    flatten_sequence(
        tok.get("decoder").unwrap_or(&Value::Null),
        "decoders",
        &mut decoders,
    );
    if !decoders.iter().any(|d| type_of(d) == "ByteLevel") {
        return Err(terr(
            "the decoder is not ByteLevel, so this is not byte-level BPE".into(),
        ));
    }
    let mut warnings = Vec::new();
    match tok.get("normalizer") {
        None | Some(Value::Null) => {}
        Some(n) if type_of(n) == "NFC" => warnings.push(
            "the tokenizer NFC-normalises its input and llama.cpp does not; text that is \
             already NFC (nearly all) tokenises the same"
                .to_string(),
        ),
        Some(n) => {
            return Err(terr(format!(
                "normalizer {} has no llama.cpp equivalent for BPE vocabularies",
                serde_json::to_string(n).unwrap_or_default()
            )));
        }
    }

    let n = meta.vocab_size;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![TOKEN_NORMAL; n];
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| terr("the BPE model has no vocab".into()))?;
    let mut place = |id: u64, text: &str, what: &str| -> Result<usize, GgufError> {
        let i = usize::try_from(id).ok().filter(|&i| i < n).ok_or_else(|| {
            terr(format!(
                "{what} {text:?} has id {id}, but the model's vocab_size is {n}"
            ))
        })?;
        tokens[i] = Some(text.to_string());
        Ok(i)
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| terr(format!("vocab entry {text:?} has no integer id")))?;
        place(id, text, "token")?;
    }
    for added in tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = added
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| terr("an added token has no content".into()))?;
        let id = added
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| terr(format!("added token {text:?} has no id")))?;
        let i = place(id, text, "added token")?;
        let special = added
            .get("special")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        types[i] = if special || looks_special(text) {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
    }
    // Rows of the embedding no token uses (a vocab padded to a multiple of 64, say) get
    // placeholders, as llama.cpp's converter writes them.
    let mut unused = 0;
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = TOKEN_UNUSED;
                unused += 1;
                format!("[PAD{i}]")
            })
        })
        .collect();
    if unused > 0 {
        warnings.push(format!(
            "{unused} of the model's {n} token ids have no token; written as [PAD<id>] placeholders"
        ));
    }

    let mut merges = Vec::new();
    for m in model
        .get("merges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let pair = match m {
            Value::String(s) => s.clone(),
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => {
                    // Byte-level tokens spell a space as "Ġ"; a real one would make the pair
                    // ambiguous in llama.cpp's "a b" form.
                    if a.contains(' ') || b.contains(' ') {
                        return Err(terr(format!("merge [{a:?}, {b:?}] contains a space")));
                    }
                    format!("{a} {b}")
                }
                _ => return Err(terr(format!("merge {m} is not two strings"))),
            },
            _ => return Err(terr(format!("merge {m} is neither \"a b\" nor [a, b]"))),
        };
        merges.push(pair);
    }

    let id_of: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let special = |from_meta: Option<u32>, key: &str| -> Result<Option<u32>, GgufError> {
        let id = from_meta
            .or_else(|| config_token(&cfg, key).and_then(|t| id_of.get(t.as_str()).copied()));
        match id {
            Some(i) if i as usize >= n => Err(GgufError::InvalidInput(format!(
                "{key} id {i} is outside the vocabulary of {n}"
            ))),
            other => Ok(other),
        }
    };
    let bos = special(meta.bos_token_id, "bos_token")?;
    let eos = special(meta.eos_token_id, "eos_token")?;
    let pad = special(meta.pad_token_id, "pad_token")?;
    let post = tok.get("post_processor").unwrap_or(&Value::Null);
    let add_bos = cfg
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .or_else(|| template_adds(post, true))
        .unwrap_or(false);
    let add_eos = cfg
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .or_else(|| template_adds(post, false))
        .unwrap_or(false);
    if add_bos && bos.is_none() {
        warnings.push("the tokenizer adds BOS but no BOS token is known".into());
    }

    let mut chat_template = None;
    let mut named_templates = Vec::new();
    match cfg.get("chat_template") {
        Some(Value::String(s)) => chat_template = Some(s.clone()),
        // Older configs list named templates; llama.cpp's converter writes "default" as the
        // template and the others under their names.
        Some(Value::Array(list)) => {
            for t in list {
                let (Some(name), Some(text)) = (
                    t.get("name").and_then(Value::as_str),
                    t.get("template").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if name == "default" {
                    chat_template = Some(text.to_string());
                } else {
                    named_templates.push((name.to_string(), text.to_string()));
                }
            }
        }
        _ => {}
    }
    if let Some(t) = files.chat_template {
        chat_template = Some(t.to_string());
    }

    Ok(GgufVocab {
        tokens,
        types,
        merges,
        pre,
        bos,
        eos,
        pad,
        add_bos,
        add_eos,
        chat_template,
        named_templates,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor plan
// ---------------------------------------------------------------------------------------------

/// What a Hugging Face tensor is, for its GGUF name, shape check and quantisation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Embed,
    OutputNorm,
    Output,
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
    RopeFreqs,
}

/// A Hugging Face name split into role, layer and whether it is a bias.
fn parse_hf_name(name: &str) -> Option<(Role, Option<usize>, bool)> {
    match name {
        "model.embed_tokens.weight" => return Some((Role::Embed, None, false)),
        "model.norm.weight" => return Some((Role::OutputNorm, None, false)),
        "lm_head.weight" => return Some((Role::Output, None, false)),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, bias) = if let Some(s) = rest.strip_suffix(".weight") {
        (s, false)
    } else {
        (rest.strip_suffix(".bias")?, true)
    };
    let role = match stem {
        "input_layernorm" if !bias => Role::AttnNorm,
        "post_attention_layernorm" if !bias => Role::FfnNorm,
        "self_attn.q_proj" => Role::Q,
        "self_attn.k_proj" => Role::K,
        "self_attn.v_proj" => Role::V,
        "self_attn.o_proj" => Role::O,
        "mlp.gate_proj" => Role::Gate,
        "mlp.up_proj" => Role::Up,
        "mlp.down_proj" => Role::Down,
        _ => return None,
    };
    Some((role, Some(layer), bias))
}

fn gguf_name(role: Role, layer: Option<usize>, bias: bool) -> String {
    let stem = match role {
        Role::Embed => "token_embd",
        Role::OutputNorm => "output_norm",
        Role::Output => "output",
        Role::RopeFreqs => "rope_freqs",
        Role::AttnNorm => "attn_norm",
        Role::Q => "attn_q",
        Role::K => "attn_k",
        Role::V => "attn_v",
        Role::O => "attn_output",
        Role::FfnNorm => "ffn_norm",
        Role::Gate => "ffn_gate",
        Role::Up => "ffn_up",
        Role::Down => "ffn_down",
    };
    let suffix = if bias { "bias" } else { "weight" };
    match layer {
        Some(i) => format!("blk.{i}.{stem}.{suffix}"),
        None => format!("{stem}.{suffix}"),
    }
}

/// Row-major shape the model's config implies.
fn expected_shape(meta: &ModelMeta, role: Role, bias: bool) -> Vec<usize> {
    let h = meta.embedding_length;
    let q = meta.head_count * meta.head_dim;
    let kv = meta.head_count_kv * meta.head_dim;
    let ff = meta.feed_forward_length;
    let (out, inp) = match role {
        Role::Embed | Role::Output => (meta.vocab_size, h),
        Role::OutputNorm | Role::AttnNorm | Role::FfnNorm => return vec![h],
        Role::RopeFreqs => return vec![meta.head_dim / 2],
        Role::Q => (q, h),
        Role::K | Role::V => (kv, h),
        Role::O => (h, q),
        Role::Gate | Role::Up => (ff, h),
        Role::Down => (h, ff),
    };
    if bias { vec![out] } else { vec![out, inp] }
}

/// llama.cpp's Q4_K_M rule for which layers' `attn_v` and `ffn_down` get Q6_K: the first and
/// last eighth of the layers and every third one between.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// The type a mode asks for, before checking the row length fits its blocks.
fn wanted_type(quant: Quant, role: Role, layer: Option<usize>, meta: &ModelMeta) -> GgmlType {
    match quant {
        Quant::F16 => GgmlType::F16,
        Quant::Q8_0 => GgmlType::Q8_0,
        Quant::Q4KM => match role {
            // The output matrix (the embedding, when it doubles as the output) keeps more bits:
            // every logit goes through it.
            Role::Output => GgmlType::Q6_K,
            Role::Embed if meta.tie_word_embeddings => GgmlType::Q6_K,
            Role::V | Role::Down if use_more_bits(layer.unwrap_or(0), meta.block_count) => {
                GgmlType::Q6_K
            }
            _ => GgmlType::Q4_K,
        },
    }
}

/// The type actually used for rows of `cols` values. llama.cpp falls back from Q4_K to Q5_0,
/// which this module does not write; Q8_0 is the next type it has (larger, more exact).
fn fitting_type(wanted: GgmlType, cols: usize) -> GgmlType {
    let fits = |t: GgmlType| cols.is_multiple_of(t.block_size());
    if fits(wanted) {
        wanted
    } else if fits(GgmlType::Q8_0) && wanted != GgmlType::F16 {
        GgmlType::Q8_0
    } else {
        GgmlType::F16
    }
}

/// One tensor to write.
struct Planned {
    name: String,
    /// The Hugging Face name the values are fetched under.
    source: String,
    /// Values computed here (`rope_freqs.weight`) rather than fetched.
    generated: Option<Vec<f32>>,
    /// Values per row for the q/k permutation: the last Hugging Face dimension, 1 for a bias.
    cols: usize,
    dims: Vec<u64>,
    ty: GgmlType,
    wanted: GgmlType,
    /// Heads to permute q/k rows over, for the llama graph's interleaved RoPE.
    permute_heads: Option<usize>,
    sort_key: (usize, usize, bool),
}

fn plan_tensors(
    meta: &ModelMeta,
    tensors: &[TensorSpec],
    quant: Quant,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>, GgufError> {
    let terr = |m: String| GgufError::Tensor(m);
    let mut seen: HashSet<(Role, Option<usize>, bool)> = HashSet::new();
    let mut planned = Vec::new();
    for t in tensors {
        // Rotary buffers some checkpoints carry are recomputed by every runtime.
        if t.name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let (role, layer, bias) = parse_hf_name(t.name).ok_or_else(|| {
            terr(format!(
                "{} is not a tensor of a Llama-family model",
                t.name
            ))
        })?;
        if let Some(i) = layer
            && i >= meta.block_count
        {
            return Err(terr(format!(
                "{} is in layer {i}, but the model has {} layers",
                t.name, meta.block_count
            )));
        }
        if role == Role::Output && meta.tie_word_embeddings {
            // A tied checkpoint may still store lm_head; llama.cpp reads the embedding instead.
            continue;
        }
        if bias && meta.architecture == Arch::Qwen2 && !matches!(role, Role::Q | Role::K | Role::V)
        {
            return Err(terr(format!(
                "{}: llama.cpp's qwen2 graph has biases on q/k/v only",
                t.name
            )));
        }
        let want = expected_shape(meta, role, bias);
        if t.shape != want.as_slice() {
            return Err(terr(format!(
                "{} has shape {:?}; the config implies {:?}",
                t.name, t.shape, want
            )));
        }
        if !seen.insert((role, layer, bias)) {
            return Err(terr(format!("{} is given twice", t.name)));
        }
        let cols = *t.shape.last().unwrap_or(&1);
        let one_d = t.shape.len() == 1;
        let (wanted, ty) = if one_d {
            (GgmlType::F32, GgmlType::F32)
        } else {
            let w = wanted_type(quant, role, layer, meta);
            (w, fitting_type(w, cols))
        };
        let permute_heads = match role {
            Role::Q if meta.architecture.permutes_qk() => Some(meta.head_count),
            Role::K if meta.architecture.permutes_qk() => Some(meta.head_count_kv),
            _ => None,
        };
        planned.push(Planned {
            name: gguf_name(role, layer, bias),
            source: t.name.to_string(),
            generated: None,
            // A bias is one value per row for the q/k permutation.
            cols: if one_d { 1 } else { cols },
            dims: t.shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            wanted,
            permute_heads,
            sort_key: sort_key(role, layer, bias),
        });
    }

    // Everything llama.cpp requires must be there.
    let mut missing = Vec::new();
    let mut need = |role: Role, layer: Option<usize>, bias: bool, hf: String| {
        if !seen.contains(&(role, layer, bias)) {
            missing.push(hf);
        }
    };
    need(Role::Embed, None, false, "model.embed_tokens.weight".into());
    need(Role::OutputNorm, None, false, "model.norm.weight".into());
    if !meta.tie_word_embeddings {
        need(Role::Output, None, false, "lm_head.weight".into());
    }
    for i in 0..meta.block_count {
        let p = format!("model.layers.{i}");
        need(
            Role::AttnNorm,
            Some(i),
            false,
            format!("{p}.input_layernorm.weight"),
        );
        need(
            Role::FfnNorm,
            Some(i),
            false,
            format!("{p}.post_attention_layernorm.weight"),
        );
        for (role, stem) in [
            (Role::Q, "self_attn.q_proj"),
            (Role::K, "self_attn.k_proj"),
            (Role::V, "self_attn.v_proj"),
            (Role::O, "self_attn.o_proj"),
            (Role::Gate, "mlp.gate_proj"),
            (Role::Up, "mlp.up_proj"),
            (Role::Down, "mlp.down_proj"),
        ] {
            need(role, Some(i), false, format!("{p}.{stem}.weight"));
        }
        // Qwen2's q/k/v biases are part of the architecture; transformers would load the model
        // with zeros in their place, which is rarely what was trained.
        if meta.architecture == Arch::Qwen2 {
            for (role, stem) in [
                (Role::Q, "self_attn.q_proj"),
                (Role::K, "self_attn.k_proj"),
                (Role::V, "self_attn.v_proj"),
            ] {
                need(role, Some(i), true, format!("{p}.{stem}.bias"));
            }
        }
    }
    if !missing.is_empty() {
        let more = missing.len().saturating_sub(5);
        missing.truncate(5);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(terr(format!(
            "missing tensors: {}{tail}",
            missing.join(", ")
        )));
    }

    match &meta.rope_scaling {
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context_length,
        }) => {
            let factors = llama3_rope_factors(
                meta.head_dim,
                meta.rope_freq_base,
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_context_length,
            );
            planned.push(Planned {
                name: gguf_name(Role::RopeFreqs, None, false),
                source: "(generated)".into(),
                cols: factors.len(),
                dims: vec![factors.len() as u64],
                generated: Some(factors),
                ty: GgmlType::F32,
                wanted: GgmlType::F32,
                permute_heads: None,
                sort_key: sort_key(Role::RopeFreqs, None, false),
            });
        }
        Some(RopeScaling::Dynamic { factor }) => warnings.push(format!(
            "dynamic NTK RoPE scaling (factor {factor}) has no llama.cpp equivalent; written \
             unscaled, which is identical up to the original context of {} tokens",
            meta.context_length
        )),
        _ => {}
    }
    if let Some(w) = meta.sliding_window.filter(|&w| w < meta.context_length) {
        warnings.push(format!(
            "the model attends within a sliding window of {w} tokens; llama.cpp's {} graph \
             attends to the whole context, so outputs differ beyond {w} tokens",
            meta.architecture.gguf_name()
        ));
    }
    planned.sort_by_key(|p| p.sort_key);
    Ok(planned)
}

/// File order: rope_freqs, embedding, each layer in Hugging Face order, final norm, output.
fn sort_key(role: Role, layer: Option<usize>, bias: bool) -> (usize, usize, bool) {
    let r = match role {
        Role::RopeFreqs => 0,
        Role::Embed => 1,
        Role::AttnNorm => 10,
        Role::Q => 11,
        Role::K => 12,
        Role::V => 13,
        Role::O => 14,
        Role::FfnNorm => 15,
        Role::Gate => 16,
        Role::Up => 17,
        Role::Down => 18,
        Role::OutputNorm => 100,
        Role::Output => 101,
    };
    let group = if layer.is_some() {
        1
    } else if r < 10 {
        0
    } else {
        2
    };
    (group * 1_000_000 + layer.unwrap_or(0), r, bias)
}

/// Llama 3 RoPE: the divisor of each of the `head_dim/2` frequencies, as llama.cpp's converter
/// computes them for `rope_freqs.weight` (1 for short wavelengths, `factor` for long ones, a
/// smooth blend between).
pub fn llama3_rope_factors(
    head_dim: usize,
    theta: f64,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context_length: usize,
) -> Vec<f32> {
    let old = original_context_length as f64;
    let low_wavelen = old / low_freq_factor;
    let high_wavelen = old / high_freq_factor;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            // Frequencies in f32 as the converter's torch code has them.
            let freq = 1.0 / (theta as f32).powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
            let r = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            r as f32
        })
        .collect()
}

/// Hugging Face → llama.cpp q/k row order for the `llama` graph (llama.cpp's converter's
/// `permute`). Within each head, transformers rotates dimension `j` with `j + head_dim/2`
/// (rotate-half); llama.cpp rotates `2j` with `2j+1`. So GGUF row `2j` of a head is Hugging Face
/// row `j`, and GGUF row `2j+1` is Hugging Face row `j + head_dim/2`. `data` is
/// `[n_head·head_dim, cols]` row-major (`cols` = 1 for a bias).
pub fn permute_qk(data: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                let dst = h * hd + 2 * j + i;
                let src = h * hd + i * half + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The inverse of [`permute_qk`] (transformers' `reverse_permute_weights` when it loads a GGUF).
pub fn unpermute_qk(data: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                let src = h * hd + 2 * j + i;
                let dst = h * hd + i * half + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

fn build_metadata(meta: &ModelMeta, vocab: &GgufVocab, quant: Quant) -> Vec<(String, GgufValue)> {
    let arch = meta.architecture.gguf_name();
    let mut kv: Vec<(String, GgufValue)> = Vec::new();
    let mut put = |k: String, v: GgufValue| kv.push((k, v));
    let u32v = |x: usize| GgufValue::U32(x as u32);
    put(
        "general.architecture".into(),
        GgufValue::String(arch.into()),
    );
    put("general.type".into(), GgufValue::String("model".into()));
    put("general.name".into(), GgufValue::String(meta.name.clone()));
    put(
        "general.file_type".into(),
        GgufValue::U32(quant.file_type()),
    );
    put(
        "general.quantization_version".into(),
        GgufValue::U32(QUANTIZATION_VERSION),
    );
    let a = |k: &str| format!("{arch}.{k}");
    put(a("vocab_size"), u32v(meta.vocab_size));
    put(a("context_length"), u32v(meta.context_length));
    put(a("embedding_length"), u32v(meta.embedding_length));
    put(a("block_count"), u32v(meta.block_count));
    put(a("feed_forward_length"), u32v(meta.feed_forward_length));
    put(a("attention.head_count"), u32v(meta.head_count));
    put(a("attention.head_count_kv"), u32v(meta.head_count_kv));
    put(
        a("attention.layer_norm_rms_epsilon"),
        GgufValue::F32(meta.rms_eps as f32),
    );
    put(
        a("rope.freq_base"),
        GgufValue::F32(meta.rope_freq_base as f32),
    );
    put(a("rope.dimension_count"), u32v(meta.head_dim));
    // llama.cpp assumes head_dim = hidden / heads unless told otherwise.
    if meta.head_dim * meta.head_count != meta.embedding_length {
        put(a("attention.key_length"), u32v(meta.head_dim));
        put(a("attention.value_length"), u32v(meta.head_dim));
    }
    match &meta.rope_scaling {
        Some(RopeScaling::Linear { factor }) => {
            put(a("rope.scaling.type"), GgufValue::String("linear".into()));
            put(a("rope.scaling.factor"), GgufValue::F32(*factor as f32));
        }
        Some(RopeScaling::Yarn {
            factor,
            original_context_length,
            beta_fast,
            beta_slow,
            attention_factor,
        }) => {
            put(a("rope.scaling.type"), GgufValue::String("yarn".into()));
            put(a("rope.scaling.factor"), GgufValue::F32(*factor as f32));
            put(
                a("rope.scaling.original_context_length"),
                u32v(*original_context_length),
            );
            put(
                a("rope.scaling.yarn_beta_fast"),
                GgufValue::F32(*beta_fast as f32),
            );
            put(
                a("rope.scaling.yarn_beta_slow"),
                GgufValue::F32(*beta_slow as f32),
            );
            // Only an explicit, non-default factor: llama.cpp applies the default by itself.
            let default = 0.1 * factor.ln() + 1.0;
            if let Some(f) = attention_factor.filter(|f| (f - default).abs() > 1e-6) {
                put(a("rope.scaling.yarn_attn_factor"), GgufValue::F32(f as f32));
            }
        }
        // Llama 3 travels as rope_freqs.weight; dynamic has no llama.cpp form.
        Some(RopeScaling::Llama3 { .. }) | Some(RopeScaling::Dynamic { .. }) | None => {}
    }

    put(
        "tokenizer.ggml.model".into(),
        GgufValue::String("gpt2".into()),
    );
    put(
        "tokenizer.ggml.pre".into(),
        GgufValue::String(vocab.pre.into()),
    );
    put(
        "tokenizer.ggml.tokens".into(),
        GgufValue::strings(vocab.tokens.clone()),
    );
    put(
        "tokenizer.ggml.token_type".into(),
        GgufValue::i32s(&vocab.types),
    );
    put(
        "tokenizer.ggml.merges".into(),
        GgufValue::strings(vocab.merges.clone()),
    );
    if let Some(id) = vocab.bos {
        put("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(id));
    }
    if let Some(id) = vocab.eos {
        put("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(id));
    }
    if let Some(id) = vocab.pad {
        put("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(id));
    }
    put(
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(vocab.add_bos),
    );
    put(
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(vocab.add_eos),
    );
    if let Some(t) = &vocab.chat_template {
        put(
            "tokenizer.chat_template".into(),
            GgufValue::String(t.clone()),
        );
    }
    for (name, t) in &vocab.named_templates {
        put(
            format!("tokenizer.chat_template.{name}"),
            GgufValue::String(t.clone()),
        );
    }
    kv
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// A writer that counts bytes, for offsets and padding.
struct Counting<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (ALIGNMENT - self.n % ALIGNMENT) % ALIGNMENT;
        self.put(&[0u8; ALIGNMENT as usize][..rem as usize])
    }

    fn string(&mut self, s: &str) -> io::Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    fn value(&mut self, v: &GgufValue) -> io::Result<()> {
        match v {
            GgufValue::U8(x) => self.put(&[*x]),
            GgufValue::I8(x) => self.put(&x.to_le_bytes()),
            GgufValue::U16(x) => self.put(&x.to_le_bytes()),
            GgufValue::I16(x) => self.put(&x.to_le_bytes()),
            GgufValue::U32(x) => self.put(&x.to_le_bytes()),
            GgufValue::I32(x) => self.put(&x.to_le_bytes()),
            GgufValue::F32(x) => self.put(&x.to_le_bytes()),
            GgufValue::Bool(x) => self.put(&[*x as u8]),
            GgufValue::String(s) => self.string(s),
            GgufValue::Array(t, items) => {
                self.put(&t.to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|i| self.value(i))
            }
            GgufValue::U64(x) => self.put(&x.to_le_bytes()),
            GgufValue::I64(x) => self.put(&x.to_le_bytes()),
            GgufValue::F64(x) => self.put(&x.to_le_bytes()),
        }
    }
}

/// Writes the model as a GGUF v3 file to `out`.
///
/// `tensors` holds every weight under its Hugging Face name (`model.embed_tokens.weight`,
/// `model.layers.N.self_attn.q_proj.weight`, …, `lm_head.weight` unless tied); a tied
/// `lm_head.weight` and `rotary_emb.inv_freq` buffers are skipped. Everything — names, shapes,
/// value counts, NaN/∞, the tokenizer — is validated before the first byte is written, so an error
/// other than I/O leaves `out` untouched. The file is then written in one pass and flushed.
pub fn write_gguf<W: Write>(
    out: &mut W,
    meta: &ModelMeta,
    tokenizer: &TokenizerFiles,
    tensors: &[TensorIn],
    quant: Quant,
) -> Result<GgufSummary, GgufError> {
    for t in tensors {
        check_values(t.name, t.shape, t.data)?;
    }
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name,
            shape: t.shape,
        })
        .collect();
    let by_name: HashMap<&str, &[f32]> = tensors.iter().map(|t| (t.name, t.data)).collect();
    write_gguf_streaming(out, meta, tokenizer, &specs, quant, |name| {
        Ok(Cow::Borrowed(by_name[name]))
    })
}

/// A tensor's values: as many as its shape says, all finite.
fn check_values(name: &str, shape: &[usize], data: &[f32]) -> Result<(), GgufError> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(GgufError::Tensor(format!(
            "{name} has {} values for shape {shape:?}",
            data.len()
        )));
    }
    if data.par_iter().any(|v| !v.is_finite()) {
        return Err(GgufError::Tensor(format!(
            "{name} holds NaN or infinite values"
        )));
    }
    Ok(())
}

/// As [`write_gguf`], but the values of each tensor are asked of `fetch` (by Hugging Face name)
/// only when that tensor is written, once each, so no more than one tensor need be held as f32
/// at a time — for models whose f32 copy would not fit in memory next to the trainer's.
///
/// Names, shapes and the tokenizer are validated before anything is written; values are checked
/// (count, NaN/∞) as they are fetched, so a bad value or a `fetch` error stops the export with
/// part of the file written: write to a temporary file and rename it on success.
pub fn write_gguf_streaming<'d, W: Write, F>(
    out: &mut W,
    meta: &ModelMeta,
    tokenizer: &TokenizerFiles,
    tensors: &[TensorSpec],
    quant: Quant,
    mut fetch: F,
) -> Result<GgufSummary, GgufError>
where
    F: FnMut(&str) -> Result<Cow<'d, [f32]>, GgufError>,
{
    meta.validate()?;
    let mut vocab = build_vocab(tokenizer, meta)?;
    let mut warnings = std::mem::take(&mut vocab.warnings);
    let planned = plan_tensors(meta, tensors, quant, &mut warnings)?;
    let kv = build_metadata(meta, &vocab, quant);

    let mut w = Counting {
        inner: io::BufWriter::with_capacity(1 << 20, out),
        n: 0,
    };
    w.put(MAGIC)?;
    w.put(&GGUF_VERSION.to_le_bytes())?;
    w.put(&(planned.len() as u64).to_le_bytes())?;
    w.put(&(kv.len() as u64).to_le_bytes())?;
    for (k, v) in &kv {
        w.string(k)?;
        w.put(&v.type_id().to_le_bytes())?;
        w.value(v)?;
    }
    let mut offset = 0u64;
    let mut summaries = Vec::with_capacity(planned.len());
    for p in &planned {
        let n: u64 = p.dims.iter().product();
        let bytes = p.ty.bytes_for(n);
        w.string(&p.name)?;
        w.put(&(p.dims.len() as u32).to_le_bytes())?;
        for d in &p.dims {
            w.put(&d.to_le_bytes())?;
        }
        w.put(&p.ty.id().to_le_bytes())?;
        w.put(&offset.to_le_bytes())?;
        summaries.push(TensorSummary {
            name: p.name.clone(),
            source: p.source.clone(),
            dims: p.dims.clone(),
            ggml_type: p.ty,
            fallback_from: (p.ty != p.wanted).then_some(p.wanted),
            bytes,
        });
        offset += bytes.div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    w.pad()?;

    let mut clamped = 0usize;
    // One tensor's encoded bytes at a time: memory stays at the largest tensor, not the model.
    let mut buf = Vec::new();
    for p in &planned {
        let values: Cow<[f32]> = match &p.generated {
            Some(v) => Cow::Borrowed(v),
            None => {
                let v = fetch(&p.source)?;
                let shape: Vec<usize> = p.dims.iter().rev().map(|&d| d as usize).collect();
                check_values(&p.source, &shape, &v)?;
                v
            }
        };
        let data: Cow<[f32]> = match p.permute_heads {
            Some(heads) => Cow::Owned(permute_qk(&values, heads, p.cols)),
            None => values,
        };
        clamped += encode(p.ty, &data, &mut buf);
        w.put(&buf)?;
        w.pad()?;
    }
    w.inner.flush()?;

    if clamped > 0 {
        warnings.push(format!(
            "{clamped} weights exceeded f16's range (±65504) and were clamped to it"
        ));
    }
    let fallbacks = summaries
        .iter()
        .filter_map(|t| {
            t.fallback_from.map(|from| {
                format!(
                    "{}: rows of {} values do not fill {} blocks of {}; written as {}",
                    t.name,
                    t.dims[0],
                    from,
                    from.block_size(),
                    t.ggml_type
                )
            })
        })
        .collect();
    let stop_tokens = stop_tokens(&vocab);
    Ok(GgufSummary {
        quant,
        bytes_written: w.n,
        metadata_count: kv.len(),
        tensors: summaries,
        fallbacks,
        warnings,
        tokenizer_pre: vocab.pre.to_string(),
        chat_template: vocab.chat_template.clone(),
        stop_tokens,
    })
}

/// EOS, plus the end-of-turn token of a ChatML or Llama 3 template when the vocabulary has it.
fn stop_tokens(vocab: &GgufVocab) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(eos) = vocab.eos {
        out.push(vocab.tokens[eos as usize].clone());
    }
    if let Some(t) = &vocab.chat_template {
        for end in ["<|im_end|>", "<|eot_id|>"] {
            if t.contains(end)
                && vocab.tokens.iter().any(|x| x == end)
                && !out.iter().any(|x| x == end)
            {
                out.push(end.to_string());
            }
        }
    }
    out
}

/// Encodes `data` as `ty` into `out` (cleared first); returns how many values were clamped to
/// f16's range.
fn encode(ty: GgmlType, data: &[f32], out: &mut Vec<u8>) -> usize {
    out.clear();
    let n_blocks = data.len() / ty.block_size();
    out.resize(n_blocks * ty.block_bytes(), 0);
    // Enough blocks per rayon task to amortise scheduling.
    let per_task = (1 << 14) / ty.block_size();
    let chunks = out
        .par_chunks_mut(ty.block_bytes() * per_task)
        .zip(data.par_chunks(ty.block_size() * per_task));
    match ty {
        GgmlType::F32 => {
            chunks.for_each(|(o, x)| {
                for (b, v) in o.chunks_exact_mut(4).zip(x) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            });
            0
        }
        GgmlType::F16 => chunks
            .map(|(o, x)| {
                let mut clamped = 0;
                for (b, &v) in o.chunks_exact_mut(2).zip(x) {
                    let h = f16::from_f32(v);
                    let h = if h.is_infinite() && v.is_finite() {
                        clamped += 1;
                        if v > 0.0 { f16::MAX } else { f16::MIN }
                    } else {
                        h
                    };
                    b.copy_from_slice(&h.to_le_bytes());
                }
                clamped
            })
            .sum(),
        GgmlType::Q8_0 => {
            chunks.for_each(|(o, x)| {
                for (b, v) in o.chunks_exact_mut(34).zip(x.chunks_exact(QK8_0)) {
                    quantize_q8_0_block(v, b);
                }
            });
            0
        }
        GgmlType::Q4_K => {
            chunks.for_each(|(o, x)| {
                for (b, v) in o.chunks_exact_mut(144).zip(x.chunks_exact(QK_K)) {
                    quantize_q4_k_block(v, b);
                }
            });
            0
        }
        GgmlType::Q6_K => {
            chunks.for_each(|(o, x)| {
                for (b, v) in o.chunks_exact_mut(210).zip(x.chunks_exact(QK_K)) {
                    quantize_q6_k_block(v, b);
                }
            });
            0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantisers
// ---------------------------------------------------------------------------------------------

/// Q8_0: `d = absmax/127` stored as f16, `q = round(x/d)`. Rounding against the f16-rounded `d`
/// (the one dequantisation multiplies by) keeps every error within `d/2`.
fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = f16::from_f32(amax / 127.0);
    let dd = d.to_f32();
    let id = if dd > 0.0 { 1.0 / dd } else { 0.0 };
    out[..2].copy_from_slice(&d.to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = ((v * id).round().clamp(-127.0, 127.0) as i8) as u8;
    }
}

/// Nearest integer (ties to even) by the float-magic trick, as llama.cpp's `nearest_int`: a
/// single add and subtract where `f32::round` is a libm call (most of the K-quant time). Exact
/// for |x| < 2^22, far beyond the ±64 these quantisers see.
#[inline]
fn nearest(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

/// Best `(scale, min)` with `x ≈ scale·q − min`, `q ∈ 0..=15`, `scale, min ≥ 0` for one Q4_K
/// sub-block of 32: a grid of steps from `range/14` to `range/15.5` (the finer ones let the top
/// value clip by under half a step when that lowers the squared error), each refined by least
/// squares. Every error stays within one step of the super-block's range (see the tests).
/// Steps tried between 14/range and 15.5/range. Measured on a trained model: 10 steps give the
/// same error as 20 (relative RMS 0.0700 vs 0.0699) in 60% of the time; letting the grid reach
/// 16/range (more clipping) pushed single errors past one step for no gain in RMS.
const Q4_GRID_N: usize = 10;

fn fit_q4_sub_block(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(f32::INFINITY, |m, &v| m.min(v)).min(0.0);
    let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // `0.0 - x` rather than `-x`: a min of -0.0 would store dmin as f16 -0 (0x8000).
    if hi <= lo {
        return (0.0, 0.0 - lo);
    }
    let err_of = |a: f32, b: f32| -> f32 {
        let ia = 1.0 / a;
        x.iter()
            .map(|&v| {
                let q = nearest((v - b) * ia).clamp(0.0, 15.0);
                let e = a * q + b - v;
                e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / 15.0, lo);
    let mut best_err = err_of(best.0, best.1);
    let n = x.len() as f32;
    for k in 0..=Q4_GRID_N {
        let iscale = (14.0 + 1.5 * k as f32 / Q4_GRID_N as f32) / (hi - lo);
        let (mut sl, mut sll, mut sx, mut sxl) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &v in x {
            let l = nearest((v - lo) * iscale).clamp(0.0, 15.0);
            sl += l;
            sll += l * l;
            sx += v;
            sxl += v * l;
        }
        let det = n * sll - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut a = (n * sxl - sl * sx) / det;
        let mut b = (sll * sx - sl * sxl) / det;
        // The min is stored unsigned and subtracted, so the offset cannot be positive.
        if b > 0.0 {
            b = 0.0;
            a = sxl / sll;
        }
        if a <= 0.0 || !a.is_finite() {
            continue;
        }
        let e = err_of(a, b);
        if e < best_err {
            best_err = e;
            best = (a, b);
        }
    }
    (best.0, 0.0 - best.1)
}

/// Packs a Q4_K block: `d`, `dmin`, the eight 6-bit scales `ls` and mins `lm` into 12 bytes
/// (bytes 0-3: low 6 bits of scales 0-3, top 2 bits of scales 4-7; bytes 4-7: the same for mins;
/// bytes 8-11: low nibbles of scales 4-7 | low nibbles of mins 4-7 << 4), then the 4-bit `q`:
/// each 64 values take 32 bytes, the first 32 in the low nibbles, the next 32 in the high ones.
fn pack_q4_k(d: f16, dmin: f16, ls: &[u8; 8], lm: &[u8; 8], q: &[u8; QK_K], out: &mut [u8]) {
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    let s = &mut out[4..16];
    s.fill(0);
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    let qs = &mut out[16..144];
    for c in 0..4 {
        for l in 0..32 {
            qs[c * 32 + l] = q[c * 64 + l] | (q[c * 64 + 32 + l] << 4);
        }
    }
}

/// The 6-bit scale and min of sub-block `j` from Q4_K's 12 packed bytes.
fn q4_k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: per sub-block of 32 a fitted (scale, min); both sets quantised to 6 bits against the
/// super-block's f16 `d = max scale/63` and `dmin = max min/63`; each value then rounded on the
/// grid those stored numbers give (`d·ls·q − dmin·lm`), so rounding is exact for the file.
fn quantize_q4_k_block(x: &[f32], out: &mut [u8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        (scales[j], mins[j]) = fit_q4_sub_block(&x[j * 32..(j + 1) * 32]);
    }
    let max_scale = scales.iter().fold(0f32, |m, &v| m.max(v));
    let max_min = mins.iter().fold(0f32, |m, &v| m.max(v));
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let q6 = |v: f32, step: f32| {
        if step > 0.0 {
            nearest(v / step).clamp(0.0, 63.0) as u8
        } else {
            0
        }
    };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = q6(scales[j], df);
        lm[j] = q6(mins[j], dminf);
    }
    let mut q = [0u8; QK_K];
    for j in 0..8 {
        let dl = df * ls[j] as f32;
        let dm = dminf * lm[j] as f32;
        if dl <= 0.0 {
            continue;
        }
        for l in 0..32 {
            let i = j * 32 + l;
            q[i] = nearest((x[i] + dm) / dl).clamp(0.0, 15.0) as u8;
        }
    }
    pack_q4_k(d, dmin, &ls, &lm, &q, out);
}

/// Best signed scale for one Q6_K sub-block of 16 (`x ≈ scale·q`, `q ∈ -32..=31`): the value of
/// largest magnitude mapped near −32 (the level with no positive twin), over a small grid refined
/// by least squares.
fn fit_q6_sub_block(x: &[f32]) -> f32 {
    let (mut amax, mut vmax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            vmax = v;
        }
    }
    if amax == 0.0 {
        return 0.0;
    }
    let err_of = |s: f32| -> f32 {
        let is = 1.0 / s;
        x.iter()
            .map(|&v| {
                let e = s * nearest(v * is).clamp(-32.0, 31.0) - v;
                e * e
            })
            .sum()
    };
    let mut best = vmax / -32.0;
    let mut best_err = err_of(best);
    for k in -9..=9 {
        let s0 = vmax / -(32.0 + 0.1 * k as f32);
        let (mut sxl, mut sll) = (0f32, 0f32);
        for &v in x {
            let l = nearest(v / s0).clamp(-32.0, 31.0);
            sxl += v * l;
            sll += l * l;
        }
        if sll <= 0.0 {
            continue;
        }
        let s = sxl / sll;
        if s == 0.0 || !s.is_finite() {
            continue;
        }
        let e = err_of(s);
        if e < best_err {
            best_err = e;
            best = s;
        }
    }
    best
}

/// Packs a Q6_K block from 6-bit `q` (0..=63, value `q − 32`), sixteen i8 `scales` and f16 `d`.
/// Each 128 values use 64 bytes of `ql` and 32 of `qh`: `ql[l]` holds the low nibbles of values
/// `l` and `l+64`, `ql[l+32]` those of `l+32` and `l+96`; `qh[l]` holds the top two bits of
/// values `l`, `l+32`, `l+64`, `l+96` at bits 0, 2, 4, 6. Layout: ql(128) qh(64) scales(16) d(2).
fn pack_q6_k(d: f16, scales: &[i8; 16], q: &[u8; QK_K], out: &mut [u8]) {
    let (ql, rest) = out.split_at_mut(QK_K / 2);
    let (qh, rest) = rest.split_at_mut(QK_K / 4);
    let (sc, dd) = rest.split_at_mut(QK_K / 16);
    for half in 0..2 {
        let q = &q[half * 128..];
        let ql = &mut ql[half * 64..];
        let qh = &mut qh[half * 32..];
        for l in 0..32 {
            ql[l] = (q[l] & 0x0F) | ((q[l + 64] & 0x0F) << 4);
            ql[l + 32] = (q[l + 32] & 0x0F) | ((q[l + 96] & 0x0F) << 4);
            qh[l] = (q[l] >> 4)
                | ((q[l + 32] >> 4) << 2)
                | ((q[l + 64] >> 4) << 4)
                | ((q[l + 96] >> 4) << 6);
        }
    }
    for (o, s) in sc.iter_mut().zip(scales) {
        *o = *s as u8;
    }
    dd.copy_from_slice(&d.to_le_bytes());
}

/// Q6_K: per sub-block of 16 a fitted signed scale; the scales quantised to i8 against the
/// super-block's f16 `d = max |scale|/127`; each value then rounded on the stored grid
/// `d·scale·(q − 32)`.
fn quantize_q6_k_block(x: &[f32], out: &mut [u8]) {
    let mut scales = [0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        *s = fit_q6_sub_block(&x[j * 16..(j + 1) * 16]);
    }
    let max_abs = scales.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = f16::from_f32(max_abs / 127.0);
    let df = d.to_f32();
    let mut sc = [0i8; 16];
    if df > 0.0 {
        for j in 0..16 {
            sc[j] = nearest(scales[j] / df).clamp(-128.0, 127.0) as i8;
        }
    }
    let mut q = [32u8; QK_K];
    for ((qs, xs), &s) in q.chunks_exact_mut(16).zip(x.chunks_exact(16)).zip(&sc) {
        let dl = df * s as f32;
        if dl == 0.0 {
            continue;
        }
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (nearest(v / dl).clamp(-32.0, 31.0) + 32.0) as u8;
        }
    }
    pack_q6_k(d, &sc, &q, out);
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// A tensor's entry in a GGUF file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: the row length first.
    pub dims: Vec<u64>,
    /// ggml type id ([`GgmlType::from_id`] for the ones this module knows).
    pub type_id: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: metadata and tensor directory.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    /// Key-value pairs in file order.
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<TensorInfo>,
    /// Byte offset of the data section in the file.
    pub data_start: u64,
}

impl GgufFile {
    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The directory entry of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Tensor `name` dequantised to f32, in GGUF order (row-major over reversed dims), from the
    /// whole file's bytes.
    pub fn tensor_f32(&self, file: &[u8], name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self
            .tensor(name)
            .ok_or_else(|| GgufError::Read(format!("no tensor {name}")))?;
        let ty = GgmlType::from_id(t.type_id).ok_or_else(|| {
            GgufError::Read(format!("{name}: ggml type {} not readable here", t.type_id))
        })?;
        let n = t.n_elements();
        let start = self.data_start + t.offset;
        let end = start + ty.bytes_for(n);
        let bytes = file.get(start as usize..end as usize).ok_or_else(|| {
            GgufError::Read(format!("{name}: data runs past the end of the file"))
        })?;
        dequantize(ty, bytes, n as usize)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                GgufError::Read(format!("truncated at byte {} (wanted {n} more)", self.pos))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A count that must be satisfiable by the bytes left (each item at least `min_size`), so a
    /// corrupt length cannot request a huge allocation.
    fn count(&mut self, min_size: usize) -> Result<usize, GgufError> {
        let n = self.u64()?;
        let left = (self.b.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(GgufError::Read(format!(
                "count {n} exceeds the bytes left ({left})"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| GgufError::Read(format!("string before byte {} is not UTF-8", self.pos)))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, GgufError> {
        let mut fixed = |n: usize| self.take(n).map(|s| s.to_vec());
        Ok(match ty {
            0 => GgufValue::U8(fixed(1)?[0]),
            1 => GgufValue::I8(fixed(1)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(fixed(2)?.try_into().unwrap())),
            3 => GgufValue::I16(i16::from_le_bytes(fixed(2)?.try_into().unwrap())),
            4 => GgufValue::U32(u32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            5 => GgufValue::I32(i32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            6 => GgufValue::F32(f32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            7 => GgufValue::Bool(fixed(1)?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(GgufError::Read("arrays nested too deep".into()));
                }
                let et = self.u32()?;
                let n = self.count(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(et, depth + 1)?);
                }
                GgufValue::Array(et, items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            11 => GgufValue::I64(i64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            12 => GgufValue::F64(f64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            t => return Err(GgufError::Read(format!("unknown metadata value type {t}"))),
        })
    }
}

/// Parses a GGUF file's header, metadata and tensor directory from its bytes, checking that
/// every tensor's data lies inside the file.
pub fn read_gguf(file: &[u8]) -> Result<GgufFile, GgufError> {
    let mut c = Cursor { b: file, pos: 0 };
    if c.take(4)? != MAGIC {
        return Err(GgufError::Read("no GGUF magic".into()));
    }
    let version = c.u32()?;
    if version != GGUF_VERSION {
        return Err(GgufError::Read(format!(
            "version {version}; only 3 is read"
        )));
    }
    let n_tensors = c.count(8)?;
    let n_kv = c.count(8)?;
    let mut metadata = Vec::with_capacity(n_kv);
    for _ in 0..n_kv {
        let k = c.string()?;
        let t = c.u32()?;
        let v = c.value(t, 0)?;
        metadata.push((k, v));
    }
    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string()?;
        let nd = c.u32()? as usize;
        if nd > 4 {
            return Err(GgufError::Read(format!("{name}: {nd} dimensions")));
        }
        let dims = (0..nd).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
        let type_id = c.u32()?;
        let offset = c.u64()?;
        tensors.push(TensorInfo {
            name,
            dims,
            type_id,
            offset,
        });
    }
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u32())
        .map(u64::from)
        .unwrap_or(ALIGNMENT);
    if alignment == 0 {
        return Err(GgufError::Read("general.alignment is 0".into()));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Read(format!(
                "{}: offset {} is not aligned",
                t.name, t.offset
            )));
        }
        if let Some(ty) = GgmlType::from_id(t.type_id) {
            let n = t.n_elements();
            if n % ty.block_size() as u64 != 0 {
                return Err(GgufError::Read(format!(
                    "{}: {n} values do not fill {ty} blocks",
                    t.name
                )));
            }
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(ty.bytes_for(n)));
            if end.is_none_or(|e| e > file.len() as u64) {
                return Err(GgufError::Read(format!(
                    "{}: data runs past the end of the file",
                    t.name
                )));
            }
        }
    }
    Ok(GgufFile {
        version,
        metadata,
        tensors,
        data_start,
    })
}

/// Dequantises `n` values of type `ty` from `bytes` (exactly `ty.bytes_for(n)` of them).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    if !n.is_multiple_of(ty.block_size()) || bytes.len() as u64 != ty.bytes_for(n as u64) {
        return Err(GgufError::Read(format!(
            "{} bytes are not {n} values of {ty}",
            bytes.len()
        )));
    }
    let mut out = vec![0f32; n];
    let bs = ty.block_size();
    let bb = ty.block_bytes();
    // Many blocks per rayon task: F32/F16 "blocks" are single values.
    let per_task = (1 << 14) / bs;
    out.par_chunks_mut(bs * per_task)
        .zip(bytes.par_chunks(bb * per_task))
        .for_each(|(ys, bs_)| {
            for (y, b) in ys.chunks_exact_mut(bs).zip(bs_.chunks_exact(bb)) {
                dequantize_block(ty, b, y);
            }
        });
    Ok(out)
}

/// Dequantises one block `b` of type `ty` into `y`.
fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes(b.try_into().unwrap()),
        GgmlType::F16 => y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q8_0 => {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            for (v, &q) in y.iter_mut().zip(&b[2..]) {
                *v = d * (q as i8) as f32;
            }
        }
        GgmlType::Q4_K => {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
            let s = &b[4..16];
            let qs = &b[16..];
            for c in 0..4 {
                let (sc0, m0) = q4_k_scale_min(s, 2 * c);
                let (sc1, m1) = q4_k_scale_min(s, 2 * c + 1);
                let (d0, mm0) = (d * sc0 as f32, dmin * m0 as f32);
                let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
                for l in 0..32 {
                    let q = qs[c * 32 + l];
                    y[c * 64 + l] = d0 * (q & 0x0F) as f32 - mm0;
                    y[c * 64 + 32 + l] = d1 * (q >> 4) as f32 - mm1;
                }
            }
        }
        GgmlType::Q6_K => {
            let ql = &b[..128];
            let qh = &b[128..192];
            let sc = &b[192..208];
            let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
            for half in 0..2 {
                let ql = &ql[half * 64..];
                let qh = &qh[half * 32..];
                let sc = &sc[half * 8..];
                let y = &mut y[half * 128..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ollama
// ---------------------------------------------------------------------------------------------

/// ChatML as an Ollama (Go) template: the `<|im_start|>role\ncontent<|im_end|>\n` turns Wick's
/// trained tokenizers and Qwen2 chat models use.
const OLLAMA_CHATML: &str = "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\
{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";

/// Llama 3's header/eot turns as an Ollama template.
const OLLAMA_LLAMA3: &str = "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}\
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}\
<|start_header_id|>assistant<|end_header_id|>\n\n";

/// An Ollama `Modelfile` for the written file (`ollama create NAME -f Modelfile` in its folder).
///
/// Ollama cannot run Jinja: for a ChatML or Llama 3 `chat_template` this writes the equivalent
/// Go `TEMPLATE`; for any other template it writes none, and Ollama falls back on matching the
/// GGUF's `tokenizer.chat_template` against the templates it knows. `stop` (e.g.
/// [`GgufSummary::stop_tokens`]) become `PARAMETER stop` lines; `num_ctx` the context length.
pub fn ollama_modelfile(
    gguf_file_name: &str,
    chat_template: Option<&str>,
    stop: &[String],
    num_ctx: Option<usize>,
) -> String {
    let path = if gguf_file_name.starts_with('/') || gguf_file_name.starts_with('.') {
        gguf_file_name.to_string()
    } else {
        format!("./{gguf_file_name}")
    };
    let mut s = format!(
        "# Ollama Modelfile: `ollama create <name> -f Modelfile` in this folder.\nFROM {path}\n"
    );
    let go = chat_template.and_then(|t| {
        if t.contains("<|im_start|>") && t.contains("<|im_end|>") {
            Some(OLLAMA_CHATML)
        } else if t.contains("<|start_header_id|>") && t.contains("<|eot_id|>") {
            Some(OLLAMA_LLAMA3)
        } else {
            None
        }
    });
    match (go, chat_template) {
        (Some(t), _) => s.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n")),
        (None, Some(_)) => s.push_str(
            "# The chat template is in the GGUF (tokenizer.chat_template); Ollama matches it to a \
             template it knows.\n",
        ),
        (None, None) => s.push_str("# No chat template: a base model, prompted with plain text.\n"),
    }
    for t in stop {
        // Go-style quoting: the token texts here never hold quotes, but stay safe.
        s.push_str(&format!(
            "PARAMETER stop \"{}\"\n",
            t.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    if let Some(n) = num_ctx {
        s.push_str(&format!("PARAMETER num_ctx {n}\n"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (xorshift) → roughly normal values (sum of uniforms).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
        fn normal(&mut self) -> f32 {
            (0..4).map(|_| self.next()).sum::<f32>() - 2.0
        }
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.normal() * scale).collect()
        }
    }

    // ---- quantisation names ----

    #[test]
    fn quant_names_parse_and_print() {
        for q in Quant::ALL {
            assert_eq!(q.as_str().parse::<Quant>().unwrap(), q);
            assert_eq!(q.to_string(), q.as_str());
        }
        assert_eq!("Q4_K_M".parse::<Quant>().unwrap(), Quant::Q4KM);
        assert_eq!("q4-k-m".parse::<Quant>().unwrap(), Quant::Q4KM);
        assert!("q4_0".parse::<Quant>().is_err());
        assert_eq!(
            Quant::ALL.map(Quant::file_type),
            [1, 7, 15],
            "llama_ftype MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_K_M"
        );
        assert_eq!(GgmlType::Q4_K.block_bytes(), 144);
        assert_eq!(GgmlType::Q6_K.block_bytes(), 210);
        assert_eq!(GgmlType::Q8_0.block_bytes(), 34);
    }

    // ---- block layouts against hand-computed bytes ----

    #[test]
    fn q8_0_block_hand_example() {
        // absmax 127 → d = 1.0 exactly (f16 0x3C00); values round half away from zero.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -127.0;
        x[2] = 2.5;
        x[3] = -2.5;
        x[4] = 0.49;
        x[5] = 100.0;
        let mut b = [0u8; 34];
        quantize_q8_0_block(&x, &mut b);
        assert_eq!(&b[..8], &[0x00, 0x3C, 127, 0x81, 3, 0xFD, 0, 100]);
        assert!(b[8..].iter().all(|&v| v == 0));
        assert_eq!(
            dequantize(GgmlType::Q8_0, &b, 32).unwrap()[..6],
            [127.0, -127.0, 3.0, -3.0, 0.0, 100.0]
        );
    }

    #[test]
    fn q4_k_packing_hand_example() {
        // Scales [8,16,24,32,39,47,55,63], mins [0,10,20,30,40,50,60,63], q = sub-block index.
        let ls = [8, 16, 24, 32, 39, 47, 55, 63];
        let lm = [0, 10, 20, 30, 40, 50, 60, 63];
        let mut q = [0u8; QK_K];
        for (i, v) in q.iter_mut().enumerate() {
            *v = (i / 32) as u8;
        }
        let mut b = [0u8; 144];
        pack_q4_k(f16::from_f32(1.0), f16::from_f32(0.5), &ls, &lm, &q, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x3C, 0x00, 0x38]);
        // bytes 0-3: ls[j] | (ls[j+4] >> 4) << 6  → 8|2<<6, 16|2<<6, 24|3<<6, 32|3<<6
        // bytes 4-7: lm[j] | (lm[j+4] >> 4) << 6  → 0|2<<6, 10|3<<6, 20|3<<6, 30|3<<6
        // bytes 8-11: (ls[j+4] & 15) | (lm[j+4] & 15) << 4 → 7|8<<4, 15|2<<4, 7|12<<4, 15|15<<4
        assert_eq!(
            &b[4..16],
            &[
                0x88, 0x90, 0xD8, 0xE0, 0x80, 0xCA, 0xD4, 0xDE, 0x87, 0x2F, 0xC7, 0xFF
            ]
        );
        // 64 values per 32 bytes: low nibble sub-block 2c, high nibble 2c+1.
        for (c, want) in [0x10u8, 0x32, 0x54, 0x76].into_iter().enumerate() {
            assert!(
                b[16 + 32 * c..16 + 32 * (c + 1)].iter().all(|&v| v == want),
                "chunk {c}"
            );
        }
        for j in 0..8 {
            assert_eq!(
                q4_k_scale_min(&b[4..16], j),
                (ls[j], lm[j]),
                "sub-block {j}"
            );
        }
        // Dequantised: d·ls·q − dmin·lm.
        let y = dequantize(GgmlType::Q4_K, &b, QK_K).unwrap();
        for j in 0..8 {
            assert_eq!(y[j * 32], ls[j] as f32 * j as f32 - 0.5 * lm[j] as f32);
        }
    }

    #[test]
    fn q4_k_quantises_an_exact_block_to_known_bytes() {
        // Sub-block j holds (l % 16)·(j+1)/8: exactly representable with min 0, so the fit finds
        // scale (j+1)/8. d = f16(1/63) = 0x2410 (2^-6 · (1 + 16/1024)); the 6-bit scales are
        // round(((j+1)/8) / d) = [8, 16, 24, 32, 39, 47, 55, 63]; dmin = 0.
        let mut x = [0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i % 16) as f32 * ((i / 32) + 1) as f32 / 8.0;
        }
        let mut b = [0u8; 144];
        quantize_q4_k_block(&x, &mut b);
        assert_eq!(&b[..4], &[0x10, 0x24, 0x00, 0x00]);
        assert_eq!(
            &b[4..16],
            &[
                0x88, 0x90, 0xD8, 0xE0, 0x00, 0x00, 0x00, 0x00, 0x07, 0x0F, 0x07, 0x0F
            ]
        );
        // q = l % 16 in both nibbles.
        for l in 0..128 {
            assert_eq!(b[16 + l], ((l % 16) * 0x11) as u8, "byte {l}");
        }
    }

    #[test]
    fn q6_k_packing_hand_example() {
        // q[i] = i / 4 (0..63), scales -8..7, d = 1.
        let mut q = [0u8; QK_K];
        for (i, v) in q.iter_mut().enumerate() {
            *v = (i / 4) as u8;
        }
        let scales: [i8; 16] = std::array::from_fn(|j| j as i8 - 8);
        let mut b = [0u8; 210];
        pack_q6_k(f16::from_f32(1.0), &scales, &q, &mut b);
        // ql[0] = q[0]&15 | (q[64]&15)<<4 = 0 | (16&15)<<4 = 0x00; ql[4] = 1 | 17&15<<4 = 0x11
        assert_eq!((b[0], b[4]), (0x00, 0x11));
        // ql[32] = q[32]&15 | (q[96]&15)<<4 = 8 | (24&15)<<4 = 0x88
        assert_eq!(b[32], 0x88);
        // qh[0] = q[0]>>4 | (q[32]>>4)<<2 | (q[64]>>4)<<4 | (q[96]>>4)<<6 = 0|0|1<<4|1<<6 = 0x50
        assert_eq!(b[128], 0x50);
        // second half: qh[32] = 32>>4 | (40>>4)<<2 | (48>>4)<<4 | (56>>4)<<6 = 2|8|48|192 = 0xFA
        assert_eq!(b[128 + 32], 0xFA);
        assert_eq!(b[192], 0xF8, "scale 0 = -8 as i8");
        assert_eq!(&b[208..], &[0x00, 0x3C]);
        let y = dequantize(GgmlType::Q6_K, &b, QK_K).unwrap();
        for i in 0..QK_K {
            assert_eq!(
                y[i],
                scales[i / 16] as f32 * ((i / 4) as f32 - 32.0),
                "value {i}"
            );
        }
    }

    #[test]
    fn q6_k_quantises_an_exact_block_to_known_bytes() {
        // Every sub-block holds k − 32 for k in 0..16: −32 is the largest magnitude, scale 1.
        // d = f16(1/127) = 0x2008; scale round(1/d) = 127; q = k.
        let x: Vec<f32> = (0..QK_K).map(|i| (i % 16) as f32 - 32.0).collect();
        let mut b = [0u8; 210];
        quantize_q6_k_block(&x, &mut b);
        assert_eq!(&b[208..], &[0x08, 0x20]);
        assert!(b[192..208].iter().all(|&s| s == 127));
        for (l, &v) in b[..128].iter().enumerate() {
            assert_eq!(v, ((l % 16) * 0x11) as u8, "ql {l}");
        }
        assert!(b[128..192].iter().all(|&h| h == 0));
    }

    // ---- quantisers: rounding on the stored grid, error bounds ----

    /// Test vectors: gaussian, gaussian with outliers, constants, zeros, all-positive.
    fn test_blocks(rng: &mut Rng, n_blocks: usize) -> Vec<f32> {
        let mut x = rng.vec(QK_K * n_blocks, 0.02);
        for b in 0..n_blocks {
            let blk = &mut x[b * QK_K..(b + 1) * QK_K];
            match b % 5 {
                1 => {
                    blk[7] = 0.5;
                    blk[200] = -0.3;
                }
                2 => blk.fill(0.0125),
                3 => blk.fill(0.0),
                4 => blk.iter_mut().for_each(|v| *v = v.abs() + 0.01),
                _ => {}
            }
        }
        x
    }

    fn rel_rms(x: &[f32], y: &[f32]) -> f32 {
        let e: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
        let s: f32 = x.iter().map(|a| a * a).sum();
        (e / s).sqrt()
    }

    #[test]
    fn q8_0_error_within_half_step() {
        let mut rng = Rng(7);
        let x = test_blocks(&mut rng, 40);
        let mut b = Vec::new();
        encode(GgmlType::Q8_0, &x, &mut b);
        let y = dequantize(GgmlType::Q8_0, &b, x.len()).unwrap();
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let bound = amax / 254.0 * (1.0 + 1.0 / 1024.0) + 1e-12;
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "{a} vs {b}, bound {bound}");
            }
        }
    }

    #[test]
    fn relative_rms_error_on_gaussian_weights() {
        // Typical error sizes for normal weights: step/√12 relative to σ.
        for (ty, limit) in [
            (GgmlType::Q8_0, 0.01),
            (GgmlType::Q6_K, 0.025),
            (GgmlType::Q4_K, 0.1),
        ] {
            let x = Rng(17).vec(QK_K * 64, 1.0);
            let mut b = Vec::new();
            encode(ty, &x, &mut b);
            let e = rel_rms(&x, &dequantize(ty, &b, x.len()).unwrap());
            assert!(e < limit, "{ty}: relative RMS error {e}");
        }
    }

    #[test]
    fn q4_k_rounds_to_nearest_on_its_stored_grid_and_stays_within_a_step() {
        let mut rng = Rng(11);
        let x = test_blocks(&mut rng, 40);
        let mut b = Vec::new();
        encode(GgmlType::Q4_K, &x, &mut b);
        let y = dequantize(GgmlType::Q4_K, &b, x.len()).unwrap();
        for (blk, (xb, yb)) in b.chunks(144).zip(x.chunks(QK_K).zip(y.chunks(QK_K))) {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let dmin = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
            let lo = xb.iter().fold(0f32, |m, &v| m.min(v));
            let hi = xb.iter().fold(f32::MIN, |m, &v| m.max(v));
            for j in 0..8 {
                let (sc, m) = q4_k_scale_min(&blk[4..16], j);
                let (dl, dm) = (d * sc as f32, dmin * m as f32);
                for l in 0..32 {
                    let (a, b) = (xb[j * 32 + l], yb[j * 32 + l]);
                    // The nearest of the 16 levels −dm + k·dl.
                    let nearest = (0..16)
                        .map(|k| (dl * k as f32 - dm - a).abs())
                        .fold(f32::MAX, f32::min);
                    assert!((a - b).abs() <= nearest + 1e-6, "not the nearest level");
                    // And a full step of the super-block's range bounds every error.
                    assert!((a - b).abs() <= (hi - lo) / 15.0 + 1e-6, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn q6_k_rounds_to_nearest_on_its_stored_grid_and_stays_within_a_step() {
        let mut rng = Rng(13);
        let x = test_blocks(&mut rng, 40);
        let mut b = Vec::new();
        encode(GgmlType::Q6_K, &x, &mut b);
        let y = dequantize(GgmlType::Q6_K, &b, x.len()).unwrap();
        for (blk, (xb, yb)) in b.chunks(210).zip(x.chunks(QK_K).zip(y.chunks(QK_K))) {
            let d = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for i in 0..QK_K {
                let dl = d * (blk[192 + i / 16] as i8) as f32;
                let (a, b) = (xb[i], yb[i]);
                let nearest = (-32..32)
                    .map(|k| (dl * k as f32 - a).abs())
                    .fold(f32::MAX, f32::min);
                assert!((a - b).abs() <= nearest + 1e-7, "not the nearest level");
                assert!((a - b).abs() <= amax / 32.0 + 1e-7, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_and_clamps_overflow() {
        let x = [1.0f32, 1.0 + 1.0 / 4096.0, 70000.0, -1e9, 1e-8];
        let mut b = Vec::new();
        let clamped = encode(GgmlType::F16, &x, &mut b);
        assert_eq!(clamped, 2);
        let y = dequantize(GgmlType::F16, &b, x.len()).unwrap();
        assert_eq!(
            y,
            vec![1.0, 1.0, 65504.0, -65504.0, f16::from_f32(1e-8).to_f32()]
        );
    }

    // ---- q/k permutation ----

    #[test]
    fn permutation_matches_its_definition_and_inverts() {
        let (heads, hd, cols) = (3, 8, 5);
        let x: Vec<f32> = (0..heads * hd * cols).map(|i| i as f32).collect();
        let p = permute_qk(&x, heads, cols);
        for h in 0..heads {
            for j in 0..hd / 2 {
                let row = |v: &[f32], r: usize| v[r * cols..(r + 1) * cols].to_vec();
                assert_eq!(row(&p, h * hd + 2 * j), row(&x, h * hd + j));
                assert_eq!(row(&p, h * hd + 2 * j + 1), row(&x, h * hd + j + hd / 2));
            }
        }
        assert_eq!(unpermute_qk(&p, heads, cols), x);
        // llama.cpp's converter: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).
        let mut reference = vec![0.0; x.len()];
        for h in 0..heads {
            for two in 0..2 {
                for j in 0..hd / 2 {
                    for c in 0..cols {
                        let src = ((h * 2 + two) * (hd / 2) + j) * cols + c;
                        let dst = ((h * (hd / 2) + j) * 2 + two) * cols + c;
                        reference[dst] = x[src];
                    }
                }
            }
        }
        assert_eq!(p, reference);
    }

    /// RoPE as transformers applies it (rotate-half: pairs j, j + d/2) and as llama.cpp's llama
    /// graph does (pairs 2j, 2j+1), at position `pos`.
    fn rope_half(v: &[f32], pos: f32, theta: f32) -> Vec<f32> {
        let d = v.len();
        let mut o = v.to_vec();
        for j in 0..d / 2 {
            let a = pos / theta.powf(2.0 * j as f32 / d as f32);
            let (s, c) = a.sin_cos();
            o[j] = v[j] * c - v[j + d / 2] * s;
            o[j + d / 2] = v[j + d / 2] * c + v[j] * s;
        }
        o
    }

    fn rope_interleaved(v: &[f32], pos: f32, theta: f32) -> Vec<f32> {
        let d = v.len();
        let mut o = v.to_vec();
        for j in 0..d / 2 {
            let a = pos / theta.powf(2.0 * j as f32 / d as f32);
            let (s, c) = a.sin_cos();
            o[2 * j] = v[2 * j] * c - v[2 * j + 1] * s;
            o[2 * j + 1] = v[2 * j + 1] * c + v[2 * j] * s;
        }
        o
    }

    #[test]
    fn permuted_weights_give_the_same_attention_scores_under_llama_cpp_rope() {
        // q = Wq·x per head; the score q·k after RoPE must not depend on the layout.
        let mut rng = Rng(3);
        let (hd, hidden) = (16, 12);
        let wq = rng.vec(hd * hidden, 1.0);
        let wk = rng.vec(hd * hidden, 1.0);
        let (x1, x2) = (rng.vec(hidden, 1.0), rng.vec(hidden, 1.0));
        let mv = |w: &[f32], x: &[f32]| -> Vec<f32> {
            w.chunks(hidden)
                .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
                .collect()
        };
        let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        let hf = dot(
            &rope_half(&mv(&wq, &x1), 7.0, 10000.0),
            &rope_half(&mv(&wk, &x2), 3.0, 10000.0),
        );
        let (pq, pk) = (permute_qk(&wq, 1, hidden), permute_qk(&wk, 1, hidden));
        let gg = dot(
            &rope_interleaved(&mv(&pq, &x1), 7.0, 10000.0),
            &rope_interleaved(&mv(&pk, &x2), 3.0, 10000.0),
        );
        assert!((hf - gg).abs() < 1e-3 * hf.abs().max(1.0), "{hf} vs {gg}");
        // Unpermuted weights under the interleaved rotation do not agree (the bug this prevents).
        let wrong = dot(
            &rope_interleaved(&mv(&wq, &x1), 7.0, 10000.0),
            &rope_interleaved(&mv(&wk, &x2), 3.0, 10000.0),
        );
        assert!((hf - wrong).abs() > 1e-2);
    }

    #[test]
    fn llama3_rope_factors_follow_the_wavelength_rule() {
        // Llama 3.1: factor 8, low 1, high 4, original context 8192, theta 500000, head_dim 128.
        let f = llama3_rope_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "short wavelengths are kept");
        assert_eq!(f[63], 8.0, "long wavelengths are divided by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "monotone in wavelength");
        assert!(
            f.iter().any(|&v| v > 1.0 && v < 8.0),
            "a smooth band between"
        );
    }

    // ---- whole-model round trips ----

    /// GPT-2's byte → printable character map, as byte-level BPE vocabularies spell bytes.
    fn byte_chars() -> Vec<char> {
        let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let mut out = vec![' '; 256];
        for (b, c) in bs.iter().zip(cs) {
            out[*b as usize] = char::from_u32(c).unwrap();
        }
        out
    }

    /// A tiny byte-level BPE tokenizer.json: the 256 byte tokens, a few merges, and specials
    /// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` and a non-special `<think>`.
    fn tiny_tokenizer(pre_tokenizer: Value, post: Value) -> (String, usize) {
        let chars = byte_chars();
        let mut vocab = serde_json::Map::new();
        for (i, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), Value::from(i));
        }
        let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")];
        for (k, (a, b)) in merges.iter().enumerate() {
            vocab.insert(format!("{a}{b}"), Value::from(256 + k));
        }
        let added = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"];
        let added_json: Vec<Value> = added
            .iter()
            .enumerate()
            .map(|(k, t)| serde_json::json!({"id": 259 + k, "content": t, "special": *t != "<think>"}))
            .collect();
        let tok = serde_json::json!({
            "version": "1.0",
            "added_tokens": added_json,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "byte_fallback": false, "vocab": vocab,
                      "merges": merges.iter().map(|(a, b)| serde_json::json!([a, b])).collect::<Vec<_>>()},
        });
        (tok.to_string(), 263)
    }

    fn gpt2_pre() -> Value {
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
    }

    fn split_pre(regex: &str) -> Value {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
    }

    const CHATML: &str =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

    fn meta(
        arch: Arch,
        hidden: usize,
        heads: usize,
        kv: usize,
        head_dim: usize,
        ff: usize,
        tied: bool,
    ) -> ModelMeta {
        ModelMeta {
            architecture: arch,
            name: "test-model".into(),
            context_length: 512,
            embedding_length: hidden,
            block_count: 3,
            feed_forward_length: ff,
            head_count: heads,
            head_count_kv: kv,
            head_dim,
            rope_freq_base: 10000.0,
            rms_eps: 1e-5,
            vocab_size: 300,
            rope_scaling: None,
            tie_word_embeddings: tied,
            sliding_window: None,
            bos_token_id: None,
            eos_token_id: Some(259),
            pad_token_id: None,
        }
    }

    /// Random weights for every tensor `meta` implies (biases on q/k/v when `qkv_bias`).
    fn weights(meta: &ModelMeta, qkv_bias: bool, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut rng = Rng(seed);
        let mut names = vec![("model.embed_tokens.weight".to_string(), Role::Embed, false)];
        names.push(("model.norm.weight".into(), Role::OutputNorm, false));
        if !meta.tie_word_embeddings {
            names.push(("lm_head.weight".into(), Role::Output, false));
        }
        for i in 0..meta.block_count {
            let p = format!("model.layers.{i}");
            names.push((format!("{p}.input_layernorm.weight"), Role::AttnNorm, false));
            names.push((
                format!("{p}.post_attention_layernorm.weight"),
                Role::FfnNorm,
                false,
            ));
            for (r, s) in [
                (Role::Q, "self_attn.q_proj"),
                (Role::K, "self_attn.k_proj"),
                (Role::V, "self_attn.v_proj"),
                (Role::O, "self_attn.o_proj"),
                (Role::Gate, "mlp.gate_proj"),
                (Role::Up, "mlp.up_proj"),
                (Role::Down, "mlp.down_proj"),
            ] {
                names.push((format!("{p}.{s}.weight"), r, false));
                if qkv_bias && matches!(r, Role::Q | Role::K | Role::V) {
                    names.push((format!("{p}.{s}.bias"), r, true));
                }
            }
        }
        names
            .into_iter()
            .map(|(n, r, b)| {
                let shape = expected_shape(meta, r, b);
                let len = shape.iter().product();
                let data = if matches!(r, Role::AttnNorm | Role::FfnNorm | Role::OutputNorm) {
                    (0..len).map(|_| 1.0 + 0.1 * rng.normal()).collect()
                } else {
                    rng.vec(len, 0.05)
                };
                (n, shape, data)
            })
            .collect()
    }

    fn export(
        meta: &ModelMeta,
        w: &[(String, Vec<usize>, Vec<f32>)],
        tok: &TokenizerFiles,
        quant: Quant,
    ) -> Result<(Vec<u8>, GgufSummary), GgufError> {
        let ins: Vec<TensorIn> = w
            .iter()
            .map(|(n, s, d)| TensorIn {
                name: n,
                shape: s,
                data: d,
            })
            .collect();
        let mut out = Vec::new();
        let s = write_gguf(&mut out, meta, tok, &ins, quant)?;
        Ok((out, s))
    }

    /// The error bound of one value against its source, per type (as check_gguf.py uses).
    fn check_values(ty: GgmlType, x: &[f32], y: &[f32], cols: usize) {
        assert_eq!(x.len(), y.len());
        match ty {
            GgmlType::F32 => assert_eq!(x, y),
            GgmlType::F16 => {
                for (a, b) in x.iter().zip(y) {
                    assert_eq!(f16::from_f32(*a).to_f32(), *b);
                }
            }
            GgmlType::Q8_0 => {
                for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in xb.iter().zip(yb) {
                        assert!((a - b).abs() <= amax / 254.0 * 1.001 + 1e-12);
                    }
                }
            }
            GgmlType::Q4_K => {
                for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
                    let lo = xb.iter().fold(0f32, |m, &v| m.min(v));
                    let hi = xb.iter().fold(f32::MIN, |m, &v| m.max(v));
                    for (a, b) in xb.iter().zip(yb) {
                        assert!((a - b).abs() <= (hi - lo) / 15.0 + 1e-6);
                    }
                }
            }
            GgmlType::Q6_K => {
                for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in xb.iter().zip(yb) {
                        assert!((a - b).abs() <= amax / 32.0 + 1e-7);
                    }
                }
            }
        }
        assert_eq!(x.len() % cols, 0);
    }

    fn round_trip(arch: Arch, qkv_bias: bool, tied: bool, pre: Value, want_pre: &str) {
        // Llama/Mistral: 8 heads of 64 ≠ hidden 256 exercises key_length; 2 kv heads (GQA).
        let (heads, head_dim) = if arch == Arch::Qwen2 {
            (4, 64)
        } else {
            (8, 64)
        };
        let m = meta(arch, 256, heads, 2, head_dim, 512, tied);
        let w = weights(&m, qkv_bias, 42);
        let (tj, _) = tiny_tokenizer(pre, Value::Null);
        let cfg = serde_json::json!({"bos_token": "<|endoftext|>", "add_bos_token": false, "chat_template": CHATML}).to_string();
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            tokenizer_config_json: Some(&cfg),
            chat_template: None,
        };
        for quant in Quant::ALL {
            let (bytes, summary) = export(&m, &w, &tok, quant).unwrap();
            assert_eq!(summary.bytes_written as usize, bytes.len());
            let f = read_gguf(&bytes).unwrap();
            let arch_name = arch.gguf_name();
            let u = |k: &str| {
                f.get(&format!("{arch_name}.{k}"))
                    .and_then(GgufValue::as_u32)
            };
            assert_eq!(
                f.get("general.architecture").unwrap().as_str(),
                Some(arch_name)
            );
            assert_eq!(f.get("general.name").unwrap().as_str(), Some("test-model"));
            assert_eq!(
                f.get("general.file_type").unwrap().as_u32(),
                Some(quant.file_type())
            );
            assert_eq!(
                f.get("general.quantization_version").unwrap().as_u32(),
                Some(2)
            );
            assert_eq!(u("context_length"), Some(512));
            assert_eq!(u("embedding_length"), Some(256));
            assert_eq!(u("block_count"), Some(3));
            assert_eq!(u("feed_forward_length"), Some(512));
            assert_eq!(u("attention.head_count"), Some(heads as u32));
            assert_eq!(u("attention.head_count_kv"), Some(2));
            assert_eq!(u("rope.dimension_count"), Some(64));
            assert_eq!(u("vocab_size"), Some(300));
            let has_kl = heads * head_dim != 256;
            assert_eq!(u("attention.key_length"), has_kl.then_some(64));
            assert_eq!(u("attention.value_length"), has_kl.then_some(64));
            assert_eq!(
                f.get(&format!("{arch_name}.rope.freq_base"))
                    .unwrap()
                    .as_f32(),
                Some(10000.0)
            );
            assert_eq!(
                f.get(&format!("{arch_name}.attention.layer_norm_rms_epsilon"))
                    .unwrap()
                    .as_f32(),
                Some(1e-5)
            );
            assert_eq!(
                f.get("tokenizer.ggml.model").unwrap().as_str(),
                Some("gpt2")
            );
            assert_eq!(
                f.get("tokenizer.ggml.pre").unwrap().as_str(),
                Some(want_pre)
            );
            let tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
            let types = f
                .get("tokenizer.ggml.token_type")
                .unwrap()
                .as_array()
                .unwrap();
            assert_eq!((tokens.len(), types.len()), (300, 300));
            assert_eq!(tokens[256].as_str(), Some("Ġt"));
            assert_eq!(tokens[259].as_str(), Some("<|endoftext|>"));
            assert_eq!(tokens[299].as_str(), Some("[PAD299]"));
            let ty = |i: usize| match types[i] {
                GgufValue::I32(t) => t,
                _ => panic!("token types are i32"),
            };
            assert_eq!((ty(0), ty(258), ty(259), ty(262), ty(263)), (1, 1, 3, 4, 5));
            let merges = f.get("tokenizer.ggml.merges").unwrap().as_array().unwrap();
            assert_eq!(merges[2].as_str(), Some("Ġt he"));
            assert_eq!(
                f.get("tokenizer.ggml.bos_token_id").unwrap().as_u32(),
                Some(259)
            );
            assert_eq!(
                f.get("tokenizer.ggml.eos_token_id").unwrap().as_u32(),
                Some(259)
            );
            assert_eq!(
                f.get("tokenizer.ggml.add_bos_token").unwrap().as_bool(),
                Some(false)
            );
            assert_eq!(
                f.get("tokenizer.chat_template").unwrap().as_str(),
                Some(CHATML)
            );
            assert_eq!(
                summary.stop_tokens,
                vec!["<|endoftext|>".to_string(), "<|im_end|>".into()]
            );

            // Tensors: names, dims, types, values.
            assert_eq!(f.tensors.len(), w.len());
            assert!(f.tensor("output.weight").is_some() != tied);
            for (name, shape, data) in &w {
                let (role, layer, bias) = parse_hf_name(name).unwrap();
                let gname = gguf_name(role, layer, bias);
                let info = f
                    .tensor(&gname)
                    .unwrap_or_else(|| panic!("{gname} missing"));
                let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
                assert_eq!(info.dims, dims, "{gname}");
                let t = GgmlType::from_id(info.type_id).unwrap();
                let want = if shape.len() == 1 {
                    GgmlType::F32
                } else {
                    match quant {
                        Quant::F16 => GgmlType::F16,
                        Quant::Q8_0 => GgmlType::Q8_0,
                        Quant::Q4KM => match role {
                            Role::Output => GgmlType::Q6_K,
                            Role::Embed if tied => GgmlType::Q6_K,
                            Role::V | Role::Down if use_more_bits(layer.unwrap(), 3) => {
                                GgmlType::Q6_K
                            }
                            _ => GgmlType::Q4_K,
                        },
                    }
                };
                assert_eq!(t, want, "{gname} under {quant}");
                let mut y = f.tensor_f32(&bytes, &gname).unwrap();
                let cols = *shape.last().unwrap();
                if arch.permutes_qk() && matches!(role, Role::Q | Role::K) {
                    let h = if role == Role::Q { heads } else { 2 };
                    y = unpermute_qk(&y, h, if bias { 1 } else { cols });
                }
                check_values(t, data, &y, cols);
            }
        }
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_common_depths() {
        let picked = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(picked(3), vec![2]);
        assert_eq!(picked(10), vec![0, 3, 6, 8, 9]);
        // Llama 3 8B (32 layers): first 4, last 4, and every third between.
        assert_eq!(
            picked(32),
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn round_trip_llama_gqa_untied_gpt2_tokenizer() {
        round_trip(Arch::Llama, false, false, gpt2_pre(), "gpt-2");
    }

    #[test]
    fn round_trip_qwen2_bias_tied_qwen2_tokenizer() {
        round_trip(Arch::Qwen2, true, true, split_pre(QWEN2_SPLIT), "qwen2");
    }

    #[test]
    fn round_trip_mistral_llama3_tokenizer_with_llama_biases() {
        round_trip(
            Arch::Mistral,
            true,
            false,
            split_pre(LLAMA3_SPLIT),
            "llama-bpe",
        );
    }

    #[test]
    fn rows_that_do_not_fill_blocks_fall_back_and_are_reported() {
        // hidden 96: K-quants (256) do not fit → Q8_0; ff 200 (ffn_down rows of 200) → F16.
        let mut m = meta(Arch::Llama, 96, 3, 3, 32, 200, true);
        m.block_count = 2;
        let w = weights(&m, false, 5);
        let (tj, _) = tiny_tokenizer(gpt2_pre(), Value::Null);
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            ..Default::default()
        };
        let (bytes, s) = export(&m, &w, &tok, Quant::Q4KM).unwrap();
        let f = read_gguf(&bytes).unwrap();
        let ty = |n: &str| GgmlType::from_id(f.tensor(n).unwrap().type_id).unwrap();
        assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::F16);
        let t = s
            .tensors
            .iter()
            .find(|t| t.name == "blk.1.ffn_down.weight")
            .unwrap();
        assert_eq!(t.fallback_from, Some(GgmlType::Q6_K));
        assert_eq!(s.fallbacks.len(), 1 + 2 * 7);
        assert!(
            s.fallbacks
                .iter()
                .any(|l| l.contains("blk.0.ffn_down.weight") && l.contains("F16"))
        );
        // Q8_0 mode: the 200-wide rows go to F16 too.
        let (_, s) = export(&m, &w, &tok, Quant::Q8_0).unwrap();
        assert_eq!(s.fallbacks.len(), 2);
        for t in &s.tensors {
            let y = read_gguf(&bytes)
                .unwrap()
                .tensor_f32(&bytes, &t.name)
                .unwrap();
            assert_eq!(y.len() as u64, t.dims.iter().product::<u64>());
        }
    }

    #[test]
    fn llama3_scaling_writes_rope_freqs_and_linear_yarn_write_keys() {
        let mut m = meta(Arch::Llama, 256, 4, 2, 64, 256, true);
        let w = weights(&m, false, 9);
        let (tj, _) = tiny_tokenizer(split_pre(LLAMA3_SPLIT), Value::Null);
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            ..Default::default()
        };
        m.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context_length: 64,
        });
        let (bytes, _) = export(&m, &w, &tok, Quant::F16).unwrap();
        let f = read_gguf(&bytes).unwrap();
        let rf = f.tensor_f32(&bytes, "rope_freqs.weight").unwrap();
        assert_eq!(rf, llama3_rope_factors(64, 10000.0, 8.0, 1.0, 4.0, 64));
        assert_eq!(f.tensors[0].name, "rope_freqs.weight");
        m.rope_scaling = Some(RopeScaling::Yarn {
            factor: 4.0,
            original_context_length: 128,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: Some(0.1 * 4f64.ln() + 1.0),
        });
        let (bytes, _) = export(&m, &w, &tok, Quant::F16).unwrap();
        let f = read_gguf(&bytes).unwrap();
        assert_eq!(
            f.get("llama.rope.scaling.type").unwrap().as_str(),
            Some("yarn")
        );
        assert_eq!(
            f.get("llama.rope.scaling.factor").unwrap().as_f32(),
            Some(4.0)
        );
        assert_eq!(
            f.get("llama.rope.scaling.original_context_length")
                .unwrap()
                .as_u32(),
            Some(128)
        );
        assert!(
            f.get("llama.rope.scaling.yarn_attn_factor").is_none(),
            "default factor omitted"
        );
        m.rope_scaling = Some(RopeScaling::Linear { factor: 2.0 });
        let (bytes, _) = export(&m, &w, &tok, Quant::F16).unwrap();
        let f = read_gguf(&bytes).unwrap();
        assert_eq!(
            f.get("llama.rope.scaling.type").unwrap().as_str(),
            Some("linear")
        );
        m.rope_scaling = Some(RopeScaling::Dynamic { factor: 2.0 });
        m.sliding_window = Some(128);
        let (_, s) = export(&m, &w, &tok, Quant::F16).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("dynamic")));
        assert!(s.warnings.iter().any(|w| w.contains("sliding window")));
    }

    // ---- tokenizer handling ----

    fn vocab_of(tj: &str, cfg: Option<&str>, m: &ModelMeta) -> Result<GgufVocab, GgufError> {
        build_vocab(
            &TokenizerFiles {
                tokenizer_json: tj,
                tokenizer_config_json: cfg,
                chat_template: None,
            },
            m,
        )
    }

    #[test]
    fn refuses_tokenizers_llama_cpp_would_read_differently() {
        let m = meta(Arch::Llama, 256, 4, 4, 64, 256, true);
        let (tj, _) = tiny_tokenizer(gpt2_pre(), Value::Null);
        let base: Value = serde_json::from_str(&tj).unwrap();
        let with = |path: &[&str], v: Value| {
            let mut t = base.clone();
            let mut cur = &mut t;
            for p in &path[..path.len() - 1] {
                cur = cur.get_mut(*p).unwrap();
            }
            cur[path[path.len() - 1]] = v;
            t.to_string()
        };
        let cases = [
            (with(&["model", "type"], "Unigram".into()), "Unigram"),
            (
                with(&["model", "byte_fallback"], true.into()),
                "byte_fallback",
            ),
            (
                with(
                    &["pre_tokenizer"],
                    serde_json::json!({"type": "Metaspace", "replacement": "▁"}),
                ),
                "Metaspace",
            ),
            (
                with(&["pre_tokenizer"], split_pre(r"\p{L}+|\s+")),
                "split regex",
            ),
            (
                with(
                    &["pre_tokenizer"],
                    serde_json::json!({"type": "ByteLevel", "add_prefix_space": true}),
                ),
                "add_prefix_space",
            ),
            (
                with(&["decoder"], serde_json::json!({"type": "Metaspace"})),
                "decoder",
            ),
            (
                with(&["normalizer"], serde_json::json!({"type": "Lowercase"})),
                "normalizer",
            ),
        ];
        for (t, want) in cases {
            let e = vocab_of(&t, None, &m).unwrap_err();
            assert!(matches!(e, GgufError::Tokenizer(_)), "{e}");
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
        // A vocabulary larger than the model.
        let mut small = m.clone();
        small.vocab_size = 200;
        assert!(
            vocab_of(&tj, None, &small)
                .unwrap_err()
                .to_string()
                .contains("vocab_size is 200")
        );
    }

    #[test]
    fn reads_special_tokens_bos_flag_and_templates() {
        let mut m = meta(Arch::Llama, 256, 4, 4, 64, 256, true);
        m.eos_token_id = None;
        // Llama 3 style: BOS added by the post-processor's template, merges as "a b" strings.
        let post = serde_json::json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}]}]});
        let (tj, _) = tiny_tokenizer(split_pre(LLAMA3_SPLIT), post);
        let mut t: Value = serde_json::from_str(&tj).unwrap();
        t["model"]["merges"] = serde_json::json!(["Ġ t", "h e", "Ġt he"]);
        let tj = t.to_string();
        let cfg = serde_json::json!({
            "bos_token": {"content": "<|endoftext|>", "__type": "AddedToken"},
            "eos_token": "<|im_end|>",
            "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]
        })
        .to_string();
        let v = vocab_of(&tj, Some(&cfg), &m).unwrap();
        assert_eq!((v.bos, v.eos, v.pad), (Some(259), Some(261), None));
        assert!(v.add_bos && !v.add_eos);
        assert_eq!(v.merges, vec!["Ġ t", "h e", "Ġt he"]);
        assert_eq!(v.chat_template.as_deref(), Some("D"));
        assert_eq!(
            v.named_templates,
            vec![("tool_use".to_string(), "T".to_string())]
        );
        // chat_template.jinja wins; an explicit add_bos_token wins over the post-processor.
        let cfg2 = serde_json::json!({"add_bos_token": false, "chat_template": "X"}).to_string();
        let v = build_vocab(
            &TokenizerFiles {
                tokenizer_json: &tj,
                tokenizer_config_json: Some(&cfg2),
                chat_template: Some("J"),
            },
            &m,
        )
        .unwrap();
        assert_eq!(v.chat_template.as_deref(), Some("J"));
        assert!(!v.add_bos);
        // An id outside the vocabulary is an error, not a broken file.
        m.eos_token_id = Some(5000);
        assert!(vocab_of(&tj, None, &m).is_err());
    }

    #[test]
    fn wick_trained_tokenizer_round_trips_through_the_gguf_vocabulary() {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{AddedToken, Tokenizer};
        // Trained as Wick's tokenizer::train_bpe trains: byte-level, no prefix space, specials
        // <|endoftext|> <|pad|> <|im_start|> <|im_end|> at ids 0..4.
        let specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(400)
            .min_frequency(2)
            .special_tokens(
                specials
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut tok = Tokenizer::new(BPE::default());
        let bl = ByteLevel::new(false, true, true);
        tok.with_pre_tokenizer(Some(bl));
        tok.with_decoder(Some(bl));
        tok.with_post_processor(Some(bl));
        let texts: Vec<String> = (0..300)
            .map(|i| {
                format!("The cat number {i} sat on the mat. Don't stop, it's 12345 o'clock!\n")
            })
            .collect();
        tok.train(&mut trainer, texts.iter()).unwrap();
        let tj = tok.to_string(false).unwrap();
        let mut m = meta(Arch::Llama, 256, 4, 4, 64, 256, true);
        m.vocab_size = tok.get_vocab_size(true);
        m.eos_token_id = Some(0);
        let v = vocab_of(&tj, None, &m).unwrap();
        assert_eq!(v.pre, "gpt-2");
        assert_eq!(&v.types[..4], &[3, 3, 3, 3]);
        // Rebuild a tokenizer from the GGUF tokens and merges alone, as llama.cpp does, and
        // check it tokenises like the original.
        let vocab: tokenizers::models::bpe::Vocab = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = v
            .merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .unwrap();
        let mut rebuilt = Tokenizer::new(bpe);
        rebuilt.with_pre_tokenizer(Some(bl));
        rebuilt.with_decoder(Some(bl));
        let _ = rebuilt.add_special_tokens(
            specials
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect::<Vec<_>>(),
        );
        for text in [
            "The cat sat on the mat.",
            "  leading spaces and 987654 digits, don't",
            "<|im_start|>user\nhi there<|im_end|>\n",
            "ünïcödé ☃ text",
        ] {
            let a = tok.encode(text, false).unwrap();
            let b = rebuilt.encode(text, false).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        }
    }

    // ---- input validation ----

    #[test]
    fn rejects_missing_misshapen_and_unknown_tensors_before_writing() {
        let m = meta(Arch::Llama, 256, 4, 2, 64, 256, false);
        let (tj, _) = tiny_tokenizer(gpt2_pre(), Value::Null);
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            ..Default::default()
        };
        let w = weights(&m, false, 1);
        let check = |w: &[(String, Vec<usize>, Vec<f32>)], want: &str| {
            let ins: Vec<TensorIn> = w
                .iter()
                .map(|(n, s, d)| TensorIn {
                    name: n,
                    shape: s,
                    data: d,
                })
                .collect();
            let mut out = Vec::new();
            let e = write_gguf(&mut out, &m, &tok, &ins, Quant::F16).unwrap_err();
            assert!(e.to_string().contains(want), "{e} should mention {want}");
            assert!(out.is_empty(), "nothing written on error");
        };
        check(&w[1..], "missing tensors: model.embed_tokens.weight");
        let mut bad = w.clone();
        bad.retain(|(n, _, _)| n != "lm_head.weight");
        check(&bad, "lm_head.weight");
        let mut bad = w.clone();
        bad[0].1 = vec![256, 300];
        check(&bad, "shape");
        let mut bad = w.clone();
        bad.push((
            "model.layers.0.self_attn.rotary.weight".into(),
            vec![4],
            vec![0.0; 4],
        ));
        check(&bad, "not a tensor");
        let mut bad = w.clone();
        bad.push((
            "model.layers.7.input_layernorm.weight".into(),
            vec![256],
            vec![0.0; 256],
        ));
        check(&bad, "layer 7");
        // Qwen2 without its q/k/v biases.
        let mut q = meta(Arch::Qwen2, 256, 4, 2, 64, 256, true);
        q.name = "q".into();
        let w = weights(&q, false, 1);
        let ins: Vec<TensorIn> = w
            .iter()
            .map(|(n, s, d)| TensorIn {
                name: n,
                shape: s,
                data: d,
            })
            .collect();
        let e = write_gguf(&mut Vec::new(), &q, &tok, &ins, Quant::F16).unwrap_err();
        assert!(e.to_string().contains("q_proj.bias"), "{e}");
        // A tied model may still carry lm_head and a rotary buffer: both skipped.
        let t = meta(Arch::Llama, 256, 4, 2, 64, 256, true);
        let mut w = weights(&t, false, 1);
        w.push((
            "lm_head.weight".into(),
            vec![300, 256],
            vec![0.0; 300 * 256],
        ));
        w.push((
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            vec![32],
            vec![0.0; 32],
        ));
        let (bytes, _) = export(&t, &w, &tok, Quant::F16).unwrap();
        assert!(read_gguf(&bytes).unwrap().tensor("output.weight").is_none());
    }

    #[test]
    fn streaming_fetches_each_tensor_once_in_file_order_and_writes_the_same_bytes() {
        let m = meta(Arch::Llama, 256, 8, 2, 64, 512, false);
        let w = weights(&m, false, 4);
        let (tj, _) = tiny_tokenizer(gpt2_pre(), Value::Null);
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            ..Default::default()
        };
        let (eager, _) = export(&m, &w, &tok, Quant::Q4KM).unwrap();
        let specs: Vec<TensorSpec> = w
            .iter()
            .map(|(n, s, _)| TensorSpec { name: n, shape: s })
            .collect();
        let mut asked = Vec::new();
        let mut out = Vec::new();
        write_gguf_streaming(&mut out, &m, &tok, &specs, Quant::Q4KM, |name| {
            asked.push(name.to_string());
            let data = &w.iter().find(|(n, _, _)| n == name).unwrap().2;
            Ok(Cow::Owned(data.clone()))
        })
        .unwrap();
        assert_eq!(out, eager);
        assert_eq!(asked.len(), w.len());
        assert_eq!(asked[0], "model.embed_tokens.weight");
        assert_eq!(asked.last().unwrap(), "lm_head.weight");
        // A fetch error or a short tensor stops the export with that error.
        let e = write_gguf_streaming(&mut Vec::new(), &m, &tok, &specs, Quant::F16, |_| {
            Err(GgufError::Tensor("disk gone".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk gone"));
        let e = write_gguf_streaming(&mut Vec::new(), &m, &tok, &specs, Quant::F16, |_| {
            Ok(Cow::Owned(vec![0.0; 3]))
        })
        .unwrap_err();
        assert!(e.to_string().contains("3 values"), "{e}");
        // The eager entry point refuses NaN before writing anything.
        let mut bad = w.clone();
        bad[3].2[0] = f32::NAN;
        let mut out = Vec::new();
        let e = export(&m, &bad, &tok, Quant::F16).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        assert!(write_gguf(&mut out, &m, &tok, &[], Quant::F16).is_err() && out.is_empty());
    }

    #[test]
    fn meta_from_hf_config_reads_both_spellings() {
        let v4 = r#"{"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "tie_word_embeddings": true, "eos_token_id": [151645, 151643],
            "sliding_window": 32768, "use_sliding_window": false,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}"#;
        let m = ModelMeta::from_hf_config(v4, "Qwen2.5-0.5B").unwrap();
        assert_eq!(m.architecture, Arch::Qwen2);
        assert_eq!(
            (m.head_dim, m.head_count_kv, m.eos_token_id),
            (64, 2, Some(151645))
        );
        assert_eq!(m.sliding_window, None);
        assert!(matches!(
            m.rope_scaling,
            Some(RopeScaling::Yarn {
                original_context_length: 32768,
                ..
            })
        ));
        let v5 = r#"{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "head_dim": 8,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#;
        let m = ModelMeta::from_hf_config(v5, "x").unwrap();
        assert_eq!(m.rope_freq_base, 500000.0);
        assert_eq!(m.head_count_kv, 4);
        assert!(matches!(
            m.rope_scaling,
            Some(RopeScaling::Llama3 { factor: 32.0, .. })
        ));
        assert!(ModelMeta::from_hf_config(r#"{"model_type": "gemma"}"#, "x").is_err());
    }

    // ---- reader robustness and the Modelfile ----

    #[test]
    fn reader_rejects_garbage_and_truncation() {
        assert!(read_gguf(b"GGML").is_err());
        assert!(read_gguf(b"").is_err());
        let m = meta(Arch::Llama, 256, 4, 2, 64, 256, true);
        let (tj, _) = tiny_tokenizer(gpt2_pre(), Value::Null);
        let tok = TokenizerFiles {
            tokenizer_json: &tj,
            ..Default::default()
        };
        let (bytes, _) = export(&m, &weights(&m, false, 2), &tok, Quant::Q8_0).unwrap();
        assert!(read_gguf(&bytes).is_ok());
        for cut in [10, 100, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_gguf(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_gguf(&huge).is_err());
        // Header layout: magic, version 3, counts; data starts aligned.
        assert_eq!(&bytes[..8], b"GGUF\x03\x00\x00\x00");
        assert_eq!(read_gguf(&bytes).unwrap().data_start % ALIGNMENT, 0);
    }

    #[test]
    fn modelfile_translates_chatml_and_lists_stops() {
        let s = ollama_modelfile(
            "wick-q4_k_m.gguf",
            Some(CHATML),
            &["<|endoftext|>".into(), "<|im_end|>".into()],
            Some(2048),
        );
        assert!(s.contains("FROM ./wick-q4_k_m.gguf\n"));
        assert!(s.contains("TEMPLATE \"\"\"{{- if .System }}<|im_start|>system"));
        assert!(s.contains("PARAMETER stop \"<|im_end|>\"\n"));
        assert!(s.contains("PARAMETER num_ctx 2048\n"));
        let s = ollama_modelfile(
            "/abs/m.gguf",
            Some("{{ bos_token }}{% for m in messages %}"),
            &[],
            None,
        );
        assert!(s.contains("FROM /abs/m.gguf") && !s.contains("TEMPLATE"));
    }
}
