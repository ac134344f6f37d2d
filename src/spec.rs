//! The job specification: the body of `POST /v1/fine_tuning/jobs` and of `wick train --spec`.
//!
//! One shape serves the API, the scheduler and the trainer, mirroring OpenAI's `method` object:
//! `{"type": "supervised", "supervised": {"hyperparameters": {...}}}`. OpenAI's own three
//! hyperparameters accept `"auto"`; ours sit beside them. Validation here is purely structural
//! (ranges, enums); whether the model and files exist is checked by the caller.

use serde::{Deserialize, Serialize};

/// A job as submitted. `training_file` / `validation_file` are file ids for the API and paths for
/// `wick train`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub model: String,
    /// Required unless `training_files` is given.
    #[serde(default)]
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub method: Method,
    /// OpenAI's legacy top-level hyperparameters (supervised only); folded into `method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Hyperparameters>,
    /// Accepted for OpenAI compatibility and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Several training files, sampled by weight (Wick's extension beside `training_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_files: Option<Vec<TrainingFile>>,
    /// Several validation files, each evaluated apart (`valid_loss/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_files: Option<Vec<ValidationFile>>,
    /// The order of the training data: short examples first, or weights that change by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curriculum: Option<Curriculum>,
    /// The kind of worker that may run the job: `gpu`, `cpu` or `any` (the default). A job
    /// waits in the queue until a worker with such a device claims it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRequest>,
}

/// Which workers may claim a job (`"device"`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    #[default]
    Any,
    Cpu,
    Gpu,
}

impl DeviceRequest {
    /// The kind of device the job needs; `None` for any.
    pub fn kind(self) -> Option<crate::devices::DeviceKind> {
        use crate::devices::DeviceKind;
        match self {
            DeviceRequest::Any => None,
            DeviceRequest::Cpu => Some(DeviceKind::Cpu),
            DeviceRequest::Gpu => Some(DeviceKind::Gpu),
        }
    }
}

/// One file of a mixture: `weight` is its share of the training tokens (weights are normalised;
/// give every file one or none, none meaning each file's own share of the tokens), `name` the
/// domain its metrics are reported under (default: the file reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainingFile {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl TrainingFile {
    /// The domain name: `name`, else the file reference.
    pub fn domain(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.file)
    }
}

/// One validation file, evaluated under its own `name` (default: the file reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationFile {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ValidationFile {
    /// The domain name: `name`, else the file reference.
    pub fn domain(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.file)
    }
}

/// The order the training data comes in: `{"type": "length"}` deals each file's examples (or
/// documents) short to long in its first epoch, shuffled after; `{"stages": [{"until_step": N,
/// "weights": {"web": 0.9, "code": 0.1}}, ...]}` changes the mixture's weights by step (a stage
/// applies up to and including its `until_step`; the last one also to the end of the run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Curriculum {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CurriculumType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<CurriculumStage>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CurriculumType {
    /// Short to long in the first epoch.
    Length,
    /// Weights by step (`stages`).
    Stages,
}

/// Mixture weights up to a step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CurriculumStage {
    pub until_step: u32,
    /// Weight per training file name; names left out get 0.
    pub weights: std::collections::BTreeMap<String, f64>,
}

impl Curriculum {
    /// Whether examples come short to long in the first epoch.
    pub fn by_length(&self) -> bool {
        self.kind == Some(CurriculumType::Length)
    }
}

/// What kind of training a job does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MethodType {
    #[default]
    Supervised,
    Pretrain,
    /// Preference tuning (DPO and its variants) on `{input, preferred_output,
    /// non_preferred_output}` pairs.
    Dpo,
}

impl MethodType {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodType::Supervised => "supervised",
            MethodType::Pretrain => "pretrain",
            MethodType::Dpo => "dpo",
        }
    }
}

/// Which preference loss a job optimises.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    #[default]
    Sigmoid,
    Ipo,
    Simpo,
    Orpo,
}

