//! The model configuration: the Llama family (Llama, Qwen2, Mistral) as described by a Hugging Face
//! `config.json`, plus Wick's named presets for pretraining from scratch.
//!
//! Reads both transformers 4 spellings (`rope_theta`, `rope_scaling`, `torch_dtype`) and
//! transformers 5 spellings (`rope_parameters: {rope_theta, rope_type, ...}`, `dtype`). Writes the
//! version 4 spelling, which both versions load.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Which Hugging Face architecture a config describes; decides biases and the exported names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
}

impl Architecture {
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
        }
    }

    /// The transformers class that loads this architecture.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
        }
    }
}

/// RoPE frequency scaling read from `rope_scaling` / `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// NTK-aware scaling of the base, applied once a sequence exceeds the original context.
    Dynamic { factor: f64 },
    /// YaRN: frequencies interpolated by `factor` below a ramp between the dimensions that turn
    /// `beta_slow` and `beta_fast` times over the original context, kept above it; cos and sin
    /// scaled by `attention_factor` (resolved when read: transformers' default `0.1·ln(factor) + 1`,
    /// or the `mscale` / `mscale_all_dim` ratio).
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// Llama 3.x wavelength-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Everything needed to build a model; the fields of a Hugging Face `config.json` that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Sliding-window attention (Mistral's `sliding_window`, Qwen2's with `use_sliding_window`),
    /// read from config.json; its keys stay in [`ModelConfig::extra`] and are written back as read.
    pub sliding_window: Option<SlidingWindow>,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama with `attention_bias`).
    pub o_bias: bool,
    /// Biases on gate/up/down (Llama with `mlp_bias`).
    pub mlp_bias: bool,
    pub initializer_range: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// Fields of the original config.json that Wick does not interpret, written back on export.
    pub extra: Map<String, Value>,
}

/// Which layers attend only to the last `size` positions (a query at `i` sees keys `j` with
/// `i − size < j ≤ i`, transformers' `sliding_window_overlay`).
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    pub size: usize,
    /// Per layer: whether it uses the window (the others attend to every earlier position).
    pub layers: Vec<bool>,
}

/// Why a config.json could not be turned into a [`ModelConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config.json: missing field {0}")]
    Missing(&'static str),
    #[error("config.json: {0}")]
    Invalid(String),
}

/// The named presets for pretraining from scratch, smallest first.
pub const PRESETS: &[&str] = &[
    "wick-llama-1m",
    "wick-llama-10m",
    "wick-llama-50m",
    "wick-llama-125m",
];

/// A preset by name: a Llama with tied embeddings sized for its nominal parameter count.
pub fn preset(name: &str) -> Option<ModelConfig> {
    // (vocab, hidden, intermediate, layers, heads, kv heads, context)
    let (v, h, i, l, nh, nkv, ctx) = match name {
        "wick-llama-1m" => (4096, 128, 384, 2, 4, 4, 1024),
        "wick-llama-10m" => (8192, 256, 768, 10, 8, 4, 2048),
        "wick-llama-50m" => (16384, 512, 1536, 13, 8, 4, 2048),
        "wick-llama-125m" => (32768, 768, 2048, 14, 12, 12, 2048),
        _ => return None,
    };
    Some(ModelConfig::llama(v, h, i, l, nh, nkv, ctx))
}

/// The role of a parameter tensor, for weight decay and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Embedding,
    Linear,
    Bias,
    Norm,
}

impl ParamKind {
    /// Decoupled weight decay applies to matrices only, never to norms or biases.
    pub fn decays(self) -> bool {
        matches!(self, ParamKind::Embedding | ParamKind::Linear)
    }
}

