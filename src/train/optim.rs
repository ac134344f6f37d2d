//! AdamW with decoupled weight decay, global-norm gradient clipping, and gradient accumulation.
//!
//! Written here rather than using `candle_nn::AdamW` because that one keeps its moments private
//! (no checkpoint, no resume) and decays every variable (we skip norms and biases).
//!
//! On the CPU the update is one parallel pass per parameter that reads the gradient and writes
//! the moments and the weight in place (candle's `inplace_op2`), with the clipping factor folded
//! in; written as tensor ops it was about ten single-threaded passes and as many allocations per
//! parameter. The moments then live in plain vectors beside the variable. Elsewhere (another
//! device, another dtype) the same update runs as tensor ops.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use crate::model::ops::Real;

/// Elements per rayon task of the fused update and norm.
const CHUNK: usize = 32 * 1024;

/// AdamW's knobs; defaults are β1 0.9, β2 0.95, ε 1e-8, weight decay 0.01.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
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

/// First and second moments of one parameter, same shape as it.
enum Moments {
    /// On the host, updated by the fused pass (CPU f32 / f64 parameters).
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
    /// As tensors on the parameter's device, updated by tensor ops.
    Tensors(Tensor, Tensor),
}

impl Moments {
    fn zeros(var: &Var) -> Result<Self> {
        let n = var.elem_count();
        Ok(match (var.device().is_cpu(), var.dtype()) {
            (true, DType::F32) => Moments::F32(vec![0.0; n], vec![0.0; n]),
            (true, DType::F64) => Moments::F64(vec![0.0; n], vec![0.0; n]),
            _ => Moments::Tensors(var.zeros_like()?, var.zeros_like()?),
        })
    }

    /// (m, v) as tensors shaped like `var`.
    fn tensors(&self, var: &Var) -> Result<(Tensor, Tensor)> {
        let (shape, dev) = (var.shape(), var.device());
        Ok(match self {
            Moments::F32(m, v) => (
                Tensor::from_slice(m, shape, dev)?,
                Tensor::from_slice(v, shape, dev)?,
            ),
            Moments::F64(m, v) => (
                Tensor::from_slice(m, shape, dev)?,
                Tensor::from_slice(v, shape, dev)?,
            ),
            Moments::Tensors(m, v) => (m.clone(), v.clone()),
        })
    }

    /// The same kind of moments holding `m` and `v` (any dtype or device; shapes checked).
    fn from_tensors(var: &Var, m: Tensor, v: Tensor) -> Result<Self> {
        for t in [&m, &v] {
            if t.shape() != var.shape() {
                candle_core::bail!(
                    "optimizer state {:?} does not match the parameter {:?}",
                    t.dims(),
                    var.dims()
                );
            }
        }
        let host = |t: &Tensor, dt: DType| t.to_dtype(dt)?.flatten_all()?.to_device(&Device::Cpu);
        Ok(match Moments::zeros(var)? {
            Moments::F32(..) => Moments::F32(
                host(&m, DType::F32)?.to_vec1()?,
                host(&v, DType::F32)?.to_vec1()?,
            ),
            Moments::F64(..) => Moments::F64(
                host(&m, DType::F64)?.to_vec1()?,
                host(&v, DType::F64)?.to_vec1()?,
            ),
            Moments::Tensors(..) => Moments::Tensors(
                m.to_dtype(var.dtype())?.to_device(var.device())?,
                v.to_dtype(var.dtype())?.to_device(var.device())?,
            ),
        })
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// The scalars of one update of one parameter.
#[derive(Clone, Copy)]
struct Coeffs {
    beta1: f64,
    beta2: f64,
    /// Bias corrections `1 − β^t`.
    bc1: f64,
    bc2: f64,
    eps: f64,
    lr: f64,
    /// `1 − lr · weight_decay`, or 1 for a parameter that does not decay.
    shrink: f64,
    /// The clipping factor the gradient is multiplied by first.
    grad_scale: f64,
}

/// The fused update as an in-place op on the weight, reading the gradient and updating the
/// host moments it holds.
struct FusedUpdate<'a> {
    moments: Mutex<&'a mut Moments>,
    c: Coeffs,
}

/// One element-wise AdamW pass over a parameter chunk.
fn update_chunk<R: Real>(theta: &mut [R], g: &[R], m: &mut [R], v: &mut [R], c: Coeffs) {
    let f = R::of;
    let (b1, b2, nb1, nb2) = (f(c.beta1), f(c.beta2), f(1.0 - c.beta1), f(1.0 - c.beta2));
    let (bc1, bc2, eps, lr, shrink, gs) = (
        f(c.bc1),
        f(c.bc2),
        f(c.eps),
        f(c.lr),
        f(c.shrink),
        f(c.grad_scale),
    );
    for i in 0..theta.len() {
        let gi = g[i] * gs;
        m[i] = (b1 * m[i]).add(nb1 * gi);
        v[i] = (b2 * v[i]).add(nb2 * gi * gi);
        let update = m[i].div(bc1).div(v[i].div(bc2).sqrt().add(eps));
        theta[i] = theta[i] * shrink - lr * update;
    }
}

fn update_all<R: Real>(theta: &mut [R], g: &[R], m: &mut [R], v: &mut [R], c: Coeffs) {
    theta
        .par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((t, g), (m, v))| update_chunk(t, g, m, v, c));
}

