//! The Llama-family decoder (Llama, Qwen2, Mistral) in one file, nanoGPT style: token embedding,
//! pre-norm blocks of causal grouped-query attention with RoPE and a SwiGLU MLP, final RMSNorm,
//! tied or separate LM head. Every op used here has a backward pass (candle's own fast
//! `rms_norm`, `softmax_last_dim` and `rope` kernels do not, `docs/candle-notes.md`): on the CPU
//! the attention block, RMSNorm and SwiGLU are Wick's fused ops with backward
//! ([`super::attention`], [`super::rms_norm`], [`super::swiglu`]); elsewhere, and for the KV-cached
//! inference path, composite candle ops.
//!
//! Tensor names follow Hugging Face exactly (`model.layers.0.self_attn.q_proj.weight`), so the
//! same `VarBuilder` reads a transformers checkpoint and the weights export unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{AttnMask, AttnShape, RopeRows, attention};
use super::bf16_linear::{bf16_linear, cast_linear, cast_usable, usable as bf16_usable};
use super::checkpoint::{GradSideStore, checkpointed, detached};
use super::config::ModelConfig;
use super::lora_delta::FrozenWeight;
use super::ops::{causal_softmax, cuda_kernels_on, fused_available};
use super::quantized::QuantWeight;
use super::rms_norm::rms_norm;
use super::rope::{Rope, apply_rotary, rotary};
use super::swiglu::swiglu;

/// What every layer's attention needs besides its input, computed once per forward: the fused
/// op's rotation and mask on the CPU, else the composite ops' cos/sin tensors and additive mask.
#[derive(Clone)]
pub enum AttnInputs {
    Fused {
        rope: Arc<RopeRows>,
        mask: AttnMask,
    },
    Composite {
        cos: Tensor,
        sin: Tensor,
        mask: Option<Tensor>,
    },
}

impl AttnInputs {
    /// The fused path where [`fused_available`] and the mask is (1 or B, 1, T, T); else the
    /// composite one.
    fn new(
        rope: &Rope,
        positions: &Tensor,
        mask: Option<&Tensor>,
        like: &Tensor,
        (b, t): (usize, usize),
    ) -> Result<Self> {
        if fused_available(like) {
            let fused_mask = match mask {
                None => Some(AttnMask::Causal),
                Some(m) => match m.dims() {
                    &[rows, 1, mt, mt2] if (rows == 1 || rows == b) && mt == t && mt2 == t => {
                        Some(AttnMask::Additive {
                            values: Arc::new(
                                m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                            ),
                            rows,
                        })
                    }
                    _ => None,
                },
            };
            if let Some(mask) = fused_mask {
                return Ok(AttnInputs::Fused {
                    rope: Arc::new(rope.rows(positions)?),
                    mask,
                });
            }
        }
        let (cos, sin) = rope.cos_sin(positions)?;
        Ok(AttnInputs::Composite {
            cos,
            sin,
            mask: mask.cloned(),
        })
    }
}

/// `y = x W^T + b`, with the input flattened to 2-D so the matmul is one GEMM.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,       // (out, in)
    bias: Option<Tensor>, // (out)
    lora: Option<super::lora::LoraAdapter>,
    /// Products with bf16 inputs ([`super::bf16_linear`]) where the processor has them.
    bf16: bool,
    /// The frozen weight stored quantised (QLoRA's base, [`Linear::set_quantized`]); `weight` is
    /// then an empty placeholder.
    quant: Option<Arc<QuantWeight>>,
}

impl Linear {
    /// Loads `{vb}.weight` (out, in) and, when `bias`, `{vb}.bias` (out).
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora: None,
            bf16: false,
            quant: None,
        })
    }
}

