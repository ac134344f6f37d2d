//! AdamW with decoupled weight decay, global-norm gradient clipping, and gradient accumulation.
//!
//! Written here rather than using `candle_nn::AdamW` because that one keeps its moments private
//! (no checkpoint, no resume) and decays every variable (we skip norms and biases).

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

/// AdamW's knobs; defaults are β1 0.9, β2 0.95, ε 1e-8, weight decay 0.01.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor, // first moment, same shape as the parameter
    v: Tensor, // second moment
}

/// AdamW over a fixed list of named variables.
pub struct AdamW {
    slots: Vec<Slot>,
    cfg: AdamWConfig,
    /// Updates applied so far (bias correction uses `step` after increment).
    step: u64,
}

impl AdamW {
    /// `params`: (name, variable, whether weight decay applies).
    pub fn new(params: Vec<(String, Var, bool)>, cfg: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var, decay)| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                Ok(Slot {
                    name,
                    var,
                    decay,
                    m,
                    v,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            cfg,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update at learning rate `lr`. Variables without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - beta2.powi(self.step as i32);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            s.m = ((&s.m * beta1)? + (g * (1.0 - beta1))?)?;
            s.v = ((&s.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&s.m / bc1)?;
            let v_hat = (&s.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
            // Decoupled decay: shrink the weight itself, outside the adaptive update.
            let theta = if s.decay && weight_decay > 0.0 {
                (s.var.as_tensor() * (1.0 - lr * weight_decay))?
            } else {
                s.var.as_tensor().clone()
            };
            s.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as tensors named `m.{param}` / `v.{param}`, for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (key, dst) in [
                (format!("m.{}", s.name), &mut s.m),
                (format!("v.{}", s.name), &mut s.v),
            ] {
                let t = tensors.remove(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no {key}"))
                })?;
                *dst = t.to_dtype(s.var.dtype())?.to_device(s.var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }

    /// Saves the moments to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.state_tensors(), path)
    }

    /// Loads moments saved by [`AdamW::save`].
    pub fn load(&mut self, path: &Path, step: u64, device: &Device) -> Result<()> {
        let t = candle_core::safetensors::load(path, device)?;
        self.load_state(t, step)
    }
}

/// The global L2 norm of the gradients of `vars`, accumulated in f64.
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut sum = 0.0;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sum += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sum.sqrt())
}

/// Scales the gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads, vars)?;
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * factor)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Adds `more` into `acc` (gradient accumulation across micro-batches).
pub fn accumulate(acc: &mut Option<GradStore>, more: GradStore, vars: &[Var]) -> Result<()> {
    match acc {
        None => *acc = Some(more),
        Some(a) => {
            for v in vars {
                if let Some(g) = more.get(v.as_tensor()) {
                    let sum = match a.get(v.as_tensor()) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    a.insert(v.as_tensor(), sum);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_var(x: f64) -> Var {
        Var::new(&[x], &Device::Cpu).unwrap()
    }

    #[test]
    fn adamw_first_steps_match_hand_computation() {
        // Hand computation of PyTorch's AdamW (lr 0.1, wd 0.5, β 0.9/0.95, ε 1e-8) on f(x) = x^2
        // from x = 1: g = 2; m = 0.2, v = 0.2; m̂ = 2, v̂ = 4; update = 2 / (2 + 1e-8);
        // x ← 1·(1 - 0.1·0.5) - 0.1·update = 0.95 - 0.09999999950 = 0.8500000005.
        let x = scalar_var(1.0);
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let mut opt = AdamW::new(vec![("x".into(), x.clone(), true)], cfg).unwrap();
        let grads = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads, 0.1).unwrap();
        let got = x.as_tensor().to_vec1::<f64>().unwrap()[0];
        assert!((got - 0.8500000005).abs() < 1e-12, "{got}");
        // Without decay (a norm or bias) the weight term vanishes: 1 - 0.0999999995.
        let y = scalar_var(1.0);
        let mut opt = AdamW::new(vec![("y".into(), y.clone(), false)], cfg).unwrap();
        let grads = y
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads, 0.1).unwrap();
        assert!((y.as_tensor().to_vec1::<f64>().unwrap()[0] - 0.9000000005).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_reports_the_norm_before() {
        let a = Var::new(&[3.0f64], &Device::Cpu).unwrap();
        let b = Var::new(&[4.0f64], &Device::Cpu).unwrap();
        // loss = 0.5 (a² + b²): gradients (3, 4), norm 5.
        let loss =
            ((a.as_tensor().sqr().unwrap() + b.as_tensor().sqr().unwrap()).unwrap() * 0.5).unwrap();
        let mut grads = loss.sum_all().unwrap().backward().unwrap();
        let vars = [a.clone(), b.clone()];
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
        // factor 1 / (5 + 1e-6)
        assert!((ga - 3.0 / (5.0 + 1e-6)).abs() < 1e-12 && (gb - 4.0 / (5.0 + 1e-6)).abs() < 1e-12);
        // Below the threshold nothing changes.
        let mut grads = loss.sum_all().unwrap().backward().unwrap();
        assert!((clip_grad_norm(&mut grads, &vars, 10.0).unwrap() - 5.0).abs() < 1e-12);
        assert_eq!(
            grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0],
            3.0
        );
    }

    #[test]
    fn state_round_trips() {
        let x = scalar_var(1.0);
        let mut opt =
            AdamW::new(vec![("x".into(), x.clone(), true)], AdamWConfig::default()).unwrap();
        let grads = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads, 0.1).unwrap();
        let state = opt.state_tensors();
        let x2 = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut opt2 = AdamW::new(vec![("x".into(), x2, true)], AdamWConfig::default()).unwrap();
        opt2.load_state(state, opt.steps_taken()).unwrap();
        assert_eq!(opt2.steps_taken(), 1);
        let m = opt2.state_tensors()["m.x"].to_vec1::<f64>().unwrap()[0];
        assert!((m - 0.2).abs() < 1e-15, "{m}");
    }
}