impl ModelConfig {
    /// A plain Llama configuration with Hugging Face defaults for everything not given.
    pub fn llama(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        max_position_embeddings: usize,
    ) -> Self {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads,
            max_position_embeddings,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            sliding_window: None,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            extra: Map::new(),
        }
    }

    /// Parses a Hugging Face config.json (transformers 4 or 5 spelling).
    pub fn from_hf_json(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text)?;
        Self::from_hf_value(v)
    }

    /// As [`ModelConfig::from_hf_json`], from parsed JSON.
    pub fn from_hf_value(v: Value) -> Result<Self, ConfigError> {
        let Value::Object(mut m) = v else {
            return Err(ConfigError::Invalid("expected a JSON object".into()));
        };
        let architecture = match m.get("model_type").and_then(Value::as_str) {
            Some("llama") | None => Architecture::Llama,
            Some("qwen2") => Architecture::Qwen2,
            Some("mistral") => Architecture::Mistral,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "model_type {other:?} is not supported; expected llama, qwen2 or mistral"
                )));
            }
        };
        let mut take = |k: &str| m.remove(k);
        fn usize_of(v: Option<Value>, name: &'static str) -> Result<usize, ConfigError> {
            match v {
                None | Some(Value::Null) => Err(ConfigError::Missing(name)),
                Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                    ConfigError::Invalid(format!("{name} must be a non-negative integer"))
                }),
            }
        }
        fn f64_of(v: Option<Value>) -> Option<f64> {
            v.and_then(|v| v.as_f64())
        }
        fn token_of(v: Option<Value>) -> Option<u32> {
            match v? {
                Value::Number(n) => n.as_u64().map(|x| x as u32),
                // Some configs list several EOS ids; the first is the canonical one.
                Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
                _ => None,
            }
        }
        let vocab_size = usize_of(take("vocab_size"), "vocab_size")?;
        let hidden_size = usize_of(take("hidden_size"), "hidden_size")?;
        let intermediate_size = usize_of(take("intermediate_size"), "intermediate_size")?;
        let num_hidden_layers = usize_of(take("num_hidden_layers"), "num_hidden_layers")?;
        let num_attention_heads = usize_of(take("num_attention_heads"), "num_attention_heads")?;
        let num_key_value_heads = match take("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            v => usize_of(v, "num_key_value_heads")?,
        };
        let head_dim = match take("head_dim") {
            None | Some(Value::Null) => hidden_size / num_attention_heads.max(1),
            v => usize_of(v, "head_dim")?,
        };
        let max_position_embeddings = match take("max_position_embeddings") {
            None | Some(Value::Null) => 2048,
            v => usize_of(v, "max_position_embeddings")?,
        };
        let rms_norm_eps = f64_of(take("rms_norm_eps")).unwrap_or(1e-6);
        // transformers 5 folds theta and scaling into `rope_parameters`.
        let rope_parameters = take("rope_parameters");
        let rope_scaling_v4 = take("rope_scaling");
        let theta_v4 = f64_of(take("rope_theta"));
        let theta_v5 = rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64);
        let rope_theta = theta_v4.or(theta_v5).unwrap_or(10_000.0);
        let scaling_value = match rope_scaling_v4 {
            Some(Value::Object(o)) => Some(o),
            _ => match rope_parameters {
                Some(Value::Object(o)) => Some(o),
                _ => None,
            },
        };
        let rope_scaling = scaling_value
            .map(|o| parse_rope_scaling(&o, max_position_embeddings))
            .transpose()?
            .flatten();
        let default_tie = false;
        let tie_word_embeddings = take("tie_word_embeddings")
            .and_then(|v| v.as_bool())
            .unwrap_or(default_tie);
        let attention_bias = take("attention_bias")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mlp_bias = take("mlp_bias").and_then(|v| v.as_bool()).unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let initializer_range = f64_of(take("initializer_range")).unwrap_or(0.02);
        let bos_token_id = token_of(take("bos_token_id"));
        let eos_token_id = token_of(take("eos_token_id"));
        let pad_token_id = token_of(take("pad_token_id"));
        if m.get("hidden_act")
            .and_then(Value::as_str)
            .is_some_and(|a| a != "silu")
        {
            return Err(ConfigError::Invalid(
                "only hidden_act \"silu\" (SwiGLU) is supported".into(),
            ));
        }
        // Keys Wick writes itself on export; everything else is kept as it was.
        for k in [
            "model_type",
            "architectures",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "hidden_act",
            "use_cache",
        ] {
            m.remove(k);
        }
        let sliding_window = sliding_window_of(&m, architecture, num_hidden_layers)?;
        let cfg = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            sliding_window,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            initializer_range,
            bos_token_id,
            eos_token_id,
            pad_token_id,
            extra: m,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Internal consistency: head counts divide, dimensions are positive and even where RoPE needs it.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("attention head counts must be positive".into());
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim must be positive and even, got {}",
                self.head_dim
            ));
        }
        Ok(())
    }

    /// The config.json transformers loads with the matching `*ForCausalLM` class.
    pub fn to_hf_json(&self) -> Value {
        let mut m = self.extra.clone();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("architectures", json!([self.architecture.class_name()]));
        put("model_type", json!(self.architecture.model_type()));
        put("vocab_size", json!(self.vocab_size));
        put("hidden_size", json!(self.hidden_size));
        put("intermediate_size", json!(self.intermediate_size));
        put("num_hidden_layers", json!(self.num_hidden_layers));
        put("num_attention_heads", json!(self.num_attention_heads));
        put("num_key_value_heads", json!(self.num_key_value_heads));
        put("head_dim", json!(self.head_dim));
        put(
            "max_position_embeddings",
            json!(self.max_position_embeddings),
        );
        put("rms_norm_eps", json!(self.rms_norm_eps));
        put("rope_theta", json!(self.rope_theta));
        put(
            "rope_scaling",
            self.rope_scaling
                .as_ref()
                .map(RopeScaling::to_hf_json)
                .unwrap_or(Value::Null),
        );
        put("tie_word_embeddings", json!(self.tie_word_embeddings));
        put("hidden_act", json!("silu"));
        put("initializer_range", json!(self.initializer_range));
        put("torch_dtype", json!("float32"));
        put("use_cache", json!(true));
        match self.architecture {
            Architecture::Qwen2 => {}
            _ => {
                put("attention_bias", json!(self.qkv_bias));
                put("mlp_bias", json!(self.mlp_bias));
            }
        }
        put("bos_token_id", json!(self.bos_token_id));
        put("eos_token_id", json!(self.eos_token_id));
        put("pad_token_id", json!(self.pad_token_id));
        Value::Object(m)
    }

    /// Every parameter tensor by its Hugging Face name, with its shape and role, in a fixed order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>, ParamKind)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let (q_out, kv_out) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
            ParamKind::Embedding,
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |name: &str, o: usize, n: usize, bias: bool| {
                out.push((format!("{p}.{name}.weight"), vec![o, n], ParamKind::Linear));
                if bias {
                    out.push((format!("{p}.{name}.bias"), vec![o], ParamKind::Bias));
                }
            };
            lin("self_attn.q_proj", q_out, h, self.qkv_bias);
            lin("self_attn.k_proj", kv_out, h, self.qkv_bias);
            lin("self_attn.v_proj", kv_out, h, self.qkv_bias);
            lin("self_attn.o_proj", h, q_out, self.o_bias);
            lin("mlp.gate_proj", i, h, self.mlp_bias);
            lin("mlp.up_proj", i, h, self.mlp_bias);
            lin("mlp.down_proj", h, i, self.mlp_bias);
            out.push((
                format!("{p}.input_layernorm.weight"),
                vec![h],
                ParamKind::Norm,
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                ParamKind::Norm,
            ));
        }
        out.push(("model.norm.weight".to_string(), vec![h], ParamKind::Norm));
        if !self.tie_word_embeddings {
            out.push((
                "lm_head.weight".to_string(),
                vec![self.vocab_size, h],
                ParamKind::Linear,
            ));
        }
        out
    }

    /// The number of trainable parameters (a tied LM head counts once).
    pub fn num_parameters(&self) -> u64 {
        self.parameter_shapes()
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// The N of the 6·N·D FLOP estimate: parameters that take part in a matmul. The embedding lookup
    /// costs nothing, but the LM head is a matmul even when tied to it.
    pub fn num_matmul_parameters(&self) -> u64 {
        let emb = (self.vocab_size * self.hidden_size) as u64;
        let n = self.num_parameters();
        if self.tie_word_embeddings { n } else { n - emb }
    }
}