/// `x · wᵀ` for `x` (rows, in) and `w` (out, in). A frozen `w` (a plain tensor, as LoRA's base
/// weights are) goes through [`super::frozen::frozen_matmul`], so backward skips its gradient.
/// `bf16`: bf16 products with f32 accumulation, forward and backward, where [`bf16_usable`].
fn project(x: &Tensor, w: &Tensor, bf16: bool) -> Result<Tensor> {
    if bf16 && bf16_usable(x) && w.dtype() == x.dtype() {
        bf16_linear(x, w)
    } else if bf16 && cast_usable(x) && w.dtype() == x.dtype() {
        cast_linear(x, w) // a GPU: cuBLAS bf16 products
    } else if let Some(y) = super::few_rows::few_rows_matmul(x, w)? {
        Ok(y) // decoding: a token or a few
    } else if w.track_op() {
        x.matmul(&w.t()?)
    } else {
        super::frozen::frozen_matmul(x, w)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?; // (rows, in)
        // An adapter on a frozen f32 or quantised weight: base product and adapter as one op
        // (training's case); decoding's few rows and the bf16 products keep their own paths.
        let many_rows = rows > super::few_rows::FEW_ROWS;
        let fused = match (&self.lora, &self.quant) {
            (Some(adapter), None)
                if many_rows && !(self.bf16 && (bf16_usable(&x2) || cast_usable(&x2))) =>
            {
                adapter.forward_with_base(&x2, FrozenWeight::Dense(&self.weight))?
            }
            (Some(adapter), Some(q)) if many_rows => {
                adapter.forward_with_base(&x2, FrozenWeight::Quantized(q))?
            }
            _ => None,
        };
        let is_fused = fused.is_some();
        let y = match (fused, &self.quant) {
            (Some(y), _) => y,
            (None, Some(q)) if x2.device().is_cpu() && x2.dtype() == DType::F32 => {
                super::quantized_linear::quantized_linear(&x2, q)?
            }
            (None, Some(_)) => candle_core::bail!("quantised projections run on the CPU in f32"),
            (None, None) => project(&x2, &self.weight, self.bf16)?, // (rows, out)
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let y = match &self.lora {
            Some(adapter) if !is_fused => (y + adapter.forward(&x2)?)?,
            _ => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty shape") = self.out_dim()?;
        y.reshape(out_dims)
    }
}

/// Root-mean-square norm, `x / sqrt(mean(x^2) + eps) * w`: the fused op with its backward on the
/// CPU ([`rms_norm`]), else written out in composite ops so that it has a gradient.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor, // (C)
    eps: f64,
}

impl RmsNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if (fused_available(x) || cuda_kernels_on(x)) && x.dtype() == self.weight.dtype() {
            return rms_norm(x, &self.weight, self.eps);
        }
        let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?; // (B, T, 1)
        x.broadcast_mul(&inv_rms)?.broadcast_mul(&self.weight)
    }
}

