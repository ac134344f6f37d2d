//! Fused CPU ops with backward passes: the causal softmax of attention and the row-wise
//! cross-entropy of the loss, the two largest elementwise workloads of a training step. With the
//! `cuda` feature each also has a GPU side ([`super::cuda_ops`], off unless [`cuda_kernels_on`]).
//!
//! The composite `softmax(scores * scale + mask)` makes about eight passes over the (B, H, T, T)
//! scores forward and more backward, each single-threaded in candle's CPU backend, and spends
//! backward work on the constant mask. This op scales, masks and normalises each row in one
//! parallel pass, and its backward, `dx = scale · y · (g − Σ g·y)`, is one more. Rows with an
//! explicit mask (packed SFT) keep the composite path.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Row-wise softmax of `scale · x` over keys `j <= i`, where `i` is the query index (the
/// second-to-last dimension); masked entries are exactly 0. `x`: (..., T, T).
pub fn causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    let t = x.dim(candle_core::D::Minus1)?;
    if x.dim(candle_core::D::Minus2)? != t {
        candle_core::bail!(
            "causal_softmax needs square (T, T) scores, got {:?}",
            x.dims()
        );
    }
    x.contiguous()?.apply_op1(CausalSoftmax { scale, t })
}

/// The float types the fused CPU ops run in (f32 and f64).
pub trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn ln(self) -> Self;
    /// `xs[i] = exp(xs[i] − shift)` over a slice (vectorised for f32, [`super::fast_exp`]).
    fn exp_shifted(xs: &mut [Self], shift: Self) {
        for x in xs {
            *x = (*x - shift).exp();
        }
    }
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn add(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn exp_shifted(xs: &mut [Self], shift: Self) {
        super::fast_exp::exp_shifted_f32(xs, shift)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

fn forward<R: Real>(x: &[R], t: usize, scale: f64) -> Vec<R> {
    let scale = R::of(scale);
    let mut out = vec![R::ZERO; x.len()];
    out.par_chunks_mut(t)
        .zip(x.par_chunks(t))
        .enumerate()
        .for_each(|(row, (o, xs))| {
            let i = row % t; // query position: keys 0..=i are visible
            let mut max = xs[0] * scale;
            for &v in &xs[1..=i] {
                if v * scale > max {
                    max = v * scale;
                }
            }
            let mut sum = R::ZERO;
            for j in 0..=i {
                let e = (xs[j] * scale - max).exp();
                o[j] = e;
                sum = sum.add(e);
            }
            for v in &mut o[..=i] {
                *v = v.div(sum);
            }
        });
    out
}

fn backward<R: Real>(y: &[R], g: &[R], t: usize, scale: f64) -> Vec<R> {
    let scale = R::of(scale);
    let mut out = vec![R::ZERO; y.len()];
    out.par_chunks_mut(t)
        .zip(y.par_chunks(t).zip(g.par_chunks(t)))
        .enumerate()
        .for_each(|(row, (o, (ys, gs)))| {
            let i = row % t;
            let mut dot = R::ZERO;
            for j in 0..=i {
                dot = dot.add(gs[j] * ys[j]);
            }
            for j in 0..=i {
                o[j] = scale * ys[j] * (gs[j] - dot);
            }
        });
    out
}

/// The gradients of three inputs from one flat buffer holding them in order, each reshaped like
/// its input (how the fused ops' backward passes return three gradients from one op).
pub(super) type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

pub(super) fn split_grads3(flat: &Tensor, like: [&Tensor; 3]) -> Result<Grads3> {
    let mut off = 0;
    let mut part = |t: &Tensor| -> Result<Option<Tensor>> {
        let n = t.elem_count();
        let g = flat.narrow(0, off, n)?.reshape(t.shape())?;
        off += n;
        Ok(Some(g))
    };
    Ok((part(like[0])?, part(like[1])?, part(like[2])?))
}

/// `(rows, k, n)` of a linear op's operands, `x` (rows, k) and a weight (n, k) as Hugging Face
/// stores it; a mismatch is an error naming `op`.
pub(super) fn linear_dims(op: &str, x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let (rows, k) = x.shape().dims2()?;
    let (n, k_w) = w.shape().dims2()?;
    if k != k_w {
        candle_core::bail!("{op}: x is (_, {k}) but the weight is ({n}, {k_w})");
    }
    Ok((rows, k, n))
}

/// The elements of a contiguous layout.
pub(super) fn contiguous<'a, R>(s: &'a [R], l: &Layout) -> Result<&'a [R]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("the fused ops expect contiguous input"),
    }
}