impl LossType {
    /// Whether the loss compares against a frozen reference model.
    pub fn needs_reference(self) -> bool {
        matches!(self, LossType::Sigmoid | LossType::Ipo)
    }

    /// β when the job says `"auto"` or nothing: TRL's defaults (DPO and IPO 0.1, SimPO 2.0, ORPO
    /// 0.1).
    pub fn default_beta(self) -> f64 {
        match self {
            LossType::Simpo => 2.0,
            _ => 0.1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LossType::Sigmoid => "sigmoid",
            LossType::Ipo => "ipo",
            LossType::Simpo => "simpo",
            LossType::Orpo => "orpo",
        }
    }
}

/// OpenAI's `method` object: the type and one sub-object named after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Method {
    #[serde(rename = "type")]
    pub kind: MethodType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised: Option<MethodParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<MethodParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<MethodParams>,
}

impl Method {
    /// The sub-object of the method's own type, when given.
    fn params(&self) -> Option<&MethodParams> {
        match self.kind {
            MethodType::Supervised => self.supervised.as_ref(),
            MethodType::Pretrain => self.pretrain.as_ref(),
            MethodType::Dpo => self.dpo.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MethodParams {
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
}

/// `"auto"` or a value, as OpenAI's `n_epochs`, `batch_size` and `learning_rate_multiplier` take.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(untagged)]
pub enum Auto<T> {
    #[default]
    #[serde(with = "auto_literal")]
    Auto,
    Value(T),
}

impl<T: Copy> Auto<T> {
    /// The value, or `default` when `"auto"`.
    pub fn or(self, default: T) -> T {
        match self {
            Auto::Auto => default,
            Auto::Value(v) => v,
        }
    }
}

mod auto_literal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = String::deserialize(d)?;
        if s == "auto" {
            Ok(())
        } else {
            Err(D::Error::custom("expected \"auto\" or a number"))
        }
    }
}

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// Arithmetic of a training step's matrix products.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 inputs to every projection's products (forward and backward) with f32 accumulation;
    /// f32 master weights, gradients, optimiser, norms, attention and loss. Where the processor
    /// has no bf16 dot products the job runs f32 and says so in its events.
    Bf16,
    /// f32 throughout, with a GPU's f32 matrix products on TF32 tensor cores (inputs rounded to
    /// 10 mantissa bits, f32 accumulation). On the CPU the same as `f32`.
    Tf32,
}

/// How a job extends the model's context: RoPE scaling written into the trained model's
/// `config.json` (the original context becomes `original_max_position_embeddings`, the new one
/// `max_position_embeddings` = original × factor), so transformers and Wick read it back alike.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RopeScalingSpec {
    /// `linear` (position interpolation), `yarn` or `llama3`; transformers' `rope_type`.
    #[serde(rename = "type", alias = "rope_type")]
    pub kind: RopeScalingType,
    /// How many times the original context the model is trained for (> 1).
    pub factor: f64,
    /// YaRN's ramp bounds (defaults 32 and 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_fast: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_slow: Option<f64>,
    /// Llama 3's band (defaults 1 and 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
}

/// The RoPE scaling types a job can ask for. Dynamic NTK is read from models that have it but
/// not offered for training: its frequencies change with each sequence's length, so a model
/// trained on full-length rows would see other positions at inference.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RopeScalingType {
    Linear,
    Yarn,
    Llama3,
}

/// What to do with an example longer than `max_seq_len`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overlength {
    #[default]
    Truncate,
    Drop,
}

/// LoRA settings; their presence means LoRA, their absence full fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    #[serde(default = "LoraSpec::default_r")]
    pub r: u32,
    #[serde(default = "LoraSpec::default_alpha")]
    pub alpha: f64,
    #[serde(default = "LoraSpec::default_dropout")]
    pub dropout: f64,
    #[serde(default = "LoraSpec::default_targets")]
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub use_rslora: bool,
    /// QLoRA: the frozen base's projections stored quantised (`"nf4"`, `"int8"`), dequantised on
    /// the fly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// With `quantization`: quantise the block statistics again (bitsandbytes' double quant).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub double_quant: bool,
}

