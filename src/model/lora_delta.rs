//! LoRA's contribution to a projection as one CPU op with its backward pass:
//! `Δy = s · (m ⊙ x) Aᵀ Bᵀ`, with `x` (rows, in), `A` (r, in), `B` (out, r), the scaling `s` and an
//! optional dropout mask `m` (0 or 1/(1−p) per element of `x`), and, when the frozen base weight
//! `W` (out, in) is given ([`lora_linear`]), the whole adapted projection `y = x Wᵀ + Δy`.
//!
//! As candle ops this was five graph nodes per projection (the dropout multiply, two thin
//! products, the scale, and the add into the base output), each with its own full-size output and
//! gradient bookkeeping; LoRA on all seven projections made that thirty-five a layer. Here the
//! rows are split into parallel tasks that run every product on their own rows ([`super::gemm`]),
//! masking a block of rows at a time in a task-local buffer; forward keeps the small
//! `h = (m ⊙ x) Aᵀ` (rows, r) for backward. Backward, with `g` = dy:
//!
//! - `dh = s · g B` (rows, r), `dx = g W + (dh A) ⊙ m` (the first term only with the base),
//! - `dA = dhᵀ (m ⊙ x)` (r, in), `dB = s · gᵀ h` (out, r), each a sum over rows, computed in
//!   column blocks so that tasks never share an output element.
//!
//! With the base inside, the frozen product, the adapter's output buffer and the add that joined
//! them (and, backward, the adapter's separate `dx` and the add of the two input gradients) are
//! one op writing one buffer each way. `W` gets no gradient.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use rayon::prelude::*;

use super::gemm::{Dst, View, matmul};
use super::ops::{Grads3, Real, contiguous};
use super::quantized::QuantWeight;

/// Rows per forward task and per `dx` task; columns per `dA` / `dB` task.
const ROWS: usize = 64;
const COLS: usize = 64;

/// `s · (m ⊙ x) Aᵀ Bᵀ` for `x` (rows, in), `a` (r, in), `b` (out, r); `mask` has rows·in values.
/// Differentiable in `x`, `a` and `b`. CPU, f32 or f64.
pub fn lora_delta(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    apply(x, None, a, b, scaling, mask)
}

/// The frozen base weight `W` (out, in) of an adapted projection, as [`lora_linear`] takes it.
#[derive(Clone, Copy)]
pub enum FrozenWeight<'a> {
    /// A plain weight of `x`'s dtype on the CPU.
    Dense(&'a Tensor),
    /// A quantised weight (QLoRA's, [`super::quantized`]), multiplied by the same kernel as
    /// [`super::quantized_linear`]; f32 inputs only.
    Quantized(&'a Arc<QuantWeight>),
}

/// `x Wᵀ + s · (m ⊙ x) Aᵀ Bᵀ`: a LoRA-adapted projection with its frozen base weight `w`, which
/// gets no gradient. CPU, f32 or f64 (f32 for a quantised `w`).
pub fn lora_linear(
    x: &Tensor,
    w: FrozenWeight<'_>,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    let base = match w {
        FrozenWeight::Dense(w) => {
            if w.dtype() != x.dtype() || !w.device().is_cpu() {
                candle_core::bail!(
                    "lora_linear: the base weight must be a CPU tensor of x's dtype"
                );
            }
            Base::Dense(w.contiguous()?)
        }
        FrozenWeight::Quantized(q) => {
            if x.dtype() != DType::F32 {
                candle_core::bail!("lora_linear: a quantised base takes f32 inputs only");
            }
            Base::Quant(q.clone())
        }
    };
    apply(x, Some(base), a, b, scaling, mask)
}

/// The frozen base weight as the op holds it.
enum Base {
    /// A plain weight of x's dtype, contiguous.
    Dense(Tensor),
    /// A quantised weight (f32 products).
    Quant(Arc<QuantWeight>),
}

impl Base {
    fn dims(&self) -> (usize, usize) {
        match self {
            Base::Dense(w) => w.dims2().unwrap_or((0, 0)),
            Base::Quant(q) => q.shape(),
        }
    }