struct CausalSoftmax {
    scale: f64,
    t: usize,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(forward(contiguous(v, l)?, self.t, self.scale)),
            CpuStorage::F64(v) => CpuStorage::F64(forward(contiguous(v, l)?, self.t, self.scale)),
            _ => candle_core::bail!("causal_softmax supports f32 and f64 on CPU"),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = super::cuda_ops::causal_softmax_fwd(s, l, self.t, self.scale)?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &g,
            &CausalSoftmaxGrad {
                scale: self.scale,
                t: self.t,
            },
        )?))
    }
}

struct CausalSoftmaxGrad {
    scale: f64,
    t: usize,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(backward(
                contiguous(y, l1)?,
                contiguous(g, l2)?,
                self.t,
                self.scale,
            )),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(backward(
                contiguous(y, l1)?,
                contiguous(g, l2)?,
                self.t,
                self.scale,
            )),
            _ => candle_core::bail!("causal_softmax backward supports f32 and f64 on CPU"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dx = super::cuda_ops::causal_softmax_bwd((s1, l1), (s2, l2), self.t, self.scale)?;
        Ok((dx, l1.shape().clone()))
    }
}

/// −log softmax(logits)[target] per row: `logits` (N, V) f32/f64, `targets` (N) u32 → (N).
/// Backward (to the logits only) is `g · (softmax − onehot)`, recomputed in one parallel pass.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (_, v) = logits.dims2()?;
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy { v })
}

fn row_max<R: Real>(xs: &[R]) -> R {
    let mut max = xs[0];
    for &x in &xs[1..] {
        if x > max {
            max = x;
        }
    }
    max
}

/// `buf = exp(row − max(row))`; returns `max` and `Σ buf` (summed in f64).
fn shifted_exps<R: Real>(row: &[R], buf: &mut [R]) -> (R, f64) {
    let max = row_max(row);
    buf.copy_from_slice(row);
    R::exp_shifted(buf, max);
    (max, buf.iter().map(|x| x.to_f64()).sum())
}

fn ce_forward<R: Real>(x: &[R], targets: &[u32], v: usize) -> Result<Vec<R>> {
    if targets.iter().any(|&t| t as usize >= v) {
        candle_core::bail!("cross-entropy target out of range for vocabulary {v}");
    }
    Ok(x.par_chunks(v)
        .zip(targets.par_iter())
        .map_init(
            || vec![R::ZERO; v],
            |buf, (row, &t)| {
                let (max, sum) = shifted_exps(row, buf);
                max.add(R::of(sum.ln())) - row[t as usize]
            },
        )
        .collect())
}

fn ce_backward<R: Real>(x: &[R], targets: &[u32], g: &[R], v: usize) -> Vec<R> {
    let mut out = vec![R::ZERO; x.len()];
    out.par_chunks_mut(v)
        .zip(x.par_chunks(v))
        .zip(targets.par_iter().zip(g.par_iter()))
        .for_each(|((o, row), (&t, &gr))| {
            // g · softmax(row) − g · onehot(t), with one exponential per logit.
            let (_, sum) = shifted_exps(row, o);
            let k = gr.to_f64() / sum;
            let k = R::of(k);
            for oj in o.iter_mut() {
                *oj = *oj * k;
            }
            o[t as usize] = o[t as usize] - gr;
        });
    out
}