impl RopeScaling {
    fn to_hf_json(&self) -> Value {
        match self {
            RopeScaling::Linear { factor } => {
                json!({"rope_type": "linear", "type": "linear", "factor": factor})
            }
            RopeScaling::Dynamic { factor } => {
                json!({"rope_type": "dynamic", "type": "dynamic", "factor": factor})
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                json!({"rope_type": "yarn", "type": "yarn", "factor": factor,
                       "original_max_position_embeddings": original_max_position_embeddings,
                       "beta_fast": beta_fast, "beta_slow": beta_slow,
                       "attention_factor": attention_factor, "truncate": truncate})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                       "high_freq_factor": high_freq_factor,
                       "original_max_position_embeddings": original_max_position_embeddings})
            }
        }
    }
}

/// The sliding window of a config.json, as transformers 5 decides it: Mistral windows every layer
/// when `sliding_window` is set; Qwen2 only with `use_sliding_window`, from layer
/// `max_window_layers` (default 28) on; an explicit `layer_types` list names the
/// `"sliding_attention"` layers. Llama has none.
fn sliding_window_of(
    m: &Map<String, Value>,
    architecture: Architecture,
    layers: usize,
) -> Result<Option<SlidingWindow>, ConfigError> {
    let size = match m.get("sliding_window") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n as usize,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "sliding_window must be a positive integer or null, got {v}"
                )));
            }
        },
    };
    let windowed: Vec<bool> = match architecture {
        Architecture::Llama => return Ok(None),
        Architecture::Mistral => vec![true; layers],
        Architecture::Qwen2 => {
            if !m
                .get("use_sliding_window")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                return Ok(None);
            }
            let from = m
                .get("max_window_layers")
                .and_then(Value::as_u64)
                .unwrap_or(28) as usize;
            (0..layers).map(|i| i >= from).collect()
        }
    };
    let windowed = match m.get("layer_types").and_then(Value::as_array) {
        Some(types) if types.len() == layers => types
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect(),
        _ => windowed,
    };
    Ok(windowed.iter().any(|&w| w).then_some(SlidingWindow {
        size,
        layers: windowed,
    }))
}