    /// `x Wᵀ` (rows, out), or with `transposed`, `g W` (rows, in) for `g` (rows, out).
    fn product(
        &self,
        s: &CpuStorage,
        l: &Layout,
        (rows, d_in, out): (usize, usize, usize),
        transposed: bool,
    ) -> Result<CpuStorage> {
        match self {
            Base::Dense(w) => {
                let (ws, wl) = w.storage_and_layout();
                let Storage::Cpu(ws) = &*ws else {
                    candle_core::bail!("lora_linear: the base weight is not on the CPU");
                };
                // candle's own (multi-threaded) matmul.
                if transposed {
                    s.matmul(ws, (1, rows, d_in, out), l, wl)
                } else {
                    s.matmul(ws, (1, rows, out, d_in), l, &wl.transpose(0, 1)?)
                }
            }
            Base::Quant(q) => {
                let CpuStorage::F32(v) = s else {
                    candle_core::bail!("lora_linear: a quantised base takes f32 inputs only");
                };
                let p = super::quantized_linear::product(q, contiguous(v, l)?, rows, transposed);
                Ok(CpuStorage::F32(p))
            }
        }
    }
}

fn apply(
    x: &Tensor,
    base: Option<Base>,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    let (rows, d_in) = x.dims2()?;
    let (r, a_in) = a.dims2()?;
    let (b_out, b_r) = b.dims2()?;
    let w_dims = base.as_ref().map(Base::dims);
    if a_in != d_in || b_r != r || w_dims.is_some_and(|w| w != (b_out, d_in)) {
        candle_core::bail!(
            "lora_delta: x {:?}, W {:?}, A {:?}, B {:?} do not chain",
            x.dims(),
            w_dims,
            a.dims(),
            b.dims()
        );
    }
    if mask.as_ref().is_some_and(|m| m.len() != rows * d_in) {
        candle_core::bail!(
            "lora_delta: the dropout mask does not cover x {:?}",
            x.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &a.contiguous()?,
        &b.contiguous()?,
        LoraDelta {
            scaling,
            mask,
            base,
            h: Mutex::new(None),
        },
    )
}

struct LoraDelta {
    scaling: f64,
    mask: Option<Arc<Vec<f32>>>,
    /// The frozen base weight `W` (out, in), when the op is the whole projection.
    base: Option<Base>,
    /// `h = (m ⊙ x) Aᵀ`, (rows, r), saved by forward for backward (f64 for either dtype).
    h: Mutex<Option<Arc<Vec<f64>>>>,
}

/// Rows `r0..r0 + m` of `x` (width `d_in`) masked by `mask` into `buf`, or those rows of `x`
/// themselves without a mask (no copy).
fn masked_rows<'a, R: Real>(
    x: &'a [R],
    mask: Option<&[f32]>,
    (r0, m, d_in): (usize, usize, usize),
    buf: &'a mut Vec<R>,
) -> &'a [R] {
    let xs = &x[r0 * d_in..(r0 + m) * d_in];
    match mask {
        None => xs,
        Some(mk) => {
            buf.clear();
            let ms = &mk[r0 * d_in..(r0 + m) * d_in];
            buf.extend(xs.iter().zip(ms).map(|(&x, &m)| x * R::of(m as f64)));
            buf
        }
    }
}

/// The first row of each block of `ROWS` rows, as a parallel iterator.
fn row_blocks(rows: usize) -> impl ParallelIterator<Item = usize> {
    (0..rows.div_ceil(ROWS)).into_par_iter().map(|i| i * ROWS)
}

/// The sizes of one call: rows, in, r, out.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    d_in: usize,
    r: usize,
    out: usize,
}

impl Dims {
    /// From the shapes of x (rows, in), A (r, in) and B (out, r).
    fn of(x: &Shape, a: &Shape, b: &Shape) -> Result<Self> {
        let (rows, d_in) = x.dims2()?;
        let (r, _) = a.dims2()?;
        let (out, _) = b.dims2()?;
        Ok(Dims { rows, d_in, r, out })
    }
}

/// The CPU storage behind a storage guard.
fn cpu(s: &Storage) -> Result<&CpuStorage> {
    match s {
        Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!("lora_delta runs on the CPU"),
    }
}

