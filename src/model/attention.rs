//! Fused self-attention for the CPU, with its backward pass: RoPE on queries and keys, grouped-
//! query heads read in place, scaled scores, the causal (or an explicit additive) mask, softmax
//! and the value product, as one op per layer.
//!
//! In composite candle ops one layer's attention is about twenty graph nodes: the head transposes
//! and their contiguous copies, six passes of rotate-half RoPE for each of q and k, the `repeat_kv`
//! copies, the (B, H, T, T) scores, probabilities and their gradients, and the transpose back, each
//! single-threaded and each paying candle's gradient bookkeeping (a zero tensor plus an add per
//! node). This op takes the projections as they come out of their matmuls, (B, T, n·hd), and
//! returns the heads' outputs in the layout `o_proj` reads, (B, T, H·hd). Work is split into one
//! task per (row, head) forward and per (row, kv head) backward, each running its own small
//! products ([`super::gemm`]) over blocks of 64 queries; a causal block only multiplies the keys
//! it can see. Nothing of size (T, T) is kept: forward saves the log-sum-exp of each score row
//! and backward recomputes the probabilities of one block at a time from it (as FlashAttention
//! does), so a layer keeps B·H·T floats for backward instead of B·H·T² for each of several
//! intermediates.
//!
//! Backward, per head, with `P = softmax(S)`, `S = scale · Q̃ K̃ᵀ + mask` and `Y = P V`:
//! `dV = Pᵀ dY`, `dP = dY Vᵀ`, `dS = P ⊙ (dP − rowsum(dY ⊙ Y))`, `dQ̃ = scale · dS K̃`,
//! `dK̃ = scale · dSᵀ Q̃`; a kv head sums `dK̃` and `dV` over the query heads that share it, and the
//! rotation is undone on `dQ̃` and `dK̃` (the same rotation with −sin).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{Dst, View, matmul};
use super::ops::{Grads3, Real, contiguous, split_grads3};

/// Queries per block: the products of a block are (64 × keys) and (64 × head_dim).
const BLOCK: usize = 64;

/// The rotation of every row of a batch: position ids (B·T) into cos/sin tables of
/// `half = head_dim / 2` columns per position (the rotate-half convention of Hugging Face Llama).
#[derive(Debug, Clone)]
pub struct RopeRows {
    pub positions: Vec<u32>,
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    pub half: usize,
}

impl RopeRows {
    fn cs(&self, row: usize) -> (&[f32], &[f32]) {
        let p = self.positions[row] as usize * self.half;
        (&self.cos[p..p + self.half], &self.sin[p..p + self.half])
    }

    /// `dst[..hd] = rotate(src[..hd])` at batch row `row`.
    fn rotate<R: Real>(&self, row: usize, src: &[R], dst: &mut [R]) {
        let (c, s) = self.cs(row);
        let h = self.half;
        for j in 0..h {
            let (x1, x2) = (src[j], src[j + h]);
            let (cj, sj) = (R::of(c[j] as f64), R::of(s[j] as f64));
            dst[j] = x1 * cj - x2 * sj;
            dst[j + h] = (x2 * cj).add(x1 * sj);
        }
    }

    /// The transpose of [`RopeRows::rotate`]: rotation by the opposite angle.
    fn unrotate<R: Real>(&self, row: usize, src: &[R], dst: &mut [R]) {
        let (c, s) = self.cs(row);
        let h = self.half;
        for j in 0..h {
            let (g1, g2) = (src[j], src[j + h]);
            let (cj, sj) = (R::of(c[j] as f64), R::of(s[j] as f64));
            dst[j] = (g1 * cj).add(g2 * sj);
            dst[j + h] = g2 * cj - g1 * sj;
        }
    }
}

/// Which keys a query sees.
#[derive(Debug, Clone)]
pub enum AttnMask {
    /// Keys at or before the query's index.
    Causal,
    /// An additive mask (0 or −∞, or any finite bias) of `rows` × T × T values, `rows` being 1
    /// (shared by the batch) or B; nothing else is masked. Packed SFT rows pass their
    /// block-diagonal causal mask this way.
    Additive { values: Arc<Vec<f32>>, rows: usize },
}

/// The shape of one attention call and what it needs beyond q, k and v.
#[derive(Debug, Clone)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope: Arc<RopeRows>,
    pub mask: AttnMask,
}