/// Causal self-attention with grouped-query heads.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Attention {
            q_proj: Linear::load(vb.pp("q_proj"), h, nh * hd, cfg.qkv_bias)?,
            k_proj: Linear::load(vb.pp("k_proj"), h, nkv * hd, cfg.qkv_bias)?,
            v_proj: Linear::load(vb.pp("v_proj"), h, nkv * hd, cfg.qkv_bias)?,
            o_proj: Linear::load(vb.pp("o_proj"), nh * hd, h, cfg.o_bias)?,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// `x` (B, T, C). On the fused path one op ([`attention`]) takes the three projections to
    /// the heads' outputs; the composite path takes cos/sin (B, 1, T, hd) and a `mask` additive
    /// and broadcastable to (B, H, T, T), `None` being plain causal attention.
    pub fn forward(&self, x: &Tensor, inputs: &AttnInputs) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (cos, sin, mask) = match inputs {
            AttnInputs::Fused { rope, mask } => {
                let y = attention(
                    &self.q_proj.forward(x)?,
                    &self.k_proj.forward(x)?,
                    &self.v_proj.forward(x)?,
                    AttnShape {
                        batch: b,
                        seq: t,
                        heads: self.n_heads,
                        kv_heads: self.n_kv_heads,
                        head_dim: self.head_dim,
                        rope: rope.clone(),
                        mask: mask.clone(),
                    },
                )?; // (B, T, H*hd)
                return self.o_proj.forward(&y);
            }
            AttnInputs::Composite { cos, sin, mask } => (cos, sin, mask.as_ref()),
        };
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous() // (B, n, T, hd)
        };
        let q = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv_heads)?;
        let one_op = (cuda_kernels_on(&q) || fused_available(&q))
            && q.dtype() == cos.dtype()
            && cos.dim(0)? == b;
        let (q, k) = if one_op {
            (rotary(&q, cos, sin)?, rotary(&k, cos, sin)?)
        } else {
            (apply_rotary(&q, cos, sin)?, apply_rotary(&k, cos, sin)?)
        };
        let k = repeat_kv(&k, self.n_heads / self.n_kv_heads)?; // (B, H, T, hd)
        let v = repeat_kv(&v, self.n_heads / self.n_kv_heads)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = q.matmul(&k.t()?)?; // (B, H, T, T)
        let probs = match mask {
            None if fused_available(&scores) || cuda_kernels_on(&scores) => {
                causal_softmax(&scores, scale)?
            }
            None => {
                let causal = causal_mask(t, scores.dtype(), scores.device())?;
                candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&causal)?, D::Minus1)?
            }
            Some(m) => candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(m)?, D::Minus1)?,
        };
        let y = probs.matmul(&v)?; // (B, H, T, hd)
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, self.n_heads * self.head_dim))?; // (B, T, H*hd)
        self.o_proj.forward(&y)
    }
}

/// Repeats each key/value head `n_rep` times along the head axis: (B, kv, T, hd) -> (B, kv*n_rep, T, hd).
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, nkv, t, hd) = x.dims4()?;
    // cat along a new axis after the kv head keeps each group's copies adjacent, as transformers does.
    Tensor::cat(&vec![x; n_rep], 2)?.reshape((b, nkv * n_rep, t, hd))
}