/// How a QLoRA job stores its frozen base's projections.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// 4-bit NormalFloat, blocks of 64 (bitsandbytes' `nf4`).
    Nf4,
    /// 8-bit codes with one absmax per row (bitsandbytes' `int8_vectorwise_quant`).
    Int8,
}

/// The projections LoRA may wrap, by their Hugging Face names.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl LoraSpec {
    fn default_r() -> u32 {
        16
    }
    fn default_alpha() -> f64 {
        32.0
    }
    fn default_dropout() -> f64 {
        0.05
    }
    fn default_targets() -> Vec<String> {
        LORA_TARGETS.iter().map(|s| s.to_string()).collect()
    }
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            r: Self::default_r(),
            alpha: Self::default_alpha(),
            dropout: Self::default_dropout(),
            target_modules: Self::default_targets(),
            use_rslora: false,
            quantization: None,
            double_quant: false,
        }
    }
}

/// Every knob a job has. All optional: `None` means the documented default, resolved by the
/// trainer (`n_epochs` auto = 3, `batch_size` auto = 8, the learning rate by method and model
/// size: `train::hparams::auto_learning_rate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<Auto<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Auto<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_multiplier: Option<Auto<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scheduler: Option<LrScheduler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u32>,
    /// Floor of the schedule as a fraction of the peak learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_beta1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_beta2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<u32>,
    /// Caps the run at this many optimiser steps (otherwise epochs decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<bool>,
    /// Recompute each block's activations in backward instead of keeping them (less memory,
    /// about a third more compute per step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Extends the context past the model's: see [`RopeScalingSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScalingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlength: Option<Overlength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u32>,
    /// Prompts the model answers at each evaluation (a user message each for the chat methods, a
    /// text to continue for pretraining); default: the first `eval_samples` validation examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_prompts: Option<Vec<String>>,
    /// How many validation examples give sample prompts when `eval_prompts` is absent (default
    /// 3; 0: no samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<u32>,
    /// Tokens each sample answer may have (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_max_tokens: Option<u32>,
    /// Fraction of the training file held out for validation when no validation file is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_split: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_checkpoints: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<u32>,
    /// Vocabulary size of the byte-level BPE trained from scratch (pretraining a preset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
    /// DPO's β (OpenAI's name; `"auto"` is the loss type's default, see [`LossType`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<Auto<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_type: Option<LossType>,
    /// Weight of an NLL term on the preferred outputs (RPO; TRL's `rpo_alpha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_alpha: Option<f64>,
    /// SimPO's target reward margin γ (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simpo_gamma: Option<f64>,
}

/// A structural problem in a spec: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct SpecError {
    /// Dotted path of the field, e.g. `method.supervised.hyperparameters.learning_rate`.
    pub param: String,
    pub message: String,
}

impl JobSpec {
    /// The hyperparameters that apply: those inside `method`, else OpenAI's legacy top-level ones.
    pub fn hyperparameters(&self) -> Hyperparameters {
        match (self.method.params(), &self.hyperparameters) {
            (Some(p), _) => p.hyperparameters.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => Hyperparameters::default(),
        }
    }

    /// The dotted prefix under which this spec's hyperparameters live, for error `param`s.
    pub fn hyperparameters_path(&self) -> String {
        let kind = self.method.kind.as_str();
        if self.method.params().is_some() || self.hyperparameters.is_none() {
            format!("method.{kind}.hyperparameters")
        } else {
            "hyperparameters".to_string()
        }
    }

