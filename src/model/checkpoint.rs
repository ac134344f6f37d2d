//! Activation recompute per block (`"gradient_checkpointing": true`): the forward pass keeps only
//! each block's input, and backward runs the block again from it before taking its gradient, as
//! transformers' `gradient_checkpointing_enable()` does. A step costs one more forward of every
//! block; what it saves is everything a block keeps for backward (the norms' inputs, the
//! projections, the attention's log-sum-exp, the MLP's (B, T, intermediate) activations).
//!
//! candle's autograd has no hook for this, so a block becomes one custom op on its input: the
//! forward computes the block on a detached input (its graph is dropped as soon as the output
//! is copied out), and `bwd` rebuilds the block's graph from a fresh variable holding the input,
//! backpropagates the incoming gradient through it, returns the input's gradient to candle and
//! puts the parameters' gradients in a side store that [`super::Llama::backward`] merges into
//! the loss's [`GradStore`]. The rerun must compute what the forward did: the block
//! ([`super::llama`]) hands over a closure that resets LoRA's mask generator to its state before
//! the forward, so the recomputed block draws the same dropout masks, and losses and gradients
//! equal those without recompute.
//!
//! CPU only (the op's forward is a host copy); on other devices blocks run as before.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, Var};

/// Parameter gradients from recomputed blocks, waiting for [`take`](GradSideStore::take).
#[derive(Debug, Default)]
pub struct GradSideStore(Mutex<Option<GradStore>>);

impl GradSideStore {
    fn add(&self, grads: GradStore) -> Result<()> {
        let mut slot = self.0.lock().expect("checkpoint store lock");
        match slot.as_mut() {
            Some(acc) => acc.extend(grads),
            None => {
                *slot = Some(grads);
                Ok(())
            }
        }
    }

    /// Everything gathered since the last call.
    pub fn take(&self) -> Option<GradStore> {
        self.0.lock().expect("checkpoint store lock").take()
    }
}

/// `grads` without their graphs. candle's backward detaches the gradient of every graph node it
/// passes, but it also leaves an entry for each constant an op read (a mask, the label weights,
/// a surrogate's coefficients), computed from the op's other operand: that entry is a graph node
/// holding the activation, and through it the whole forward graph, for as long as the store
/// lives (across an accumulation window, every micro-batch's; in the recompute, every block's).
pub fn detached(grads: GradStore) -> GradStore {
    let ids: Vec<_> = grads.get_ids().copied().collect();
    let mut out = GradStore::default();
    for id in ids {
        if let Some(g) = grads.get_id(id) {
            out.insert_id(id, g.detach());
        }
    }
    out
}

/// A block's forward pass as backward reruns it: the same computation as the one that made
/// the output (the same dropout masks included).
pub type Recompute = Box<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// `output` (the block's output for `x`, computed on a detached `x`) joined to the graph at
/// `x`, keeping only `x` for backward, which reruns `recompute` on it. `store` receives the
/// parameters' gradients.
pub fn checkpointed(
    x: &Tensor,
    output: Tensor,
    recompute: Recompute,
    store: &Arc<GradSideStore>,
) -> Result<Tensor> {
    // candle records an op only when its input is part of a graph; a frozen model's embeddings
    // (LoRA) are not, so the first block's input becomes a variable (its gradient goes unused).
    let x = if x.track_op() {
        x.clone()
    } else {
        Var::from_tensor(x)?.into_inner()
    };
    x.apply_op1(BlockCheckpoint {
        recompute,
        store: store.clone(),
        output: Mutex::new(Some(output.detach())),
    })
}

struct BlockCheckpoint {
    recompute: Recompute,
    store: Arc<GradSideStore>,
    /// The block's output, computed outside the op, handed to `cpu_fwd` once.
    output: Mutex<Option<Tensor>>,
}