impl ModelConfig {
    /// The window of layer `i`, if it has one.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        self.sliding_window
            .as_ref()
            .filter(|w| w.layers.get(i).copied().unwrap_or(false))
            .map(|w| w.size)
    }
}

fn parse_rope_scaling(
    o: &Map<String, Value>,
    max_position_embeddings: usize,
) -> Result<Option<RopeScaling>, ConfigError> {
    let kind = o
        .get("rope_type")
        .or_else(|| o.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str| o.get(k).and_then(Value::as_f64);
    let factor = || f("factor").ok_or(ConfigError::Missing("rope_scaling.factor"));
    // transformers defaults the original context to `max_position_embeddings`.
    let original = f("original_max_position_embeddings")
        .map(|v| v as usize)
        .unwrap_or(max_position_embeddings);
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "dynamic" => Some(RopeScaling::Dynamic { factor: factor()? }),
        "yarn" => {
            let factor = factor()?;
            // transformers' `yarn_get_mscale`.
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match (f("attention_factor"), f("mscale"), f("mscale_all_dim")) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    mscale(factor, m) / mscale(factor, all)
                }
                _ => mscale(factor, 1.0),
            };
            // `beta_fast or 32`, `beta_slow or 1`: transformers treats 0 as unset too.
            let beta = |k: &str, d: f64| f(k).filter(|&v| v != 0.0).unwrap_or(d);
            Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: beta("beta_fast", 32.0),
                beta_slow: beta("beta_slow", 1.0),
                attention_factor,
                truncate: o.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            })
        }
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: original,
        }),
        other => {
            return Err(ConfigError::Invalid(format!(
                "rope scaling type {other:?} is not supported; expected linear, dynamic, yarn or llama3"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_near_their_nominal_size() {
        // The suffix names the nominal size; allow 15% either way.
        for (name, nominal) in PRESETS.iter().zip([1e6, 10e6, 50e6, 125e6]) {
            let n = preset(name).unwrap().num_parameters() as f64;
            assert!((n / nominal - 1.0).abs() < 0.15, "{name}: {n} parameters");
        }
        assert!(preset("wick-llama-7b").is_none());
    }

    #[test]
    fn parameter_count_matches_hand_count() {
        // vocab 64, hidden 32, inter 64, 2 layers, 4 heads, 2 kv heads (head_dim 8), untied:
        // embed 2048; per layer q 1024 + k 512 + v 512 + o 1024 + mlp 3*2048 + norms 64 = 9280;
        // final norm 32; lm_head 2048. Total 2048 + 2*9280 + 32 + 2048 = 22688.
        let mut c = ModelConfig::llama(64, 32, 64, 2, 4, 2, 128);
        c.tie_word_embeddings = false;
        assert_eq!(c.num_parameters(), 22_688);
        // Qwen2 adds q/k/v biases: (32 + 16 + 16) per layer.
        c.architecture = Architecture::Qwen2;
        c.qkv_bias = true;
        assert_eq!(c.num_parameters(), 22_688 + 2 * 64);
    }

    #[test]
    fn reads_transformers_4_and_5_spellings() {
        let v4 = r#"{"model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":64,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rope_theta":500000.0,"rope_scaling":{"type":"linear","factor":2.0},"torch_dtype":"float32"}"#;
        let v5 = r#"{"model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":64,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rope_parameters":{"rope_theta":500000.0,"rope_type":"linear","factor":2.0},"dtype":"float32"}"#;
        let a = ModelConfig::from_hf_json(v4).unwrap();
        let b = ModelConfig::from_hf_json(v5).unwrap();
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        assert_eq!(a, b);
        let round = ModelConfig::from_hf_value(a.to_hf_json()).unwrap();
        assert_eq!(round, a);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_rejects_unknown_types() {
        let q = r#"{"model_type":"qwen2","vocab_size":64,"hidden_size":32,"intermediate_size":64,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true}"#;
        let c = ModelConfig::from_hf_json(q).unwrap();
        assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
        let bad = q.replace("qwen2", "gpt2");
        assert!(
            ModelConfig::from_hf_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("gpt2")
        );
        let gqa_bad = q.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        assert!(ModelConfig::from_hf_json(&gqa_bad).is_err());
    }
}
