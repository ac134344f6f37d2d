//! LoRA's contribution to a projection as one CPU op with its backward pass:
//! `Δy = s · (m ⊙ x) Aᵀ Bᵀ`, with `x` (rows, in), `A` (r, in), `B` (out, r), the scaling `s` and an
//! optional dropout mask `m` (0 or 1/(1−p) per element of `x`).
//!
//! As candle ops this was five graph nodes per projection (the dropout multiply, two thin
//! products, the scale, and the add into the base output), each with its own full-size output and
//! gradient bookkeeping; LoRA on all seven projections made that thirty-five a layer. Here the
//! rows are split into parallel tasks that run both products on their own rows ([`super::gemm`]);
//! forward keeps the small `h = (m ⊙ x) Aᵀ` (rows, r) for backward. Backward, with `g` = dΔy:
//!
//! - `dh = s · g B` (rows, r), `dx = (dh A) ⊙ m`,
//! - `dA = dhᵀ (m ⊙ x)` (r, in), `dB = s · gᵀ h` (out, r), each a sum over rows, computed in
//!   column blocks so that tasks never share an output element.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{Dst, View, matmul};
use super::ops::{Grads3, Real, contiguous, split_grads3};

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
    let (rows, d_in) = x.dims2()?;
    let (r, a_in) = a.dims2()?;
    let (_, b_r) = b.dims2()?;
    if a_in != d_in || b_r != r {
        candle_core::bail!(
            "lora_delta: x {:?}, A {:?}, B {:?} do not chain",
            x.dims(),
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
            h: Mutex::new(None),
        },
    )
}

struct LoraDelta {
    scaling: f64,
    mask: Option<Arc<Vec<f32>>>,
    /// `h = (m ⊙ x) Aᵀ`, (rows, r), saved by forward for backward (f64 for either dtype).
    h: Mutex<Option<Arc<Vec<f64>>>>,
}

/// `m ⊙ x`, or `x` itself without a mask (no copy).
fn masked<'a, R: Real>(x: &'a [R], mask: Option<&[f32]>) -> Cow<'a, [R]> {
    match mask {
        None => Cow::Borrowed(x),
        Some(m) => Cow::Owned(
            x.par_iter()
                .zip(m.par_iter())
                .map(|(&x, &m)| x * R::of(m as f64))
                .collect(),
        ),
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
    /// From the layouts of x (rows, in), A (r, in) and B (out, r).
    fn of(x: &Layout, a: &Layout, b: &Layout) -> Result<Self> {
        let (rows, d_in) = x.shape().dims2()?;
        let (r, _) = a.shape().dims2()?;
        let (out, _) = b.shape().dims2()?;
        Ok(Dims { rows, d_in, r, out })
    }
}

impl LoraDelta {
    fn forward<R: Real>(&self, x: &[R], a: &[R], b: &[R], d: &Dims) -> (Vec<R>, Vec<R>) {
        let Dims { rows, d_in, r, out } = *d;
        let xd = masked(x, self.mask.as_deref().map(|m| m.as_slice()));
        let mut h = vec![R::ZERO; rows * r];
        let mut y = vec![R::ZERO; rows * out];
        let (hdst, ydst) = (Dst::rows(&mut h, 0, r), Dst::rows(&mut y, 0, out));
        let s = R::of(self.scaling);
        row_blocks(rows).for_each(|r0| {
            let m = ROWS.min(rows - r0);
            // SAFETY: rows r0..r0+m of h and y belong to this task alone.
            unsafe {
                matmul(
                    hdst.at(r0 * r),
                    View::rows(&xd, r0 * d_in, d_in),
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
                    false,
                );
            }
        });
        (y, h)
    }