    /// Checks everything that can be checked without the store: names, ranges, combinations.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |param: &str, message: String| SpecError {
            param: param.to_string(),
            message,
        };
        if self.model.trim().is_empty() {
            return Err(err("model", "model must not be empty".into()));
        }
        self.validate_files()?;
        if let Some(s) = &self.suffix {
            let ok = !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(err(
                    "suffix",
                    "suffix must be 1 to 64 characters of letters, digits, '-' and '_'".into(),
                ));
            }
        }
        let kind = self.method.kind;
        for (other, set) in [
            (MethodType::Supervised, self.method.supervised.is_some()),
            (MethodType::Pretrain, self.method.pretrain.is_some()),
            (MethodType::Dpo, self.method.dpo.is_some()),
        ] {
            if set && other != kind {
                return Err(err(
                    &format!("method.{}", other.as_str()),
                    format!(
                        "method.type is {} but method.{} is set",
                        kind.as_str(),
                        other.as_str()
                    ),
                ));
            }
        }
        if kind != MethodType::Supervised && self.hyperparameters.is_some() {
            return Err(err(
                "hyperparameters",
                format!(
                    "top-level hyperparameters apply to supervised jobs only; use \
                     method.{k}.hyperparameters",
                    k = kind.as_str()
                ),
            ));
        }
        let prefix = self.hyperparameters_path();
        self.hyperparameters()
            .validate(self.method.kind)
            .map_err(|e| SpecError {
                param: format!("{prefix}.{}", e.param),
                message: e.message,
            })
    }
}