/// Attention outputs (B, T, H·hd) of `q` (B, T, H·hd), `k` and `v` (B, T, KV·hd), un-rotated
/// projections, differentiable in all three. CPU, f32 or f64.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, shape: AttnShape) -> Result<Tensor> {
    let AttnShape {
        batch: b,
        seq: t,
        heads: h,
        kv_heads: kv,
        head_dim: hd,
        ..
    } = shape;
    if kv == 0 || h % kv != 0 || hd % 2 != 0 {
        candle_core::bail!("attention: {h} heads over {kv} kv heads of {hd} dims");
    }
    for (name, x, n) in [("q", q, h), ("k", k, kv), ("v", v, kv)] {
        if x.dims() != [b, t, n * hd] {
            candle_core::bail!(
                "attention: {name} is {:?}, expected {:?}",
                x.dims(),
                [b, t, n * hd]
            );
        }
    }
    if shape.rope.positions.len() != b * t || shape.rope.half * 2 != hd {
        candle_core::bail!("attention: rotation tables do not fit ({b}, {t}) rows of {hd} dims");
    }
    let max_pos = shape.rope.cos.len() / shape.rope.half;
    if shape.rope.positions.iter().any(|&p| p as usize >= max_pos) {
        candle_core::bail!("attention: a position is past the rotation table's {max_pos}");
    }
    if let AttnMask::Additive { values, rows } = &shape.mask
        && ((*rows != 1 && *rows != b) || values.len() != rows * t * t)
    {
        candle_core::bail!("attention: the mask does not cover ({b}, {t}, {t})");
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            shape,
            lse: Mutex::new(None),
        },
    )
}

struct Attention {
    shape: AttnShape,
    /// The log-sum-exp of every score row, (B, H, T), saved by forward for backward.
    lse: Mutex<Option<Arc<Vec<f64>>>>,
}

/// The blocks of a head's queries, with how many keys each block reads.
fn blocks(t: usize, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t).step_by(BLOCK).map(move |i0| {
        let m = BLOCK.min(t - i0);
        (i0, m, if causal { i0 + m } else { t })
    })
}

impl AttnShape {
    fn causal(&self) -> bool {
        matches!(self.mask, AttnMask::Causal)
    }

    /// Rotated rows of head `head` (of `n` heads) for batch row `bi`: (T, hd) row-major.
    fn rotated<R: Real>(&self, x: &[R], bi: usize, head: usize, n: usize, out: &mut [R]) {
        let (t, hd) = (self.seq, self.head_dim);
        for i in 0..t {
            let row = bi * t + i;
            let src = &x[row * n * hd + head * hd..][..hd];
            self.rope.rotate(row, src, &mut out[i * hd..(i + 1) * hd]);
        }
    }

    /// Adds the mask to the scores of block rows `i0..i0 + m` (keys `0..n`, row stride `ld`),
    /// turns them into probabilities `exp(s − lse)` and, when `lse` is `None`, computes and
    /// returns each row's log-sum-exp first.
    fn softmax_block<R: Real>(
        &self,
        s: &mut [R],
        ld: usize,
        bi: usize,
        (i0, m, n): (usize, usize, usize),
        lse: Option<&[f64]>,
    ) -> Vec<f64> {
        let t = self.seq;
        let mut out = Vec::with_capacity(m);
        for r in 0..m {
            let i = i0 + r;
            let row = &mut s[r * ld..r * ld + n];
            let visible = match &self.mask {
                AttnMask::Causal => i + 1,
                AttnMask::Additive { values, rows } => {
                    let mrow = if *rows == 1 { 0 } else { bi };
                    let mv = &values[(mrow * t + i) * t..][..n];
                    for (x, &mv) in row.iter_mut().zip(mv) {
                        *x = x.add(R::of(mv as f64));
                    }
                    n
                }
            };
            match lse {
                // Backward: the probabilities from the saved log-sum-exp.
                Some(l) => R::exp_shifted(&mut row[..visible], R::of(l[r])),
                None => {
                    let mut max = R::ZERO;
                    let mut any = false;
                    for &x in &row[..visible] {
                        if !any || x > max {
                            max = x;
                            any = true;
                        }
                    }
                    let finite = any && max.to_f64() > f64::NEG_INFINITY;
                    let mut sum = 0.0;
                    if finite {
                        R::exp_shifted(&mut row[..visible], max);
                        sum = row[..visible].iter().map(|x| x.to_f64()).sum::<f64>();
                    }
                    if sum > 0.0 {
                        let inv = R::of(1.0 / sum);
                        for x in &mut row[..visible] {
                            *x = *x * inv;
                        }
                        out.push(max.to_f64() + sum.ln());
                    } else {
                        // A row that sees no key at all: zero probabilities (lse = +∞).
                        row[..visible].fill(R::ZERO);
                        out.push(f64::INFINITY);
                    }
                }
            }
            for x in &mut row[visible..] {
                *x = R::ZERO;
            }
        }
        out
    }