impl LoraDelta {
    /// `y` (rows, out) and `h` (rows, r); `y` starts from `base`, the frozen product `x Wᵀ`,
    /// when given.
    fn forward<R: Real>(
        &self,
        x: &[R],
        base: Option<Vec<R>>,
        a: &[R],
        b: &[R],
        d: &Dims,
    ) -> (Vec<R>, Vec<R>) {
        let Dims { rows, d_in, r, out } = *d;
        let mask = self.mask.as_deref().map(|m| m.as_slice());
        let accumulate = base.is_some();
        let mut h = vec![R::ZERO; rows * r];
        let mut y = base.unwrap_or_else(|| vec![R::ZERO; rows * out]);
        let (hdst, ydst) = (Dst::rows(&mut h, 0, r), Dst::rows(&mut y, 0, out));
        let s = R::of(self.scaling);
        row_blocks(rows).for_each_init(Vec::new, |buf, r0| {
            let m = ROWS.min(rows - r0);
            let xd = masked_rows(x, mask, (r0, m, d_in), buf);
            // SAFETY: rows r0..r0+m of h and y belong to this task alone.
            unsafe {
                matmul(
                    hdst.at(r0 * r),
                    View::rows(xd, 0, d_in),
                    View::rows_t(a, 0, d_in),
                    (m, r, d_in),
                    R::ONE,
                    false,
                );
                let hs = std::slice::from_raw_parts(hdst.elem(r0 * r), m * r);
                matmul(
                    ydst.at(r0 * out),
                    View::rows(hs, 0, r),
                    View::rows_t(b, 0, r),
                    (m, out, r),
                    s,
                    accumulate,
                );
            }
        });
        (y, h)
    }

    /// `dx` (rows·in, when `want_dx`), `dA` (r·in) and `dB` (out·r); `dx` starts from `base`,
    /// the frozen product's input gradient `g W`, when given.
    #[allow(clippy::too_many_arguments)]
    fn backward<R: Real>(
        &self,
        x: &[R],
        want_dx: bool,
        base: Option<Vec<R>>,
        a: &[R],
        b: &[R],
        g: &[R],
        h: &[f64],
        d: &Dims,
    ) -> (Option<Vec<R>>, Vec<R>, Vec<R>) {
        let Dims { rows, d_in, r, out } = *d;
        let s = R::of(self.scaling);
        let mask = self.mask.as_deref().map(|m| m.as_slice());
        let h: Vec<R> = h.iter().map(|&v| R::of(v)).collect();
        let accumulate = base.is_some();
        let mut dx = match (want_dx, base) {
            (false, _) => Vec::new(),
            (true, Some(base)) => base,
            (true, None) => vec![R::ZERO; rows * d_in],
        };
        let dxdst = Dst::rows(&mut dx, 0, d_in);
        // dh = s · g B, then dx (+)= (dh A) ⊙ m, per block of rows.
        let mut dh = vec![R::ZERO; rows * r];
        let dhdst = Dst::rows(&mut dh, 0, r);
        row_blocks(rows).for_each_init(Vec::new, |tmp, r0| {
            let m = ROWS.min(rows - r0);
            // SAFETY: rows r0..r0+m of dh and dx belong to this task alone.
            unsafe {
                matmul(
                    dhdst.at(r0 * r),
                    View::rows(g, r0 * out, out),
                    View::rows(b, 0, r),
                    (m, r, out),
                    s,
                    false,
                );
                if !want_dx {
                    return;
                }
                let dhs = std::slice::from_raw_parts(dhdst.elem(r0 * r), m * r);
                match mask {
                    // Without a mask the adapter's part goes straight into dx.
                    None => matmul(
                        dxdst.at(r0 * d_in),
                        View::rows(dhs, 0, r),
                        View::rows(a, 0, d_in),
                        (m, d_in, r),
                        R::ONE,
                        accumulate,
                    ),
                    Some(mk) => {
                        tmp.clear();
                        tmp.resize(m * d_in, R::ZERO);
                        matmul(
                            Dst::rows(tmp, 0, d_in),
                            View::rows(dhs, 0, r),
                            View::rows(a, 0, d_in),
                            (m, d_in, r),
                            R::ONE,
                            false,
                        );
                        // Onto g W, or onto dx's zeros without a base.
                        let dxs = std::slice::from_raw_parts_mut(dxdst.elem(r0 * d_in), m * d_in);
                        let ms = &mk[r0 * d_in..(r0 + m) * d_in];
                        for ((v, &t), &mv) in dxs.iter_mut().zip(tmp.iter()).zip(ms) {
                            *v = v.add(t * R::of(mv as f64));
                        }
                    }
                }
            }
        });
        // dA[:, c0..c1] = dhᵀ · (m ⊙ x)[:, c0..c1], the masked columns gathered per task;
        // dB[o0..o1, :] = s · g[:, o0..o1]ᵀ · h.
        let mut da = vec![R::ZERO; r * d_in];
        let mut db = vec![R::ZERO; out * r];
        let (dadst, dbdst) = (Dst::rows(&mut da, 0, d_in), Dst::rows(&mut db, 0, r));
        let da_tasks = d_in.div_ceil(COLS);
        let db_tasks = out.div_ceil(COLS);
        (0..da_tasks + db_tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |cols, task| unsafe {
                // SAFETY: each task writes its own column block of dA or row block of dB.
                if task < da_tasks {
                    let c0 = task * COLS;
                    let wd = COLS.min(d_in - c0);
                    let xd = match mask {
                        None => View::rows(x, c0, d_in),
                        Some(mk) => {
                            cols.clear();
                            for row in 0..rows {
                                let i = row * d_in + c0;
                                cols.extend(
                                    x[i..i + wd]
                                        .iter()
                                        .zip(&mk[i..i + wd])
                                        .map(|(&x, &m)| x * R::of(m as f64)),
                                );
                            }
                            View::rows(cols, 0, wd)
                        }
                    };
                    matmul(
                        dadst.at(c0),
                        View::rows_t(&dh, 0, r),
                        xd,
                        (r, wd, rows),
                        R::ONE,
                        false,
                    );
                } else {
                    let o0 = (task - da_tasks) * COLS;
                    let wd = COLS.min(out - o0);
                    matmul(
                        dbdst.at(o0 * r),
                        View::rows_t(g, o0, out),
                        View::rows(&h, 0, r),
                        (wd, r, rows),
                        s,
                        false,
                    );
                }
            });
        (want_dx.then_some(dx), da, db)
    }
}