/// The SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::load(vb.pp("gate_proj"), h, i, bias)?,
            up_proj: Linear::load(vb.pp("up_proj"), h, i, bias)?,
            down_proj: Linear::load(vb.pp("down_proj"), i, h, bias)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?; // (B, T, I)
        let up = self.up_proj.forward(x)?;
        let h = if fused_available(&gate) {
            swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        self.down_proj.forward(&h)
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Ok(Block {
            input_layernorm: RmsNorm::load(
                vb.pp("input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// The block's seven projections, in [`projection_paths`]' order.
    fn linears(&self) -> [&Linear; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
    }

    /// The mask generator of the block's LoRA adapters, if any have one.
    pub(crate) fn lora_runtime(&self) -> Option<Arc<super::lora::LoraRuntime>> {
        self.linears()
            .into_iter()
            .find_map(|p| p.lora.as_ref().map(|ad| ad.runtime().clone()))
    }

    /// [`Block::forward`] keeping only `x` for backward, which reruns the block
    /// ([`super::checkpoint`]) with the LoRA dropout masks this forward drew.
    fn forward_checkpointed(
        &self,
        x: &Tensor,
        inputs: &AttnInputs,
        store: &Arc<GradSideStore>,
    ) -> Result<Tensor> {
        let replay = self.lora_runtime().map(|rt| {
            let before = rt.rng_state();
            (rt, before)
        });
        let y = self.forward(&x.detach(), inputs)?;
        let (block, inputs) = (self.clone(), inputs.clone());
        let recompute = move |x: &Tensor| match &replay {
            Some((rt, before)) => {
                let after = rt.set_rng_state(before.clone());
                let y = block.forward(x, &inputs);
                rt.set_rng_state(after);
                y
            }
            None => block.forward(x, &inputs),
        };
        checkpointed(x, y, Box::new(recompute), store)
    }

    pub fn forward(&self, x: &Tensor, inputs: &AttnInputs) -> Result<Tensor> {
        let x = (x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, inputs)?)?;
        &x + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?
    }
}

/// A Llama-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor, // (V, C)
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>, // None when tied to the embedding
    rope: Rope,
    cfg: ModelConfig,
    /// Set when blocks recompute their activations in backward ([`Llama::set_gradient_checkpointing`]).
    checkpoint: Option<Arc<GradSideStore>>,
    /// The tied LM head's products in bf16 ([`Llama::set_bf16`]).
    bf16: bool,
}

impl Llama {
    /// Builds the model from `vb` (Hugging Face names, rooted at the checkpoint's top level).
    /// RoPE tables cover `cfg.max_position_embeddings` positions.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Self::load_with_context(vb, cfg, cfg.max_position_embeddings)
    }

    /// As [`Llama::load`], with RoPE tables for only `max_len` positions (saves memory on models
    /// with very long contexts trained on short rows).
    pub fn load_with_context(vb: VarBuilder, cfg: &ModelConfig, max_len: usize) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(m.pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(m.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::load(
                vb.pp("lm_head"),
                cfg.hidden_size,
                cfg.vocab_size,
                false,
            )?)
        };
        let rope = Rope::new(cfg, max_len, embed_tokens.dtype(), embed_tokens.device())?;
        Ok(Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            cfg: cfg.clone(),
            checkpoint: None,
            bf16: false,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Activation recompute per block on the CPU ([`super::checkpoint`]): training forwards keep
    /// only the blocks' inputs. Gradients must then come from [`Llama::backward`].
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpoint = on.then(|| Arc::new(GradSideStore::default()));
    }

    /// The mixed-precision mode: every projection and the LM head multiply in bf16 with f32
    /// accumulation, forward and backward ([`super::bf16_linear`]); weights, gradients, norms,
    /// attention, the loss and the optimiser stay f32. Returns whether it took effect: on a GPU
    /// (cuBLAS bf16 products, [`super::bf16_linear::cast_linear`]), and on the CPU only where the
    /// processor has bf16 dot products ([`super::bf16_gemm::available`]).
    pub fn set_bf16(&mut self, on: bool) -> bool {
        let on = on && (!self.device().is_cpu() || super::bf16_gemm::available());
        self.bf16 = on;
        if let Some(head) = self.lm_head.as_mut() {
            head.bf16 = on;
        }
        for (_, p) in self.projections_mut() {
            p.bf16 = on;
        }
        on
    }

    /// Whether the products run in bf16 ([`Llama::set_bf16`] took effect).
    pub fn bf16(&self) -> bool {
        self.bf16
    }

    pub fn gradient_checkpointing(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// The gradients of `loss`, a scalar computed from this model's [`Llama::forward`]: candle's
    /// backward plus, under gradient checkpointing, the recomputed blocks' parameter gradients.
    /// The gradients come detached ([`super::checkpoint::detached`]): they hold no activations.
    pub fn backward(&self, loss: &Tensor) -> Result<candle_core::backprop::GradStore> {
        let mut grads = detached(loss.backward()?);
        if let Some(more) = self.checkpoint.as_ref().and_then(|store| store.take()) {
            grads.extend(more)?;
        }
        Ok(grads)
    }

    /// Logits (B, T, V) for `input_ids` (B, T) at `positions` (B, T), both u32. `mask` is additive
    /// (0 or -inf) and broadcastable to (B, H, T, T); `None` means plain causal attention. Packed
    /// SFT rows pass positions restarting per example and a block-diagonal causal mask.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.head(&self.forward_hidden(input_ids, positions, mask)?)
    }

    /// The embeddings of `ids` (any shape) in the model's compute dtype (its norms'): a bf16
    /// table (a QLoRA base's) is widened row by row.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?;
        let dims: Vec<usize> = ids.dims().iter().copied().chain([rows.dim(1)?]).collect();
        rows.to_dtype(self.norm.weight.dtype())?.reshape(dims)
    }

    /// The LM head over final hidden states (B, T, C): logits (B, T, V). A head kept in bf16 (a
    /// QLoRA base's) is multiplied a block at a time, without a gradient: training takes its loss
    /// through [`Llama::frozen_head`].
    pub fn head(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        self.head_rows(&x.reshape((b * t, c))?, |x, w| project(x, w, self.bf16))?
            .reshape((b, t, ())) // (B, T, V)
    }

    /// Logits (rows, V) of final hidden rows `x` (rows, C): an untied head in `x`'s dtype runs as
    /// its projection, a head kept in bf16 is widened block by block ([`super::head_loss`]), and
    /// any other (the tied embeddings) goes through `product(x, w)`.
    fn head_rows(
        &self,
        x: &Tensor,
        product: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let w = match &self.lm_head {
            Some(head) if head.weight.dtype() == x.dtype() || head.quant.is_some() => {
                return head.forward(x);
            }
            Some(head) => &head.weight,
            None => &self.embed_tokens,
        };
        if w.dtype() == x.dtype() {
            product(x, w)
        } else {
            super::head_loss::head_logits(x, w)
        }
    }

    /// The LM head's weight (V, C) where the loss may multiply it itself
    /// ([`super::head_loss`]): frozen (LoRA keeps it so), dense, f32 products on the CPU.
    pub fn frozen_head(&self) -> Option<&Tensor> {
        let w = match &self.lm_head {
            Some(head) if head.lora.is_none() && head.quant.is_none() && head.bias.is_none() => {
                &head.weight
            }
            Some(_) => return None,
            None => &self.embed_tokens,
        };
        // An f32 head in the bf16 mode multiplies in bf16 on the unfused path; a bf16 head (a
        // QLoRA base's) has only this one.
        let fused = match w.dtype() {
            DType::F32 => !self.bf16,
            DType::BF16 => true,
            _ => false,
        };
        (fused && !w.track_op() && w.device().is_cpu()).then_some(w)
    }

    /// The final hidden states (B, T, C), normed, before the LM head: [`Llama::forward`]'s
    /// arguments.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t > self.rope.max_len() {
            candle_core::bail!(
                "sequence of {t} tokens exceeds the model's {} positions",
                self.rope.max_len()
            );
        }
        let mut x = self.embed(input_ids)?.reshape((b, t, ()))?; // (B, T, C)
        let inputs = AttnInputs::new(&self.rope, positions, mask, &x, (b, t))?;
        // Layers with a sliding window shorter than the rows get the window on top of the mask.
        let window = match &self.cfg.sliding_window {
            Some(w) if w.size < t => {
                let mut windowed = window_mask(t, w.size, x.dtype(), input_ids.device())?;
                if let Some(m) = mask {
                    windowed = windowed.broadcast_add(m)?;
                }
                let inputs = AttnInputs::new(&self.rope, positions, Some(&windowed), &x, (b, t))?;
                Some(inputs)
            }
            _ => None,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let inputs = match &window {
                Some(w) if self.cfg.layer_window(i).is_some() => w,
                _ => &inputs,
            };
            x = match &self.checkpoint {
                Some(store) if x.device().is_cpu() => {
                    layer.forward_checkpointed(&x, inputs, store)?
                }
                _ => layer.forward(&x, inputs)?,
            };
        }
        self.norm.forward(&x)
    }
}