struct CrossEntropy {
    v: usize,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = l1.shape().dims()[0];
        let CpuStorage::U32(t) = s2 else {
            candle_core::bail!("cross-entropy targets must be u32")
        };
        let t = contiguous(t, l2)?;
        let out = match s1 {
            CpuStorage::F32(x) => CpuStorage::F32(ce_forward(contiguous(x, l1)?, t, self.v)?),
            CpuStorage::F64(x) => CpuStorage::F64(ce_forward(contiguous(x, l1)?, t, self.v)?),
            _ => candle_core::bail!("cross-entropy supports f32 and f64 on CPU"),
        };
        Ok((out, Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = l1.shape().dims()[0];
        let loss = super::cuda_ops::cross_entropy_fwd((s1, l1), (s2, l2), self.v)?;
        Ok((loss, Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let d = logits.apply_op3_no_bwd(targets, &g, &CrossEntropyGrad { v: self.v })?;
        Ok((Some(d), None))
    }
}

struct CrossEntropyGrad {
    v: usize,
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-rows-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::U32(t) = s2 else {
            candle_core::bail!("cross-entropy targets must be u32")
        };
        let t = contiguous(t, l2)?;
        let out = match (s1, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(ce_backward(
                contiguous(x, l1)?,
                t,
                contiguous(g, l3)?,
                self.v,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(ce_backward(
                contiguous(x, l1)?,
                t,
                contiguous(g, l3)?,
                self.v,
            )),
            _ => candle_core::bail!("cross-entropy backward supports f32 and f64 on CPU"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dx = super::cuda_ops::cross_entropy_bwd((s1, l1), (s2, l2), (s3, l3), self.v)?;
        Ok((dx, l1.shape().clone()))
    }
}

/// Whether the fused ops ([`causal_softmax`], [`super::rms_norm::rms_norm`]) can run on this
/// tensor (CPU, f32/f64); otherwise callers use the composite ops.
pub fn fused_available(x: &Tensor) -> bool {
    FUSED.load(Ordering::Relaxed)
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
}

static FUSED: AtomicBool = AtomicBool::new(true);

/// Whether Wick's own CUDA kernels ([`super::cuda_ops`]) run for `x`: an f32 tensor on a GPU, the
/// fused ops on, and the kernels turned on (`WICK_CUDA_KERNELS=1`, or [`set_cuda_kernels`]).
/// Off by default until they have run on a GPU; then a CUDA tensor takes candle's composite ops.
pub fn cuda_kernels_on(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && FUSED.load(Ordering::Relaxed)
        && x.device().is_cuda()
        && x.dtype() == DType::F32
        && cuda_kernels_enabled()
}

/// 0: not read yet, 1: off, 2: on.
static CUDA_KERNELS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn cuda_kernels_enabled() -> bool {
    match CUDA_KERNELS.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("WICK_CUDA_KERNELS").as_deref() == Ok("1");
            CUDA_KERNELS.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Turns Wick's CUDA kernels on or off (process-wide), for the device check's comparisons.
pub fn set_cuda_kernels(enabled: bool) {
    CUDA_KERNELS.store(if enabled { 2 } else { 1 }, Ordering::Relaxed);
}

/// Turns the fused ops off (process-wide), so the benchmark can compare them with the composite
/// candle ops in the same run. On by default.
pub fn set_fused_ops(enabled: bool) {
    FUSED.store(enabled, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{D, Device};

    #[test]
    fn matches_composite_softmax_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 5, 5), &dev).unwrap();
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let w = Tensor::randn(0f64, 1.0, (2, 3, 5, 5), &dev).unwrap();
        let fused = causal_softmax(var.as_tensor(), 0.7).unwrap();
        let mask = crate::model::llama::causal_mask(5, DType::F64, &dev).unwrap();
        let composite = candle_nn::ops::softmax(
            &(var.as_tensor() * 0.7)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        let d = max_abs_diff(&fused, &composite);
        assert!(d < 1e-14, "forward differs by {d}");
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composite * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            g1.get(var.as_tensor()).unwrap(),
            g2.get(var.as_tensor()).unwrap(),
        );
        let d = max_abs_diff(a, b);
        assert!(d < 1e-14, "backward differs by {d}");
    }

    #[test]
    fn cross_entropy_rows_match_log_softmax_forward_and_backward() {
        let dev = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f64, 2.0, (6, 11), &dev).unwrap())
            .unwrap();
        let t = Tensor::new(&[0u32, 10, 3, 3, 7, 1], &dev).unwrap();
        let w = Tensor::new(&[1f64, 0.0, 2.0, 1.0, 0.5, 1.0], &dev).unwrap();
        let fused = cross_entropy_rows(x.as_tensor(), &t).unwrap();
        let reference = candle_nn::ops::log_softmax(x.as_tensor(), D::Minus1)
            .unwrap()
            .gather(&t.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 1e-13, "forward differs by {d}");
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = max_abs_diff(
            g1.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
        );
        assert!(d < 1e-13, "backward differs by {d}");
        assert!(
            cross_entropy_rows(
                x.as_tensor(),
                &Tensor::new(&[0u32, 11, 0, 0, 0, 0], &dev).unwrap()
            )
            .is_err()
        );
    }
}