/// Names a domain may have: they become metric names (`valid_loss/<name>`).
fn valid_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl JobSpec {
    /// The training file references: `training_files`' in order, else `training_file`.
    pub fn training_file_refs(&self) -> Vec<&str> {
        match &self.training_files {
            Some(files) => files.iter().map(|f| f.file.as_str()).collect(),
            None => vec![self.training_file.as_str()],
        }
    }

    /// The validation file references: `validation_files`' in order, else `validation_file`.
    pub fn validation_file_refs(&self) -> Vec<&str> {
        match &self.validation_files {
            Some(files) => files.iter().map(|f| f.file.as_str()).collect(),
            None => self.validation_file.iter().map(String::as_str).collect(),
        }
    }

    /// Rewrites every file reference with `local` (ids to the local paths a worker fetched them
    /// to, relative paths to absolute ones), naming each of `training_files` and
    /// `validation_files` by its reference first, so metrics keep the names the user saw.
    pub fn localise_files(&mut self, mut local: impl FnMut(&str) -> String) {
        if !self.training_file.is_empty() {
            self.training_file = local(&self.training_file);
        }
        self.validation_file = self.validation_file.as_deref().map(&mut local);
        for f in self.training_files.iter_mut().flatten() {
            f.name = Some(f.domain().to_string());
            f.file = local(&f.file);
        }
        for f in self.validation_files.iter_mut().flatten() {
            f.name = Some(f.domain().to_string());
            f.file = local(&f.file);
        }
    }

    /// `training_file` or `training_files`, `validation_file` or `validation_files`, their
    /// names and weights, and the curriculum.
    fn validate_files(&self) -> Result<(), SpecError> {
        let err = |param: String, message: String| SpecError { param, message };
        let mixing = self.training_files.is_some()
            || self.validation_files.is_some()
            || self.curriculum.is_some();
        if mixing && self.method.kind == MethodType::Dpo {
            let param = if self.training_files.is_some() {
                "training_files"
            } else if self.validation_files.is_some() {
                "validation_files"
            } else {
                "curriculum"
            };
            return Err(err(
                param.into(),
                format!("{param} applies to pretrain and supervised jobs"),
            ));
        }
        match &self.training_files {
            None if self.training_file.trim().is_empty() => {
                return Err(err(
                    "training_file".into(),
                    "training_file must not be empty".into(),
                ));
            }
            None => {}
            Some(files) => {
                if files.is_empty() {
                    return Err(err(
                        "training_files".into(),
                        "training_files must name at least one file".into(),
                    ));
                }
                let weighted = files.iter().filter(|f| f.weight.is_some()).count();
                if weighted != 0 && weighted != files.len() {
                    return Err(err(
                        "training_files".into(),
                        "give every training file a weight, or none (each file's own share)".into(),
                    ));
                }
                let mut names = std::collections::HashSet::new();
                for (i, f) in files.iter().enumerate() {
                    if f.file.trim().is_empty() {
                        return Err(err(
                            format!("training_files[{i}].file"),
                            "file must not be empty".into(),
                        ));
                    }
                    if let Some(w) = f.weight
                        && !(w.is_finite() && w > 0.0)
                    {
                        return Err(err(
                            format!("training_files[{i}].weight"),
                            format!("weight must be greater than 0, got {w}"),
                        ));
                    }
                    if !valid_domain_name(f.domain()) {
                        return Err(err(
                            format!("training_files[{i}].name"),
                            "name must be 1 to 64 characters of letters, digits, '-', '_' and '.'"
                                .into(),
                        ));
                    }
                    if !names.insert(f.domain()) {
                        return Err(err(
                            format!("training_files[{i}].name"),
                            format!("two training files are named {:?}", f.domain()),
                        ));
                    }
                }
                if !self.training_file.is_empty()
                    && !files.iter().any(|f| f.file == self.training_file)
                {
                    return Err(err(
                        "training_file".into(),
                        "with training_files, training_file must be one of them (or left out)"
                            .into(),
                    ));
                }
            }
        }
        if let Some(files) = &self.validation_files {
            if self.validation_file.is_some() {
                return Err(err(
                    "validation_file".into(),
                    "give validation_file or validation_files, not both".into(),
                ));
            }
            if files.is_empty() {
                return Err(err(
                    "validation_files".into(),
                    "validation_files must name at least one file".into(),
                ));
            }
            let mut names = std::collections::HashSet::new();
            for (i, f) in files.iter().enumerate() {
                if f.file.trim().is_empty() {
                    return Err(err(
                        format!("validation_files[{i}].file"),
                        "file must not be empty".into(),
                    ));
                }
                if !valid_domain_name(f.domain()) {
                    return Err(err(
                        format!("validation_files[{i}].name"),
                        "name must be 1 to 64 characters of letters, digits, '-', '_' and '.'"
                            .into(),
                    ));
                }
                if !names.insert(f.domain()) {
                    return Err(err(
                        format!("validation_files[{i}].name"),
                        format!("two validation files are named {:?}", f.domain()),
                    ));
                }
            }
        }
        if let Some(c) = &self.curriculum {
            match (c.kind, &c.stages) {
                (Some(CurriculumType::Length), None) => {}
                (Some(CurriculumType::Length), Some(_)) => {
                    return Err(err(
                        "curriculum.stages".into(),
                        "stages go with curriculum type \"stages\", not \"length\"".into(),
                    ));
                }
                (None | Some(CurriculumType::Stages), None) => {
                    return Err(err(
                        "curriculum".into(),
                        "curriculum needs \"type\": \"length\" or \"stages\": [...]".into(),
                    ));
                }
                (None | Some(CurriculumType::Stages), Some(stages)) => {
                    self.validate_stages(stages)?
                }
            }
        }
        Ok(())
    }

    fn validate_stages(&self, stages: &[CurriculumStage]) -> Result<(), SpecError> {
        let err = |param: String, message: String| SpecError { param, message };
        let Some(files) = &self.training_files else {
            return Err(err(
                "curriculum.stages".into(),
                "stages weigh the named files of training_files".into(),
            ));
        };
        if stages.is_empty() {
            return Err(err(
                "curriculum.stages".into(),
                "stages must hold at least one stage".into(),
            ));
        }
        let mut last = 0;
        for (i, st) in stages.iter().enumerate() {
            if st.until_step == 0 || st.until_step <= last && i > 0 {
                return Err(err(
                    format!("curriculum.stages[{i}].until_step"),
                    "until_step must be at least 1 and grow from stage to stage".into(),
                ));
            }
            last = st.until_step;
            let mut positive = false;
            for (name, w) in &st.weights {
                if !files.iter().any(|f| f.domain() == name) {
                    return Err(err(
                        format!("curriculum.stages[{i}].weights.{name}"),
                        format!("no training file is named {name:?}"),
                    ));
                }
                if !(w.is_finite() && *w >= 0.0) {
                    return Err(err(
                        format!("curriculum.stages[{i}].weights.{name}"),
                        format!("a weight must be 0 or more, got {w}"),
                    ));
                }
                positive |= *w > 0.0;
            }
            if !positive {
                return Err(err(
                    format!("curriculum.stages[{i}].weights"),
                    "a stage must give some file a positive weight".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Hyperparameters {
    /// Range checks; `param` in the error is relative to the hyperparameters object.
    pub fn validate(&self, kind: MethodType) -> Result<(), SpecError> {
        fn int_range(name: &str, v: Option<u32>, lo: u32, hi: u32) -> Result<(), SpecError> {
            match v {
                Some(x) if x < lo || x > hi => Err(SpecError {
                    param: name.into(),
                    message: format!("{name} must be between {lo} and {hi}, got {x}"),
                }),
                _ => Ok(()),
            }
        }
        fn float_range(
            name: &str,
            v: Option<f64>,
            lo: f64,
            hi: f64,
            lo_open: bool,
        ) -> Result<(), SpecError> {
            match v {
                Some(x) if !x.is_finite() || x > hi || x < lo || (lo_open && x == lo) => {
                    Err(SpecError {
                        param: name.into(),
                        message: format!(
                            "{name} must be {} {lo} and at most {hi}, got {x}",
                            if lo_open { "greater than" } else { "at least" }
                        ),
                    })
                }
                _ => Ok(()),
            }
        }
        let auto = |a: Option<Auto<u32>>| match a {
            Some(Auto::Value(v)) => Some(v),
            _ => None,
        };
        int_range("n_epochs", auto(self.n_epochs), 1, 50)?;
        int_range("batch_size", auto(self.batch_size), 1, 1024)?;
        if let Some(Auto::Value(m)) = self.learning_rate_multiplier {
            float_range("learning_rate_multiplier", Some(m), 0.0, 100.0, true)?;
        }
        float_range("learning_rate", self.learning_rate, 0.0, 1.0, true)?;
        float_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0, false)?;
        int_range("warmup_steps", self.warmup_steps, 0, 1_000_000)?;
        float_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0, false)?;
        float_range("weight_decay", self.weight_decay, 0.0, 10.0, false)?;
        float_range("adam_beta1", self.adam_beta1, 0.0, 0.999_999, false)?;
        float_range("adam_beta2", self.adam_beta2, 0.0, 0.999_999_9, false)?;
        float_range("adam_epsilon", self.adam_epsilon, 0.0, 1.0, true)?;
        float_range("max_grad_norm", self.max_grad_norm, 0.0, 1e6, true)?;
        int_range(
            "gradient_accumulation_steps",
            self.gradient_accumulation_steps,
            1,
            1024,
        )?;
        int_range("max_seq_len", self.max_seq_len, 8, 131_072)?;
        int_range("max_steps", self.max_steps, 1, 100_000_000)?;
        int_range("eval_every", self.eval_every, 1, 100_000_000)?;
        int_range("eval_samples", self.eval_samples, 0, 64)?;
        int_range("eval_max_tokens", self.eval_max_tokens, 1, 4096)?;
        if let Some(p) = &self.eval_prompts {
            if p.len() > 64 {
                return Err(SpecError {
                    param: "eval_prompts".into(),
                    message: format!("at most 64 eval_prompts, got {}", p.len()),
                });
            }
            if let Some(i) = p.iter().position(|t| t.trim().is_empty()) {
                return Err(SpecError {
                    param: format!("eval_prompts[{i}]"),
                    message: "a prompt must not be empty".into(),
                });
            }
        }
        float_range("validation_split", self.validation_split, 0.0, 0.5, false)?;
        int_range("checkpoint_every", self.checkpoint_every, 1, 100_000_000)?;
        int_range("n_checkpoints", self.n_checkpoints, 1, 1000)?;
        int_range(
            "early_stopping_patience",
            self.early_stopping_patience,
            1,
            100_000,
        )?;
        int_range("vocab_size", self.vocab_size, 256, 262_144)?;
        if let Some(Auto::Value(b)) = self.beta {
            float_range("beta", Some(b), 0.0, 100.0, true)?;
        }
        float_range("rpo_alpha", self.rpo_alpha, 0.0, 100.0, false)?;
        float_range("simpo_gamma", self.simpo_gamma, 0.0, 100.0, false)?;
        if kind != MethodType::Dpo {
            let preference_only = [
                ("beta", self.beta.is_some()),
                ("loss_type", self.loss_type.is_some()),
                ("rpo_alpha", self.rpo_alpha.is_some()),
                ("simpo_gamma", self.simpo_gamma.is_some()),
            ];
            if let Some((name, _)) = preference_only.iter().find(|(_, set)| *set) {
                return Err(SpecError {
                    param: (*name).into(),
                    message: format!("{name} applies to dpo jobs only"),
                });
            }
        }
        if let Some(r) = &self.rope_scaling {
            float_range("rope_scaling.factor", Some(r.factor), 1.0, 1024.0, true)?;
            float_range("rope_scaling.beta_fast", r.beta_fast, 0.0, 1e4, true)?;
            float_range("rope_scaling.beta_slow", r.beta_slow, 0.0, 1e4, true)?;
            float_range(
                "rope_scaling.low_freq_factor",
                r.low_freq_factor,
                0.0,
                1e4,
                true,
            )?;
            float_range(
                "rope_scaling.high_freq_factor",
                r.high_freq_factor,
                0.0,
                1e4,
                true,
            )?;
            let (lo, hi) = (
                r.low_freq_factor.unwrap_or(1.0),
                r.high_freq_factor.unwrap_or(4.0),
            );
            if r.kind == RopeScalingType::Llama3 && lo >= hi {
                return Err(SpecError {
                    param: "rope_scaling.high_freq_factor".into(),
                    message: format!(
                        "high_freq_factor ({hi}) must be greater than low_freq_factor ({lo})"
                    ),
                });
            }
        }
        if self.simpo_gamma.is_some() && self.loss_type != Some(LossType::Simpo) {
            return Err(SpecError {
                param: "simpo_gamma".into(),
                message: "simpo_gamma applies to loss_type \"simpo\" only".into(),
            });
        }
        if self.vocab_size.is_some() && kind != MethodType::Pretrain {
            return Err(SpecError {
                param: "vocab_size".into(),
                message: "vocab_size applies to pretraining from scratch only".into(),
            });
        }
        if let Some(l) = &self.lora {
            int_range("lora.r", Some(l.r), 1, 1024)?;
            float_range("lora.alpha", Some(l.alpha), 0.0, 1e6, true)?;
            float_range("lora.dropout", Some(l.dropout), 0.0, 0.9, false)?;
            if l.double_quant && l.quantization != Some(Quantization::Nf4) {
                return Err(SpecError {
                    param: "lora.double_quant".into(),
                    message: "lora.double_quant applies with lora.quantization \"nf4\" only".into(),
                });
            }
            if l.target_modules.is_empty() {
                return Err(SpecError {
                    param: "lora.target_modules".into(),
                    message: "lora.target_modules must name at least one module".into(),
                });
            }
            for (i, t) in l.target_modules.iter().enumerate() {
                if !LORA_TARGETS.contains(&t.as_str()) {
                    return Err(SpecError {
                        param: format!("lora.target_modules[{i}]"),
                        message: format!(
                            "unknown target module {t:?}; expected one of {}",
                            LORA_TARGETS.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_parses_and_validates() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"model": "wick-llama-10m", "training_file": "file-abc", "validation_file": null, "suffix": "sums",
               "seed": 42,
               "method": {"type": "supervised", "supervised": {"hyperparameters": {
                 "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto",
                 "learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.02, "weight_decay": 0.01,
                 "max_grad_norm": 1.0, "gradient_accumulation_steps": 1, "max_seq_len": 1024, "packing": true,
                 "eval_every": 50, "n_checkpoints": 3, "early_stopping_patience": null,
                 "lora": {"r": 16, "alpha": 32, "dropout": 0.05,
                          "target_modules": ["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]}}}}}"#,
        )
        .unwrap();
        spec.validate().unwrap();
        let h = spec.hyperparameters();
        assert_eq!(h.n_epochs, Some(Auto::Value(3)));
        assert_eq!(h.batch_size, Some(Auto::Auto));
        assert_eq!(h.lora.unwrap().r, 16);
    }

    #[test]
    fn out_of_range_names_the_param() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"model":"m","training_file":"f","method":{"type":"pretrain","pretrain":{"hyperparameters":{"learning_rate":-1}}}}"#,
        )
        .unwrap();
        let e = spec.validate().unwrap_err();
        assert_eq!(e.param, "method.pretrain.hyperparameters.learning_rate");
    }

    #[test]
    fn legacy_top_level_hyperparameters_apply_to_supervised() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"model":"m","training_file":"f","hyperparameters":{"n_epochs":0}}"#,
        )
        .unwrap();
        assert_eq!(
            spec.validate().unwrap_err().param,
            "hyperparameters.n_epochs"
        );
    }

    #[test]
    fn unknown_lora_target_is_rejected() {
        let h = Hyperparameters {
            lora: Some(LoraSpec {
                target_modules: vec!["q_proj".into(), "lm_head".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            h.validate(MethodType::Supervised).unwrap_err().param,
            "lora.target_modules[1]"
        );
    }

    #[test]
    fn dpo_method_in_openai_shape() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"model":"m","training_file":"f","method":{"type":"dpo","dpo":{"hyperparameters":
               {"beta":"auto","n_epochs":2,"loss_type":"ipo","rpo_alpha":0.5}}}}"#,
        )
        .unwrap();
        spec.validate().unwrap();
        let h = spec.hyperparameters();
        assert_eq!(h.beta, Some(Auto::Auto));
        assert_eq!(h.loss_type, Some(LossType::Ipo));
        assert_eq!(spec.hyperparameters_path(), "method.dpo.hyperparameters");
    }

    #[test]
    fn preference_settings_belong_to_dpo_jobs() {
        let parse = |body: &str| serde_json::from_str::<JobSpec>(body).unwrap().validate();
        let e = parse(
            r#"{"model":"m","training_file":"f","method":{"type":"supervised","supervised":{"hyperparameters":{"beta":0.1}}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, "method.supervised.hyperparameters.beta");
        let e =
            parse(r#"{"model":"m","training_file":"f","method":{"type":"dpo","supervised":{}}}"#)
                .unwrap_err();
        assert_eq!(e.param, "method.supervised");
        let e = parse(
            r#"{"model":"m","training_file":"f","method":{"type":"dpo","dpo":{"hyperparameters":{"beta":0}}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, "method.dpo.hyperparameters.beta");
        let e = parse(
            r#"{"model":"m","training_file":"f","method":{"type":"dpo","dpo":{"hyperparameters":{"simpo_gamma":1}}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, "method.dpo.hyperparameters.simpo_gamma");
        let e = parse(
            r#"{"model":"m","training_file":"f","method":{"type":"dpo"},"hyperparameters":{}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, "hyperparameters");
    }
}