/// The additive causal mask (1, 1, T, T): 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (1, 1, t, t), device)?.to_dtype(dtype)
}

/// The additive sliding-window causal mask (1, 1, T, T): query `i` sees keys `j` with
/// `i − window < j ≤ i`.
pub fn window_mask(t: usize, window: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j <= i && i - j < window {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (1, 1, t, t), device)?.to_dtype(dtype)
}

/// The Hugging Face paths of layer `i`'s projections, in [`Llama::projections`]' order.
fn projection_paths(i: usize) -> [String; 7] {
    let (attn, mlp) = (
        format!("model.layers.{i}.self_attn"),
        format!("model.layers.{i}.mlp"),
    );
    [
        format!("{attn}.q_proj"),
        format!("{attn}.k_proj"),
        format!("{attn}.v_proj"),
        format!("{attn}.o_proj"),
        format!("{mlp}.gate_proj"),
        format!("{mlp}.up_proj"),
        format!("{mlp}.down_proj"),
    ]
}

/// Position ids 0..T for every row: (B, T).
pub fn sequential_positions(b: usize, t: usize, device: &Device) -> Result<Tensor> {
    Tensor::arange(0u32, t as u32, device)?
        .unsqueeze(0)?
        .repeat((b, 1))
}

/// Keys and values of every layer for the tokens seen so far, so generation computes each new
/// token's attention against the cache instead of re-running the whole sequence.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values before the GQA repeat, (B, kv heads, T so far, hd).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Tokens cached so far: the position of the next one.
    pub len: usize,
}