/// `body` with the slices of x, A and B, the frozen product's buffer where given (an owned
/// `Option<CpuStorage>`) and g's slice where given (with its layout), all of one float type.
macro_rules! dispatch {
    (@arm $v:ident, $x:ident, $a:ident, $b:ident, $l1:expr, $l2:expr, $l3:expr, $base:expr,
     $g:expr, |$xi:ident, $wi:ident, $ai:ident, $bi:ident, $gi:ident| $body:block) => {{
        let w = match $base {
            None => None,
            Some(CpuStorage::$v(w)) => Some(w),
            Some(_) => candle_core::bail!("lora_linear: x Wᵀ's dtype differs from x's"),
        };
        let g = match $g {
            None => None,
            Some((CpuStorage::$v(g), gl)) => Some(contiguous(g, gl)?),
            Some(_) => candle_core::bail!("lora_delta: dy's dtype differs from x's"),
        };
        let ($xi, $wi, $ai, $bi, $gi) = (
            contiguous($x, $l1)?,
            w,
            contiguous($a, $l2)?,
            contiguous($b, $l3)?,
            g,
        );
        $body
    }};
    ($s1:expr, $l1:expr, $base:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $g:expr,
     |$xi:ident, $wi:ident, $ai:ident, $bi:ident, $gi:ident| $body:block) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(b)) => dispatch!(@arm F32,
                x, a, b, $l1, $l2, $l3, $base, $g, |$xi, $wi, $ai, $bi, $gi| $body),
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(b)) => dispatch!(@arm F64,
                x, a, b, $l1, $l2, $l3, $base, $g, |$xi, $wi, $ai, $bi, $gi| $body),
            _ => candle_core::bail!("lora_delta supports f32 and f64 on CPU, all alike"),
        }
    };
}