impl InplaceOp2 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (Some((t0, t1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw: the parameter and its gradient must be contiguous");
        };
        let mut moments = self.moments.lock().expect("adamw moments lock");
        match (s1, s2, &mut **moments) {
            (CpuStorage::F32(t), CpuStorage::F32(g), Moments::F32(m, v)) => {
                update_all(&mut t[t0..t1], &g[g0..g1], m, v, self.c)
            }
            (CpuStorage::F64(t), CpuStorage::F64(g), Moments::F64(m, v)) => {
                update_all(&mut t[t0..t1], &g[g0..g1], m, v, self.c)
            }
            _ => candle_core::bail!("adamw: parameter, gradient and moments differ in dtype"),
        }
        Ok(())
    }
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
                Ok(Slot {
                    name,
                    moments: Moments::zeros(&var)?,
                    var,
                    decay,
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
        self.step_scaled(grads, lr, 1.0)
    }

    /// One update with every gradient multiplied by `grad_scale` first (the clipping factor of
    /// [`clip_factor`], applied here instead of rewriting the gradients).
    pub fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let base = Coeffs {
            beta1,
            beta2,
            bc1: 1.0 - beta1.powi(self.step as i32),
            bc2: 1.0 - beta2.powi(self.step as i32),
            eps,
            lr,
            shrink: 1.0,
            grad_scale,
        };
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            // Decoupled decay: shrink the weight itself, outside the adaptive update.
            let c = Coeffs {
                shrink: if s.decay && weight_decay > 0.0 {
                    1.0 - lr * weight_decay
                } else {
                    1.0
                },
                ..base
            };
            match &mut s.moments {
                Moments::Tensors(m, v) => {
                    let g = (g * grad_scale)?;
                    *m = ((&*m * beta1)? + (&g * (1.0 - beta1))?)?;
                    *v = ((&*v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                    let update = ((&*m / c.bc1)? / ((&*v / c.bc2)?.sqrt()? + eps)?)?;
                    let theta = (s.var.as_tensor() * c.shrink)?;
                    s.var.set(&(theta - (update * lr)?)?)?;
                }
                moments => {
                    let g = g.to_dtype(s.var.dtype())?.contiguous()?;
                    s.var.as_tensor().inplace_op2(
                        &g,
                        &FusedUpdate {
                            moments: Mutex::new(moments),
                            c,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The moments as tensors named `m.{param}` / `v.{param}`, for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            // Host vectors always make tensors of the parameter's own shape.
            let (m, v) = s
                .moments
                .tensors(&s.var)
                .expect("moments fit their parameter");
            out.insert(format!("m.{}", s.name), m);
            out.insert(format!("v.{}", s.name), v);
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            let mut take = |key: String| {
                tensors
                    .remove(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state has no {key}")))
            };
            let m = take(format!("m.{}", s.name))?;
            let v = take(format!("v.{}", s.name))?;
            s.moments = Moments::from_tensors(&s.var, m, v)?;
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

/// Σ x² of a CPU f32/f64 tensor in one parallel pass, accumulated in f64; `None` elsewhere.
fn host_sum_sq(g: &Tensor) -> Option<f64> {
    let (storage, layout) = g.storage_and_layout();
    let (a, b) = layout.contiguous_offsets()?;
    let sum = |xs: &[f64]| xs.iter().map(|x| x * x).sum::<f64>();
    match &*storage {
        // Chunk sums collected in order and added in order: a parallel `sum` adds them as
        // rayon's splits fell, which would make the norm (and the clip) depend on scheduling.
        candle_core::Storage::Cpu(CpuStorage::F32(x)) => Some(
            x[a..b]
                .par_chunks(CHUNK)
                .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                .collect::<Vec<f64>>()
                .iter()
                .sum(),
        ),
        candle_core::Storage::Cpu(CpuStorage::F64(x)) => Some(
            x[a..b]
                .par_chunks(CHUNK)
                .map(sum)
                .collect::<Vec<f64>>()
                .iter()
                .sum(),
        ),
        _ => None,
    }
}

/// The global L2 norm of the gradients of `vars`, accumulated in f64.
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut sum = 0.0;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sum += match host_sum_sq(g) {
                Some(s) => s,
                None => g
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?,
            };
        }
    }
    Ok(sum.sqrt())
}

/// PyTorch's `clip_grad_norm_` factor for a gradient of global norm `norm`: `max_norm / (norm +
/// 1e-6)` when that is below 1, else 1.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Scales the gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`, [`clip_factor`]). Returns the norm before clipping. The trainer instead
/// passes the factor to [`AdamW::step_scaled`], which saves rewriting every gradient.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads, vars)?;
    let factor = clip_factor(norm, max_norm);
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
    fn the_fused_update_matches_the_tensor_ops() {
        // Two copies of the same parameters, one updated by the fused pass, one by tensor ops
        // (the path of other devices), through three steps of decay, no decay and clipping.
        let dev = Device::Cpu;
        let init = Tensor::randn(0f64, 1.0, (70, 1000), &dev).unwrap(); // several chunks
        let bias = Tensor::randn(0f64, 1.0, 70, &dev).unwrap();
        let make = || {
            let (w, b) = (
                Var::from_tensor(&init).unwrap(),
                Var::from_tensor(&bias).unwrap(),
            );
            let opt = AdamW::new(
                vec![
                    ("w".into(), w.clone(), true),
                    ("b".into(), b.clone(), false),
                ],
                AdamWConfig::default(),
            )
            .unwrap();
            (w, b, opt)
        };
        let (w1, b1, mut fused) = make();
        let (w2, b2, mut reference) = make();
        for s in &mut reference.slots {
            s.moments = Moments::Tensors(s.var.zeros_like().unwrap(), s.var.zeros_like().unwrap());
        }
        assert!(matches!(fused.slots[0].moments, Moments::F64(..)));
        let target = Tensor::randn(0f64, 1.0, (70, 1000), &dev).unwrap();
        for step in 0..3 {
            let grads = |w: &Var, b: &Var| {
                let y = w
                    .as_tensor()
                    .broadcast_add(&b.as_tensor().unsqueeze(1).unwrap())
                    .unwrap();
                ((y - &target).unwrap().sqr().unwrap().sum_all().unwrap() * 0.5)
                    .unwrap()
                    .backward()
                    .unwrap()
            };
            let scale = if step == 1 { 0.25 } else { 1.0 };
            fused.step_scaled(&grads(&w1, &b1), 0.05, scale).unwrap();
            reference
                .step_scaled(&grads(&w2, &b2), 0.05, scale)
                .unwrap();
        }
        let d = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b);
        assert!(d(w1.as_tensor(), w2.as_tensor()) < 1e-13);
        assert!(d(b1.as_tensor(), b2.as_tensor()) < 1e-13);
        assert!(d(w1.as_tensor(), &init) > 1e-3, "the weights moved");
        let (s1, s2) = (fused.state_tensors(), reference.state_tensors());
        for key in ["m.w", "v.w", "m.b", "v.b"] {
            // Relative: the bias's second moment holds squares of sums over 1000 rows.
            let scale = crate::testing::max_abs(&s2[key]);
            let rel = d(&s1[key], &s2[key]) / scale;
            assert!(rel < 1e-14, "{key} differs by {rel} (relative)");
        }
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