impl Attention {
    /// Attention of the new tokens `x` (B, Tn, C) over the cache plus themselves; appends their
    /// keys and values to `cache`. `past` tokens are already cached.
    fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        past: usize,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous() // (B, n, Tn, hd)
        };
        let q = apply_rotary(&heads(self.q_proj.forward(x)?, self.n_heads)?, cos, sin)?;
        let k = apply_rotary(&heads(self.k_proj.forward(x)?, self.n_kv_heads)?, cos, sin)?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv_heads)?;
        let (k, v) = match cache.take() {
            Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?), // (B, kv, Tp+Tn, hd)
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total = past + t;
        let k = repeat_kv(&k, self.n_heads / self.n_kv_heads)?.contiguous()?; // (B, H, Tp+Tn, hd)
        let v = repeat_kv(&v, self.n_heads / self.n_kv_heads)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?; // (B, H, Tn, Tp+Tn)
        let windowed = window.is_some_and(|w| total > w);
        if t > 1 || windowed {
            // New token i sits at position past + i and sees keys 0..=past + i (within the
            // window, when the layer has one).
            let w = window.unwrap_or(usize::MAX);
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j <= past + i && past + i - j < w {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask =
                Tensor::from_vec(mask, (1, 1, t, total), x.device())?.to_dtype(scores.dtype())?;
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, self.n_heads * self.head_dim))?; // (B, Tn, H*hd)
        self.o_proj.forward(&y)
    }
}

impl Llama {
    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.embed_tokens.device()
    }

    /// Positions this instance's RoPE tables cover (a training net's: its sequence length).
    pub fn max_positions(&self) -> usize {
        self.rope.max_len()
    }

    /// Logits (B, V) of the last of `input_ids` (B, Tn), the tokens that follow those in `cache`,
    /// which this call extends. For inference only (no gradients flow through the cache).
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let past = cache.len;
        if past + t > self.rope.max_len() {
            candle_core::bail!(
                "sequence of {} tokens exceeds the model's {} positions",
                past + t,
                self.rope.max_len()
            );
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let positions = Tensor::arange(past as u32, (past + t) as u32, input_ids.device())?
            .unsqueeze(0)?
            .repeat((b, 1))?;
        let (cos, sin) = self.rope.cos_sin(&positions)?;
        let mut x = self.embed(input_ids)?; // (B, Tn, C)
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let h = layer.self_attn.forward_cached(
                &layer.input_layernorm.forward(&x)?,
                &cos,
                &sin,
                kv,
                past,
                self.cfg.layer_window(i),
            )?;
            let x1 = (&x + h)?;
            x = (&x1
                + layer
                    .mlp
                    .forward(&layer.post_attention_layernorm.forward(&x1)?)?)?;
        }
        cache.len = past + t;
        let last = self.norm.forward(&x.narrow(1, t - 1, 1)?)?.squeeze(1)?; // (B, C)
        self.head_rows(&last, |x, w| {
            match super::few_rows::few_rows_matmul(x, w)? {
                Some(logits) => Ok(logits),
                None => x.matmul(&w.t()?), // (B, V)
            }
        })
    }
}