    /// Sizes every pass uses: (B, T, H, KV, hd), the row widths of q and of k/v, the query heads
    /// per kv head, and whether the mask is plain causal.
    fn dims(
        &self,
    ) -> (
        (usize, usize, usize, usize, usize),
        (usize, usize),
        usize,
        bool,
    ) {
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        (
            (self.batch, self.seq, h, kv, hd),
            (h * hd, kv * hd),
            h / kv,
            self.causal(),
        )
    }

    fn forward<R: Real>(&self, q: &[R], k: &[R], v: &[R]) -> (Vec<R>, Vec<f64>) {
        let ((b, t, h, kv, hd), (qw, kw), rep, causal) = self.dims();
        let scale = R::of(1.0 / (hd as f64).sqrt());
        let mut y = vec![R::ZERO; b * t * qw];
        let mut lse = vec![0f64; b * h * t];
        let ydst = Dst::rows(&mut y, 0, qw);
        lse.par_chunks_mut(t).enumerate().for_each(|(task, lse)| {
            let (bi, head) = (task / h, task % h);
            let g = head / rep;
            let mut qr = vec![R::ZERO; t * hd];
            let mut kr = vec![R::ZERO; t * hd];
            self.rotated(q, bi, head, h, &mut qr);
            self.rotated(k, bi, g, kv, &mut kr);
            let mut s = vec![R::ZERO; BLOCK * t];
            for (i0, m, n) in blocks(t, causal) {
                let sdst = Dst::rows(&mut s, 0, n);
                // S = scale · Q̃[i0..i0+m] · K̃[..n]ᵀ
                unsafe {
                    matmul(
                        sdst,
                        View::rows(&qr, i0 * hd, hd),
                        View::rows_t(&kr, 0, hd),
                        (m, n, hd),
                        scale,
                        false,
                    )
                };
                let l = self.softmax_block(&mut s, n, bi, (i0, m, n), None);
                lse[i0..i0 + m].copy_from_slice(&l);
                // Y[rows i0.., head] = P · V[..n, g]
                unsafe {
                    matmul(
                        ydst.at((bi * t + i0) * qw + head * hd),
                        View::rows(&s, 0, n),
                        View::rows(v, bi * t * kw + g * hd, kw),
                        (m, hd, n),
                        R::ONE,
                        false,
                    )
                };
            }
        });
        (y, lse)
    }