impl CustomOp1 for BlockCheckpoint {
    fn name(&self) -> &'static str {
        "block-checkpoint"
    }

    fn cpu_fwd(&self, _storage: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = self
            .output
            .lock()
            .expect("checkpoint output lock")
            .take()
            .ok_or_else(|| candle_core::Error::Msg("block checkpoint run twice".into()))?;
        let flat = y.flatten_all()?;
        let storage = match y.dtype() {
            DType::F32 => CpuStorage::F32(flat.to_vec1()?),
            DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            DType::BF16 => CpuStorage::BF16(flat.to_vec1()?),
            DType::F16 => CpuStorage::F16(flat.to_vec1()?),
            other => candle_core::bail!("block checkpoint: unsupported dtype {other:?}"),
        };
        Ok((storage, y.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let y = (self.recompute)(input.as_tensor())?;
        let incoming = grad_res.detach();
        let mut grads = (y * &incoming)?.sum_all()?.backward()?;
        let dx = grads.remove(input.as_tensor());
        grads.remove(&incoming);
        // Detached, or the gradients could keep the recomputed block's graph alive.
        self.store.add(detached(grads))?;
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use crate::model::lora::{LoraConfig, load_lora_llama};
    use crate::model::{Llama, ModelConfig, init_varmap, varmap_tensors};

    /// Three layers, grouped-query heads (4 query, 2 key/value), untied head.
    fn cfg() -> ModelConfig {
        let mut cfg = ModelConfig::llama(64, 32, 64, 3, 4, 2, 64);
        cfg.tie_word_embeddings = false;
        cfg.initializer_range = 0.2;
        cfg
    }

    fn ids(cfg: &ModelConfig, b: usize, t: usize) -> Tensor {
        let v: Vec<u32> = (0..b * t)
            .map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32)
            .collect();
        Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
    }

    /// Loss (a weighted sum of the logits, so every position and vocabulary entry matters) and
    /// the gradients of `vars` by name.
    fn loss_and_grads(
        net: &Llama,
        ids: &Tensor,
        mask: Option<&Tensor>,
        vars: &[(String, candle_core::Var)],
    ) -> (f64, HashMap<String, Vec<f64>>) {
        let (b, t) = ids.dims2().unwrap();
        let positions = crate::model::llama::sequential_positions(b, t, &Device::Cpu).unwrap();
        let logits = net.forward(ids, &positions, mask).unwrap();
        let weights = Tensor::arange(0f32, logits.elem_count() as f32, &Device::Cpu)
            .unwrap()
            .reshape(logits.shape())
            .unwrap()
            .affine(1e-4, -0.3)
            .unwrap()
            .sin()
            .unwrap()
            .to_dtype(logits.dtype())
            .unwrap();
        let loss = (logits * weights).unwrap().sum_all().unwrap();
        let grads = net.backward(&loss).unwrap();
        let out = vars
            .iter()
            .map(|(n, v)| {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no grad for {n}"));
                let g = g.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
                (n.clone(), g.to_vec1::<f64>().unwrap())
            })
            .collect();
        (loss.to_dtype(DType::F64).unwrap().to_scalar().unwrap(), out)
    }

    fn assert_equal(a: &(f64, HashMap<String, Vec<f64>>), b: &(f64, HashMap<String, Vec<f64>>)) {
        assert_eq!(a.0, b.0, "loss");
        assert_eq!(a.1.len(), b.1.len());
        for (name, ga) in &a.1 {
            let gb = &b.1[name];
            let worst = ga
                .iter()
                .zip(gb)
                .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
                .fold(0.0, f64::max);
            assert!(worst <= 1e-12, "{name}: gradients differ by {worst}");
        }
    }

    #[test]
    fn recompute_gives_the_same_loss_and_gradients_full_model() {
        let cfg = cfg();
        for mask in [false, true] {
            let varmap = init_varmap(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
            let mut net = Llama::load(
                VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu),
                &cfg,
            )
            .unwrap();
            let vars: Vec<_> = {
                let data = varmap.data().lock().unwrap();
                data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let ids = ids(&cfg, 2, 12);
            // An explicit additive mask takes the packed-SFT path: two examples of 6 per row.
            let additive = mask.then(|| {
                let t = 12;
                let m: Vec<f64> = (0..t)
                    .flat_map(|i| {
                        (0..t).map(move |j| {
                            if j <= i && j / 6 == i / 6 {
                                0.0
                            } else {
                                f64::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Tensor::from_vec(m, (1, 1, t, t), &Device::Cpu).unwrap()
            });
            let plain = loss_and_grads(&net, &ids, additive.as_ref(), &vars);
            net.set_gradient_checkpointing(true);
            let recomputed = loss_and_grads(&net, &ids, additive.as_ref(), &vars);
            assert_equal(&plain, &recomputed);
        }
    }

    #[test]
    fn gradients_come_detached_from_the_graph() {
        let cfg = cfg();
        let varmap = init_varmap(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let mut net = Llama::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let ids = ids(&cfg, 2, 8);
        let positions = crate::model::llama::sequential_positions(2, 8, &Device::Cpu).unwrap();
        let weights: Vec<_> = varmap.all_vars();
        for recompute in [false, true] {
            net.set_gradient_checkpointing(recompute);
            // A loss with a constant in it, as the cross-entropy's label weights are.
            let logits = net.forward(&ids, &positions, None).unwrap();
            let w = Tensor::ones(logits.shape(), DType::F32, &Device::Cpu).unwrap();
            let loss = (logits * w).unwrap().sum_all().unwrap();
            // candle's own backward leaves the constants' entries attached to the activations.
            if !recompute {
                let raw = loss.backward().unwrap();
                assert!(raw.get_ids().any(|id| raw.get_id(*id).unwrap().track_op()));
            }
            let grads = net.backward(&loss).unwrap();
            for v in &weights {
                assert!(
                    grads.get(v.as_tensor()).is_some(),
                    "a gradient for every weight"
                );
            }
            assert!(
                grads
                    .get_ids()
                    .all(|id| !grads.get_id(*id).unwrap().track_op())
            );
        }
    }

    #[test]
    fn recompute_replays_lora_dropout_masks() {
        let cfg = cfg();
        // Plain tensors, as a frozen base is loaded: no gradient flows into the embeddings.
        let base: HashMap<String, Tensor> =
            varmap_tensors(&init_varmap(&cfg, 5, DType::F32, &Device::Cpu).unwrap())
                .into_iter()
                .map(|(k, v)| (k, v.detach()))
                .collect();
        let spec = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.3,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            use_rslora: false,
        };
        let run = |checkpointing: bool| {
            let (mut net, adapters) =
                load_lora_llama(base.clone(), &cfg, &spec, 9, 64, DType::F32, &Device::Cpu)
                    .unwrap();
            // B starts at zero; give it values so A gets gradients and dropout matters.
            for (_, ad) in &adapters.adapters {
                let b = ad.b.as_tensor();
                ad.b.set(
                    &(Tensor::ones(b.shape(), DType::F32, &Device::Cpu).unwrap() * 0.01).unwrap(),
                )
                .unwrap();
            }
            net.set_gradient_checkpointing(checkpointing);
            adapters.set_training(true);
            adapters.start_step(4);
            let vars = adapters.named_vars();
            let ids = ids(&cfg, 2, 10);
            // Two micro-batches in one step: the second's masks must not depend on recompute.
            let first = loss_and_grads(&net, &ids, None, &vars);
            let second = loss_and_grads(&net, &ids, None, &vars);
            (first, second)
        };
        let (a1, a2) = run(false);
        let (b1, b2) = run(true);
        assert_ne!(a1.0, a2.0, "the micro-batches draw their own masks");
        assert_equal(&a1, &b1);
        assert_equal(&a2, &b2);
    }
}