// LoRA hooks (see `super::lora`): access to the projections and their adapters.
impl Linear {
    /// The base weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Output features.
    pub fn out_dim(&self) -> Result<usize> {
        match &self.quant {
            Some(q) => Ok(q.shape().0),
            None => self.weight.dim(0),
        }
    }

    /// The quantised weight, once [`Linear::set_quantized`] stored one.
    pub fn quantized(&self) -> Option<&Arc<QuantWeight>> {
        self.quant.as_ref()
    }

    /// Stores the (frozen) weight as `q` and lets go of the dense one: forward and backward
    /// dequantise it on the fly ([`super::quantized_linear`]).
    pub fn set_quantized(&mut self, q: Arc<QuantWeight>) -> Result<()> {
        let (out, inp) = self.weight.dims2()?;
        if q.shape() != (out, inp) {
            candle_core::bail!(
                "quantised weight {:?} for a ({out}, {inp}) projection",
                q.shape()
            );
        }
        self.weight = Tensor::zeros(0, self.weight.dtype(), self.weight.device())?;
        self.quant = Some(q);
        Ok(())
    }

    /// Attaches (or removes) a LoRA adapter, applied in `forward`.
    pub fn set_lora(&mut self, adapter: Option<super::lora::LoraAdapter>) {
        self.lora = adapter;
    }
}

impl Llama {
    /// Every q/k/v/o/gate/up/down projection with its Hugging Face module path
    /// (`model.layers.{i}.self_attn.q_proj`), in layer order.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            let linears = [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ];
            out.extend(projection_paths(i).into_iter().zip(linears));
        }
        out
    }

    /// As [`Llama::projections_mut`], read-only.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            out.extend(projection_paths(i).into_iter().zip(layer.linears()));
        }
        out
    }

    /// QLoRA's base: the projections named in `weights` (Hugging Face weight names,
    /// `model.layers.0.self_attn.q_proj.weight`) stored quantised ([`Linear::set_quantized`]);
    /// embeddings, norms and the LM head keep their dtype. Returns the bytes the codes take.
    pub fn set_quantized_projections(
        &mut self,
        weights: &HashMap<String, Arc<QuantWeight>>,
    ) -> Result<usize> {
        let mut bytes = 0;
        for (path, p) in self.projections_mut() {
            if let Some(q) = weights.get(&format!("{path}.weight")) {
                p.set_quantized(q.clone())?;
                bytes += q.bytes();
            }
        }
        Ok(bytes)
    }

    /// Replaces the frozen embeddings (`model.embed_tokens.weight`) or untied LM head
    /// (`lm_head.weight`) with `w` of the same shape, in a dtype the model's products take: f32,
    /// or bf16 as a QLoRA base's file holds it (widened a block at a time, [`super::head_loss`]).
    pub fn set_frozen_vocab_weight(&mut self, name: &str, w: Tensor) -> Result<()> {
        if !matches!(w.dtype(), DType::F32 | DType::BF16) || w.track_op() {
            candle_core::bail!("{name}: a frozen f32 or bf16 tensor");
        }
        let slot = match (name, self.lm_head.as_mut()) {
            ("model.embed_tokens.weight", _) => &mut self.embed_tokens,
            ("lm_head.weight", Some(head)) if head.lora.is_none() && head.quant.is_none() => {
                &mut head.weight
            }
            _ => candle_core::bail!("{name} is not a vocabulary weight of this model"),
        };
        if slot.dims() != w.dims() {
            candle_core::bail!("{name}: {:?} for {:?}", w.dims(), slot.dims());
        }
        *slot = w;
        Ok(())
    }

    /// The dequantised weight of the quantised projection `name` (a Hugging Face weight name),
    /// for export; `None` for any other name.
    pub fn dequantized_projection(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(path) = name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let device = self.embed_tokens.device();
        for (p, linear) in self.projections() {
            if p == path
                && let Some(q) = linear.quantized()
            {
                return Ok(Some(Tensor::from_vec(q.dequantize(), q.shape(), device)?));
            }
        }
        Ok(None)
    }
}