    /// `dq`, `dk` and `dv` in one buffer: B·T·H·hd values, then B·T·KV·hd twice.
    fn backward<R: Real>(
        &self,
        (q, k, v): (&[R], &[R], &[R]),
        y: &[R],
        dy: &[R],
        lse: &[f64],
    ) -> Vec<R> {
        let ((b, t, h, kv, hd), (qw, kw), rep, causal) = self.dims();
        let scale = R::of(1.0 / (hd as f64).sqrt());
        let (nq, nk) = (b * t * qw, b * t * kw);
        let mut out = vec![R::ZERO; nq + 2 * nk];
        let dst = Dst::rows(&mut out, 0, 1);
        (0..b * kv).into_par_iter().for_each(|task| {
            let (bi, g) = (task / kv, task % kv);
            let mut kr = vec![R::ZERO; t * hd];
            self.rotated(k, bi, g, kv, &mut kr);
            let mut qr = vec![R::ZERO; t * hd];
            let mut dkr = vec![R::ZERO; t * hd];
            let mut dv = vec![R::ZERO; t * hd];
            let mut dqr = vec![R::ZERO; BLOCK * hd];
            let mut p = vec![R::ZERO; BLOCK * t];
            let mut dp = vec![R::ZERO; BLOCK * t];
            let vview = |off: usize| View::rows_t(v, bi * t * kw + g * hd + off, kw);
            for head in g * rep..(g + 1) * rep {
                self.rotated(q, bi, head, h, &mut qr);
                let lse = &lse[(bi * h + head) * t..][..t];
                let dy_off = bi * t * qw + head * hd;
                for (i0, m, n) in blocks(t, causal) {
                    // P = exp(scale · Q̃ K̃ᵀ + mask − lse), recomputed for this block.
                    unsafe {
                        matmul(
                            Dst::rows(&mut p, 0, n),
                            View::rows(&qr, i0 * hd, hd),
                            View::rows_t(&kr, 0, hd),
                            (m, n, hd),
                            scale,
                            false,
                        )
                    };
                    self.softmax_block(&mut p, n, bi, (i0, m, n), Some(&lse[i0..i0 + m]));
                    // dP = dY · Vᵀ
                    let dyv = View::rows(dy, dy_off + i0 * qw, qw);
                    unsafe {
                        matmul(
                            Dst::rows(&mut dp, 0, n),
                            dyv,
                            vview(0),
                            (m, n, hd),
                            R::ONE,
                            false,
                        )
                    };
                    // dS = P ⊙ (dP − rowsum(dY ⊙ Y)), in place of dP.
                    for r in 0..m {
                        let at = dy_off + (i0 + r) * qw;
                        let d = dy[at..at + hd]
                            .iter()
                            .zip(&y[at..at + hd])
                            .fold(R::ZERO, |a, (&g, &y)| a.add(g * y));
                        for (ds, &pv) in dp[r * n..(r + 1) * n].iter_mut().zip(&p[r * n..]) {
                            *ds = pv * (*ds - d);
                        }
                    }
                    // dV[..n] += Pᵀ · dY; dK̃[..n] += scale · dSᵀ · Q̃
                    unsafe {
                        matmul(
                            Dst::rows(&mut dv, 0, hd),
                            View::rows_t(&p, 0, n),
                            dyv,
                            (n, hd, m),
                            R::ONE,
                            true,
                        );
                        matmul(
                            Dst::rows(&mut dkr, 0, hd),
                            View::rows_t(&dp, 0, n),
                            View::rows(&qr, i0 * hd, hd),
                            (n, hd, m),
                            scale,
                            true,
                        );
                        // dQ̃ = scale · dS · K̃[..n]
                        matmul(
                            Dst::rows(&mut dqr, 0, hd),
                            View::rows(&dp, 0, n),
                            View::rows(&kr, 0, hd),
                            (m, hd, n),
                            scale,
                            false,
                        );
                    }
                    for r in 0..m {
                        let row = bi * t + i0 + r;
                        let at = row * qw + head * hd;
                        // SAFETY: query head `head` of row `row` belongs to this task alone.
                        let dq = unsafe { std::slice::from_raw_parts_mut(dst.elem(at), hd) };
                        self.rope.unrotate(row, &dqr[r * hd..(r + 1) * hd], dq);
                    }
                }
            }
            for i in 0..t {
                let row = bi * t + i;
                let at = row * kw + g * hd;
                // SAFETY: kv head `g` of row `row` belongs to this task alone.
                let (dk, dvo) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(dst.elem(nq + at), hd),
                        std::slice::from_raw_parts_mut(dst.elem(nq + nk + at), hd),
                    )
                };
                self.rope.unrotate(row, &dkr[i * hd..(i + 1) * hd], dk);
                dvo.copy_from_slice(&dv[i * hd..(i + 1) * hd]);
            }
        });
        out
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
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
        let (y, lse) = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                let (y, lse) =
                    self.shape
                        .forward(contiguous(q, l1)?, contiguous(k, l2)?, contiguous(v, l3)?);
                (CpuStorage::F32(y), lse)
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                let (y, lse) =
                    self.shape
                        .forward(contiguous(q, l1)?, contiguous(k, l2)?, contiguous(v, l3)?);
                (CpuStorage::F64(y), lse)
            }
            _ => candle_core::bail!("attention supports f32 and f64 on CPU, q, k and v alike"),
        };
        *self.lse.lock().expect("attention lse lock") = Some(Arc::new(lse));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<Grads3> {
        let Some(lse) = self.lse.lock().expect("attention lse lock").clone() else {
            candle_core::bail!("attention backward before forward");
        };
        let dy = grad_res.contiguous()?;
        let grads = q.apply_op3_no_bwd(
            k,
            v,
            &AttentionGrad {
                shape: self.shape.clone(),
                y: res.clone(),
                dy,
                lse,
            },
        )?;
        split_grads3(&grads, [q, k, v])
    }
}