    /// `dx` (rows·in), then `dA` (r·in), then `dB` (out·r), in one buffer.
    fn backward<R: Real>(&self, x: &[R], a: &[R], b: &[R], g: &[R], h: &[f64], d: &Dims) -> Vec<R> {
        let Dims { rows, d_in, r, out } = *d;
        let s = R::of(self.scaling);
        let mask = self.mask.as_deref().map(|m| m.as_slice());
        let h: Vec<R> = h.iter().map(|&v| R::of(v)).collect();
        let (nx, na) = (rows * d_in, r * d_in);
        let mut buf = vec![R::ZERO; nx + na + out * r];
        let dst = Dst::rows(&mut buf, 0, 1);
        // dh = s · g B, then dx = (dh A) ⊙ m, per block of rows.
        let mut dh = vec![R::ZERO; rows * r];
        let dhdst = Dst::rows(&mut dh, 0, r);
        row_blocks(rows).for_each(|r0| {
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
                let dhs = std::slice::from_raw_parts(dhdst.elem(r0 * r), m * r);
                let dx = Dst::rows(
                    std::slice::from_raw_parts_mut(dst.elem(r0 * d_in), m * d_in),
                    0,
                    d_in,
                );
                matmul(
                    dx,
                    View::rows(dhs, 0, r),
                    View::rows(a, 0, d_in),
                    (m, d_in, r),
                    R::ONE,
                    false,
                );
                if let Some(mk) = mask {
                    let dxs = std::slice::from_raw_parts_mut(dst.elem(r0 * d_in), m * d_in);
                    for (v, &mv) in dxs.iter_mut().zip(&mk[r0 * d_in..(r0 + m) * d_in]) {
                        *v = *v * R::of(mv as f64);
                    }
                }
            }
        });
        let xd = masked(x, mask);
        // dA[:, c0..c1] = dhᵀ · xd[:, c0..c1]; dB[o0..o1, :] = s · g[:, o0..o1]ᵀ · h.
        let da_tasks = d_in.div_ceil(COLS);
        let db_tasks = out.div_ceil(COLS);
        (0..da_tasks + db_tasks)
            .into_par_iter()
            .for_each(|task| unsafe {
                // SAFETY: each task writes its own column block of dA or row block of dB.
                if task < da_tasks {
                    let c0 = task * COLS;
                    let w = COLS.min(d_in - c0);
                    matmul(
                        Dst::rows(std::slice::from_raw_parts_mut(dst.elem(nx), na), c0, d_in),
                        View::rows_t(&dh, 0, r),
                        View::rows(&xd, c0, d_in),
                        (r, w, rows),
                        R::ONE,
                        false,
                    );
                } else {
                    let o0 = (task - da_tasks) * COLS;
                    let w = COLS.min(out - o0);
                    matmul(
                        Dst::rows(
                            std::slice::from_raw_parts_mut(dst.elem(nx + na), out * r),
                            o0 * r,
                            r,
                        ),
                        View::rows_t(g, o0, out),
                        View::rows(&h, 0, r),
                        (w, r, rows),
                        s,
                        false,
                    );
                }
            });
        buf
    }
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
        let d = Dims::of(l1, l2, l3)?;
        let Dims { rows, out, .. } = d;
        let (y, h) = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let (y, h) = self.forward(
                    contiguous(x, l1)?,
                    contiguous(a, l2)?,
                    contiguous(b, l3)?,
                    &d,
                );
                (CpuStorage::F32(y), h.iter().map(|&v| v as f64).collect())
            }
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let (y, h) = self.forward(
                    contiguous(x, l1)?,
                    contiguous(a, l2)?,
                    contiguous(b, l3)?,
                    &d,
                );
                (CpuStorage::F64(y), h)
            }
            _ => candle_core::bail!("lora_delta supports f32 and f64 on CPU, all three alike"),
        };
        *self.h.lock().expect("lora h lock") = Some(Arc::new(h));
        Ok((y, Shape::from((rows, out))))
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
        let grads = x.apply_op3_no_bwd(
            a,
            b,
            &LoraDeltaGrad {
                op: LoraDelta {
                    scaling: self.scaling,
                    mask: self.mask.clone(),
                    h: Mutex::new(None),
                },
                g: grad_res.contiguous()?,
                h,
            },
        )?;
        split_grads3(&grads, [x, a, b])
    }
}

/// The backward pass as an op of its own: (x, A, B) in, their gradients out, flat.
struct LoraDeltaGrad {
    op: LoraDelta,
    g: Tensor,
    h: Arc<Vec<f64>>,
}

impl CustomOp3 for LoraDeltaGrad {
    fn name(&self) -> &'static str {
        "lora-delta-grad"
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
        let d = Dims::of(l1, l2, l3)?;
        let Dims { rows, d_in, r, out } = d;
        let (gs, gl) = self.g.storage_and_layout();
        let candle_core::Storage::Cpu(gs) = &*gs else {
            candle_core::bail!("lora_delta backward runs on the CPU");
        };
        let out_buf = match (s1, s2, s3, gs) {
            (CpuStorage::F32(x), CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(g)) => {
                CpuStorage::F32(self.op.backward(
                    contiguous(x, l1)?,
                    contiguous(a, l2)?,
                    contiguous(b, l3)?,
                    contiguous(g, gl)?,
                    &self.h,
                    &d,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(g)) => {
                CpuStorage::F64(self.op.backward(
                    contiguous(x, l1)?,
                    contiguous(a, l2)?,
                    contiguous(b, l3)?,
                    contiguous(g, gl)?,
                    &self.h,
                    &d,
                ))
            }
            _ => candle_core::bail!("lora_delta backward supports f32 and f64 on CPU"),
        };
        Ok((out_buf, Shape::from(rows * d_in + r * d_in + out * r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, probe_grads};
    use candle_core::{Device, Var};

    /// Against the composite `s · ((m ⊙ x) Aᵀ) Bᵀ`, forward and every gradient, in f64;
    /// 150 rows (tasks of 64, the last partial) and widths that are not multiples of 64.
    fn check(mask: bool) {
        let dev = Device::Cpu;
        let (rows, d_in, r, out) = (150, 70, 5, 90);
        let var = |shape: (usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (x, a, b) = (var((rows, d_in)), var((r, d_in)), var((out, r)));
        let m: Option<Arc<Vec<f32>>> = mask.then(|| {
            Arc::new(
                (0..rows * d_in)
                    .map(|i| if i % 7 == 3 { 0.0 } else { 1.25 })
                    .collect(),
            )
        });
        let fused = lora_delta(&x, &a, &b, 0.75, m.clone()).unwrap();
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
        let reference = (xd
            .matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap()
            * 0.75)
            .unwrap();
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
    }

    #[test]
    fn matches_the_composite_with_and_without_dropout() {
        check(true);
        check(false);
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
    }
}