impl CustomOp3 for LoraDelta {
    fn name(&self) -> &'static str {
        "lora-delta"
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
        let d = Dims::of(l1.shape(), l2.shape(), l3.shape())?;
        let product = match &self.base {
            None => None,
            Some(w) => Some(w.product(s1, l1, (d.rows, d.d_in, d.out), false)?),
        };
        let no_g: Option<(&CpuStorage, &Layout)> = None;
        let (y, h) = dispatch!(
            s1,
            l1,
            product,
            s2,
            l2,
            s3,
            l3,
            no_g,
            |x, product, a, b, _g| {
                let (y, h) = self.forward(x, product, a, b, &d);
                let h: Vec<f64> = h.iter().map(|&v| Real::to_f64(v)).collect();
                Ok::<_, candle_core::Error>((WithDType::to_cpu_storage_owned(y), h))
            }
        )?;
        *self.h.lock().expect("lora h lock") = Some(Arc::new(h));
        Ok((y, Shape::from((d.rows, d.out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<Grads3> {
        let Some(h) = self.h.lock().expect("lora h lock").clone() else {
            candle_core::bail!("lora_delta backward before forward");
        };
        let d = Dims::of(x.shape(), a.shape(), b.shape())?;
        // x's gradient only where something upstream learns from it (not under the first
        // layer, whose input comes from a frozen embedding).
        let want_dx = x.track_op();
        let g = grad_res.contiguous()?;
        let (dev, x_shape, a_shape, b_shape) = (x.device(), x.shape(), a.shape(), b.shape());
        let ((xs, l1), (as_, l2), (bs, l3)) = (
            x.storage_and_layout(),
            a.storage_and_layout(),
            b.storage_and_layout(),
        );
        let (gs, gl) = g.storage_and_layout();
        let (s1, s2, s3, gs) = (cpu(&xs)?, cpu(&as_)?, cpu(&bs)?, cpu(&gs)?);
        // The frozen product's dx = g W.
        let product = match &self.base {
            Some(w) if want_dx => Some(w.product(gs, gl, (d.rows, d.d_in, d.out), true)?),
            _ => None,
        };
        let g = Some((gs, gl));
        let (dx, da, db) = dispatch!(s1, l1, product, s2, l2, s3, l3, g, |x, product, a, b, g| {
            let g = g.expect("dy given");
            let (dx, da, db) = self.backward(x, want_dx, product, a, b, g, &h, &d);
            Ok::<_, candle_core::Error>((
                dx.map(|dx| Tensor::from_vec(dx, x_shape, dev))
                    .transpose()?,
                Tensor::from_vec(da, a_shape, dev)?,
                Tensor::from_vec(db, b_shape, dev)?,
            ))
        })?;
        Ok((dx, Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, probe_grads};
    use candle_core::{Device, Var};

    /// Against the composite `s · ((m ⊙ x) Aᵀ) Bᵀ` (plus `x Wᵀ` with `base`: [`lora_linear`]),
    /// forward and every gradient, in f64; 150 rows (tasks of 64, the last partial) and widths
    /// that are not multiples of 64. The base weight gets no gradient.
    fn check(mask: bool, base: bool) {
        let dev = Device::Cpu;
        let (rows, d_in, r, out) = (150, 70, 5, 90);
        let var = |shape: (usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (x, a, b) = (var((rows, d_in)), var((r, d_in)), var((out, r)));
        let w = Tensor::randn(0f64, 1.0, (out, d_in), &dev).unwrap();
        let m: Option<Arc<Vec<f32>>> = mask.then(|| {
            Arc::new(
                (0..rows * d_in)
                    .map(|i| if i % 7 == 3 { 0.0 } else { 1.25 })
                    .collect(),
            )
        });
        let fused = match base {
            true => lora_linear(&x, FrozenWeight::Dense(&w), &a, &b, 0.75, m.clone()).unwrap(),
            false => lora_delta(&x, &a, &b, 0.75, m.clone()).unwrap(),
        };
        let xd = match &m {
            Some(m) => {
                let mt = Tensor::from_vec(m.to_vec(), (rows, d_in), &dev)
                    .unwrap()
                    .to_dtype(candle_core::DType::F64)
                    .unwrap();
                (x.as_tensor() * mt).unwrap()
            }
            None => x.as_tensor().clone(),
        };
        let delta = (xd
            .matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap()
            * 0.75)
            .unwrap();
        let reference = match base {
            true => (x.matmul(&w.t().unwrap()).unwrap() + delta).unwrap(),
            false => delta,
        };
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 1e-12, "forward differs by {d}");
        let probe = Tensor::randn(0f64, 1.0, (rows, out), &dev).unwrap();
        let (g1, g2) = (probe_grads(&fused, &probe), probe_grads(&reference, &probe));
        let of = [
            ("x", x.as_tensor()),
            ("A", a.as_tensor()),
            ("B", b.as_tensor()),
        ];
        crate::testing::assert_same_grads(&g1, &g2, &of, 1e-11);
        assert!(g1.get(&w).is_none(), "the frozen base gets no gradient");
    }

    #[test]
    fn matches_the_composite_with_and_without_dropout() {
        check(true, false);
        check(false, false);
    }

    #[test]
    fn with_the_base_matches_frozen_product_plus_adapter() {
        check(true, true);
        check(false, true);
    }

    /// f32, as training runs it: `fused(x, A, B, mask)` against `separate(x, A, B, mask)`, the
    /// base product and the adapter as separate ops, forward and the gradients of x, A and B
    /// equal to f32 rounding (relative 1e-5), with a dropout mask.
    fn check_f32_against_separate(
        what: &str,
        fused: impl Fn(&Tensor, &Tensor, &Tensor, Arc<Vec<f32>>) -> Result<Tensor>,
        separate: impl Fn(&Tensor, &Tensor, &Tensor, Arc<Vec<f32>>) -> Result<Tensor>,
        (d_in, out): (usize, usize),
    ) {
        let dev = Device::Cpu;
        let (rows, r) = (150, 8);
        let var = |shape: (usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (x, a, b) = (var((rows, d_in)), var((r, d_in)), var((out, r)));
        let m = Arc::new(
            (0..rows * d_in)
                .map(|i| if i % 4 == 2 { 0.0 } else { 4.0 / 3.0 })
                .collect::<Vec<f32>>(),
        );
        let y = fused(&x, &a, &b, m.clone()).unwrap();
        let y_ref = separate(&x, &a, &b, m).unwrap();
        let scale = crate::testing::max_abs(&y_ref);
        let d = max_abs_diff(&y, &y_ref);
        assert!(d < 1e-5 * scale, "{what}: forward differs by {d}");
        let probe = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
        let (g1, g2) = (probe_grads(&y, &probe), probe_grads(&y_ref, &probe));
        for (name, t) in [("x", &x), ("A", &a), ("B", &b)] {
            let (p, q) = (g1.get(t).unwrap(), g2.get(t).unwrap());
            let d = max_abs_diff(p, q);
            let scale = crate::testing::max_abs(q);
            assert!(d < 1e-5 * scale, "{what}: d{name} differs by {d}");
        }
    }

    #[test]
    fn with_the_base_in_f32_matches_the_separate_ops() {
        let w = Tensor::randn(0f32, 1.0, (200, 96), &Device::Cpu).unwrap();
        check_f32_against_separate(
            "dense",
            |x, a, b, m| lora_linear(x, FrozenWeight::Dense(&w), a, b, 2.0, Some(m)),
            |x, a, b, m| {
                super::super::frozen::frozen_matmul(x, &w)? + lora_delta(x, a, b, 2.0, Some(m))?
            },
            (96, 200),
        );
    }

    /// The quantised base (NF4 and int8, QLoRA's) likewise, against the quantised product.
    #[test]
    fn with_a_quantised_base_matches_the_separate_ops() {
        use super::super::quantized_linear::quantized_linear;
        use crate::spec::Quantization;
        let (d_in, out) = (96, 130);
        let w: Vec<f32> = (0..out * d_in)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
            .collect();
        for kind in [Quantization::Nf4, Quantization::Int8] {
            let q = Arc::new(QuantWeight::quantize(&w, (out, d_in), kind, true));
            check_f32_against_separate(
                &format!("{kind:?}"),
                |x, a, b, m| lora_linear(x, FrozenWeight::Quantized(&q), a, b, 2.0, Some(m)),
                |x, a, b, m| quantized_linear(x, &q)? + lora_delta(x, a, b, 2.0, Some(m))?,
                (d_in, out),
            );
        }
    }

    #[test]
    fn shapes_that_do_not_chain_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 6), candle_core::DType::F32, &dev).unwrap();
        let a = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(lora_delta(&x, &a, &b, 1.0, None).is_err());
        let a = Tensor::zeros((2, 6), candle_core::DType::F32, &dev).unwrap();
        assert!(lora_delta(&x, &a, &b, 1.0, Some(Arc::new(vec![1.0; 5]))).is_err());
        let b = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 6), candle_core::DType::F32, &dev).unwrap();
        assert!(
            lora_linear(&x, FrozenWeight::Dense(&w), &a, &b, 1.0, None).is_err(),
            "W (4, 6) with B (3, 2)"
        );
        let w = Tensor::zeros((3, 6), candle_core::DType::F64, &dev).unwrap();
        assert!(
            lora_linear(&x, FrozenWeight::Dense(&w), &a, &b, 1.0, None).is_err(),
            "W of another dtype"
        );
    }
}