/// The backward pass as an op of its own (q, k, v in; their three gradients out, flat).
struct AttentionGrad {
    shape: AttnShape,
    y: Tensor,
    dy: Tensor,
    lse: Arc<Vec<f64>>,
}

impl AttentionGrad {
    fn run<R: Real>(
        &self,
        q: &[R],
        k: &[R],
        v: &[R],
        cast: impl Fn(&CpuStorage) -> Option<&Vec<R>>,
    ) -> Result<Vec<R>> {
        let (ys, yl) = self.y.storage_and_layout();
        let (gs, gl) = self.dy.storage_and_layout();
        let (candle_core::Storage::Cpu(ys), candle_core::Storage::Cpu(gs)) = (&*ys, &*gs) else {
            candle_core::bail!("attention backward runs on the CPU");
        };
        let (Some(y), Some(dy)) = (cast(ys), cast(gs)) else {
            candle_core::bail!("attention backward: gradient dtype differs from the inputs'");
        };
        Ok(self.shape.backward(
            (q, k, v),
            contiguous(y, yl)?,
            contiguous(dy, gl)?,
            &self.lse,
        ))
    }
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
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
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(
                    contiguous(q, l1)?,
                    contiguous(k, l2)?,
                    contiguous(v, l3)?,
                    |s| match s {
                        CpuStorage::F32(x) => Some(x),
                        _ => None,
                    },
                )?)
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                CpuStorage::F64(self.run(
                    contiguous(q, l1)?,
                    contiguous(k, l2)?,
                    contiguous(v, l3)?,
                    |s| match s {
                        CpuStorage::F64(x) => Some(x),
                        _ => None,
                    },
                )?)
            }
            _ => candle_core::bail!("attention backward supports f32 and f64 on CPU"),
        };
        let n = l1.shape().elem_count() + 2 * l2.shape().elem_count();
        Ok((out, Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::model::rope::{Rope, apply_rotary};
    use crate::testing::max_abs_diff;
    use candle_core::{D, DType, Device, Var};

    const B: usize = 2;
    const T: usize = 70; // one full block of 64 queries and a partial one
    const H: usize = 4;
    const KV: usize = 2;
    const HD: usize = 8;

    fn rope() -> Rope {
        let cfg = ModelConfig::llama(16, H * HD, 32, 1, H, KV, 128);
        Rope::new(&cfg, 128, DType::F64, &Device::Cpu).unwrap()
    }

    /// The composite ops the model used before: heads, rotate-half RoPE, repeated kv heads,
    /// softmax(scale · q kᵀ + mask) v, heads back.
    fn composite(q: &Tensor, k: &Tensor, v: &Tensor, pos: &Tensor, mask: &Tensor) -> Tensor {
        let (cos, sin) = rope().cos_sin(pos).unwrap();
        let heads = |x: &Tensor, n: usize| {
            x.reshape((B, T, n, HD))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let repeat = |x: Tensor| {
            Tensor::cat(&[&x, &x], 2)
                .unwrap()
                .reshape((B, H, T, HD))
                .unwrap()
        };
        let q = apply_rotary(&heads(q, H), &cos, &sin).unwrap();
        let k = repeat(apply_rotary(&heads(k, KV), &cos, &sin).unwrap());
        let v = repeat(heads(v, KV));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (HD as f64).sqrt()).unwrap();
        let p = candle_nn::ops::softmax(&scores.broadcast_add(mask).unwrap(), D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((B, T, H * HD))
            .unwrap()
    }

    fn shape(pos: &Tensor, mask: AttnMask) -> AttnShape {
        AttnShape {
            batch: B,
            seq: T,
            heads: H,
            kv_heads: KV,
            head_dim: HD,
            rope: Arc::new(rope().rows(pos).unwrap()),
            mask,
        }
    }

    /// Forward and the gradients of q, k and v against the composite, in f64.
    fn check(pos: &Tensor, mask: AttnMask, additive: &Tensor) {
        let dev = Device::Cpu;
        let var = |n: usize| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (B, T, n * HD), &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (var(H), var(KV), var(KV));
        let probe = Tensor::randn(0f64, 1.0, (B, T, H * HD), &dev).unwrap();
        let fused = attention(&q, &k, &v, shape(pos, mask)).unwrap();
        let reference = composite(&q, &k, &v, pos, additive);
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 1e-13, "forward differs by {d}");
        let g1 = crate::testing::probe_grads(&fused, &probe);
        let g2 = crate::testing::probe_grads(&reference, &probe);
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (g1.get(x).unwrap(), g2.get(x).unwrap());
            let d = max_abs_diff(a, b);
            assert!(d < 1e-12, "d{name} differs by {d}");
            let norm: f64 = a.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 1e-3, "d{name} is zero");
        }
    }

    #[test]
    fn causal_gqa_matches_the_composite_forward_and_backward() {
        let dev = Device::Cpu;
        // Row 0 starts at position 0, row 1 at 9: RoPE reads each row's own positions.
        let pos: Vec<u32> = (0..B as u32)
            .flat_map(|b| (0..T as u32).map(move |i| i + 9 * b))
            .collect();
        let pos = Tensor::from_vec(pos, (B, T), &dev).unwrap();
        let causal = crate::model::llama::causal_mask(T, DType::F64, &dev).unwrap();
        check(&pos, AttnMask::Causal, &causal);
    }

    #[test]
    fn packed_block_diagonal_mask_matches_the_composite() {
        // Row 0 packs examples of 30 and 40 tokens, row 1 one of 70: positions restart per
        // example and each query sees only the earlier keys of its own example.
        let dev = Device::Cpu;
        let starts = [vec![0usize, 30], vec![0]];
        let mut pos = Vec::new();
        let mut mask = Vec::new();
        for s in &starts {
            let example = |i: usize| s.iter().rposition(|&st| st <= i).unwrap();
            for i in 0..T {
                pos.push((i - s[example(i)]) as u32);
                for j in 0..T {
                    let visible = j <= i && example(j) == example(i);
                    mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let pos = Tensor::from_vec(pos, (B, T), &dev).unwrap();
        let additive = Tensor::from_vec(mask.clone(), (B, 1, T, T), &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let m = AttnMask::Additive {
            values: Arc::new(mask),
            rows: B,
        };
        check(&pos, m, &additive);
    }

    #[test]
    fn a_shared_mask_and_bad_shapes() {
        let dev = Device::Cpu;
        let pos = crate::model::llama::sequential_positions(B, T, &dev).unwrap();
        // A finite bias shared by both rows (rows = 1): nothing but the bias is masked.
        let bias: Vec<f32> = (0..T * T).map(|i| ((i * 7) % 5) as f32 * 0.3).collect();
        let additive = Tensor::from_vec(bias.clone(), (1, 1, T, T), &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let m = AttnMask::Additive {
            values: Arc::new(bias),
            rows: 1,
        };
        check(&pos, m, &additive);
        let x = Tensor::zeros((B, T, H * HD), DType::F64, &dev).unwrap();
        let kv = Tensor::zeros((B, T, KV * HD), DType::F64, &dev).unwrap();
        assert!(attention(&x, &x, &kv, shape(&pos, AttnMask::Causal)).is_err());
        let mut wrong = shape(&pos, AttnMask::Causal);
        wrong.kv_heads = 3;
        assert!(attention(&x, &kv, &kv, wrong).is_err());
        let short = AttnMask::Additive {
            values: Arc::new(vec![0.0; T]),
            rows: 1,
        };
        assert!(attention(&x, &kv, &kv, shape(&pos, short)).is_err());
    }

    #[test]
    fn f32_agrees_with_f64() {
        let dev = Device::Cpu;
        let pos = crate::model::llama::sequential_positions(B, T, &dev).unwrap();
        let q = Tensor::randn(0f64, 1.0, (B, T, H * HD), &dev).unwrap();
        let k = Tensor::randn(0f64, 1.0, (B, T, KV * HD), &dev).unwrap();
        let v = Tensor::randn(0f64, 1.0, (B, T, KV * HD), &dev).unwrap();
        let y64 = attention(&q, &k, &v, shape(&pos, AttnMask::Causal)).unwrap();
        let f = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
        let y32 = attention(&f(&q), &f(&k), &f(&v), shape(&pos, AttnMask::Causal))
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(max_abs_diff(&y64, &y32) < 1e-5);
    }
}
