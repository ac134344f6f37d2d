//! The LM head's product and the token cross-entropy in one op, for a frozen head (LoRA's and
//! QLoRA's): the logits are made a block of rows at a time and never kept. A model with a large
//! vocabulary otherwise holds (N, V) logits for backward and (N, V) gradients of them (at
//! Qwen2.5's 151,936 tokens and 1,024 positions, 0.6 GB each); here the peak is one block.
//!
//! Only the rows that count are computed (a label weight other than 0: an SFT row's assistant
//! tokens, not its prompt); the others get a loss of 0. When the hidden states carry a graph,
//! forward also computes each counted row's gradient direction, `(softmax − onehot(target)) · W`,
//! while the block's logits are at hand, and backward scales it by the incoming gradient: the
//! same products the unfused path runs, with nothing recomputed.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{Dst, View, matmul};
use super::ops::{Real, contiguous};

/// Logit values per block (rows × vocabulary): 32 MiB of f32.
pub const BLOCK_VALUES: usize = 8 << 20;

/// What [`frozen_head_cross_entropy`] gives.
pub struct HeadTerms {
    /// (N): −log softmax(h·Wᵀ)[target] per row, 0 where the row does not count;
    /// differentiable in `h`.
    pub per_token: Tensor,
    /// The argmax of each counted row's logits (the first of equal ones), `u32::MAX` elsewhere.
    pub best: Vec<u32>,
}

/// Cross-entropy of the logits `h · Wᵀ` for hidden states `h` (N, C) and the frozen head `w`
/// (V, C), against `targets` (N), over the rows where `counts` is true. CPU, f32.
pub fn frozen_head_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    targets: &[u32],
    counts: &[bool],
) -> Result<HeadTerms> {
    head_cross_entropy_in_blocks(h, w, targets, counts, BLOCK_VALUES)
}

/// [`frozen_head_cross_entropy`] with blocks of at most `block_values` logits.
fn head_cross_entropy_in_blocks(
    h: &Tensor,
    w: &Tensor,
    targets: &[u32],
    counts: &[bool],
    block_values: usize,
) -> Result<HeadTerms> {
    let (n, c) = h.dims2()?;
    let (v, wc) = w.dims2()?;
    if wc != c || targets.len() != n || counts.len() != n {
        candle_core::bail!(
            "head loss: h {:?}, w {:?}, {} targets, {} flags",
            h.dims(),
            w.dims(),
            targets.len(),
            counts.len()
        );
    }
    if targets.iter().any(|&t| t as usize >= v) {
        candle_core::bail!("cross-entropy target out of range for vocabulary {v}");
    }
    let rows: Vec<usize> = (0..n).filter(|&i| counts[i]).collect();
    let best = Arc::new(Mutex::new(Vec::new()));
    let per_token = h.contiguous()?.apply_op1(HeadCe {
        w: w.contiguous()?,
        targets: targets.to_vec(),
        rows,
        block_rows: (block_values / v.max(1)).max(1),
        directions: h.track_op().then(|| Arc::new(Mutex::new(Vec::new()))),
        best: best.clone(),
    })?;
    let best = std::mem::take(&mut *best.lock().expect("head loss lock"));
    Ok(HeadTerms { per_token, best })
}

struct HeadCe {
    w: Tensor,
    targets: Vec<u32>,
    /// The counted rows, in order.
    rows: Vec<usize>,
    /// Rows per block of logits.
    block_rows: usize,
    /// With a graph: each counted row's `(softmax − onehot) · W` (rows × C), filled by forward.
    directions: Option<Arc<Mutex<Vec<f32>>>>,
    best: Arc<Mutex<Vec<u32>>>,
}

/// One row of logits: its loss against `t`, its argmax, and with `grad`, `softmax − onehot(t)`
/// written over the row.
fn row_terms(row: &mut [f32], t: usize, grad: bool) -> (f32, u32) {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    let (max, target) = (row[best], row[t]);
    f32::exp_shifted(row, max);
    // Summed in f64, as the unfused op sums.
    let sum: f64 = row.iter().map(|&x| x as f64).sum();
    let loss = max.add(f32::of(sum.ln())) - target;
    if grad {
        let k = f32::of(1.0 / sum);
        for x in row.iter_mut() {
            *x = *x * k;
        }
        row[t] -= 1.0;
    }
    (loss, best as u32)
}

/// Rows of the head per block of the vocabulary: one task's share of a product, and the rows a
/// bf16 head widens to f32 at a time.
const VOCAB_BLOCK: usize = 2048;
/// Groups of vocabulary blocks whose partial sums `(…) · W` adds, in a fixed order (so the sums
/// do not depend on how rayon splits the work).
const SUM_GROUPS: usize = 8;

/// A head (V, C) on the CPU, f32 or bf16 (a QLoRA base keeps its embeddings in the file's
/// dtype), multiplied a block of its rows at a time.
struct HeadWeight<G> {
    /// The tensor's storage, read-locked for as long as the head is used.
    storage: G,
    /// Where the head's values start in the storage.
    start: usize,
    v: usize,
    c: usize,
}

impl HeadWeight<()> {
    fn of(w: &Tensor) -> Result<HeadWeight<impl Deref<Target = candle_core::Storage> + Sync + '_>> {
        let (v, c) = w.dims2()?;
        let (storage, layout) = w.storage_and_layout();
        let Some((start, _)) = layout.contiguous_offsets() else {
            candle_core::bail!("head loss: the head must be contiguous");
        };
        if !matches!(
            &*storage,
            candle_core::Storage::Cpu(CpuStorage::F32(_) | CpuStorage::BF16(_))
        ) {
            candle_core::bail!("head loss: an f32 or bf16 head on the CPU");
        }
        Ok(HeadWeight {
            storage,
            start,
            v,
            c,
        })
    }
}

impl<G: Deref<Target = candle_core::Storage> + Sync> HeadWeight<G> {
    /// Rows `v0 .. v0 + nb` as f32: borrowed, or widened from bf16.
    fn block(&self, v0: usize, nb: usize) -> std::borrow::Cow<'_, [f32]> {
        let range = self.start + v0 * self.c..self.start + (v0 + nb) * self.c;
        match &*self.storage {
            candle_core::Storage::Cpu(CpuStorage::F32(x)) => std::borrow::Cow::Borrowed(&x[range]),
            candle_core::Storage::Cpu(CpuStorage::BF16(x)) => {
                std::borrow::Cow::Owned(x[range].iter().map(|b| b.to_f32()).collect())
            }
            _ => unreachable!("HeadWeight::of admits f32 and bf16 CPU storage only"),
        }
    }

    fn blocks(&self) -> usize {
        self.v.div_ceil(VOCAB_BLOCK)
    }

    /// `hb (m × C) · Wᵀ`: the (m × V) logits, vocabulary blocks in parallel.
    fn logits(&self, hb: &[f32], m: usize) -> Vec<f32> {
        let (v, c) = (self.v, self.c);
        let mut z = vec![0f32; m * v];
        let dst = Dst::rows(&mut z, 0, v);
        (0..self.blocks()).into_par_iter().for_each(|bi| {
            let v0 = bi * VOCAB_BLOCK;
            let nb = VOCAB_BLOCK.min(v - v0);
            let w = self.block(v0, nb);
            // SAFETY: this task alone writes columns v0..v0+nb of the logits.
            unsafe {
                matmul(
                    dst.at(v0),
                    View::rows(hb, 0, c),
                    View::rows_t(&w, 0, c),
                    (m, nb, c),
                    1.0,
                    false,
                );
            }
        });
        z
    }

    /// `e (m × V) · W`: (m × C), summed over the vocabulary in [`SUM_GROUPS`] fixed groups of
    /// blocks, each group in parallel, the groups added in order.
    fn times(&self, e: &[f32], m: usize) -> Vec<f32> {
        let (v, c) = (self.v, self.c);
        let per_group = self.blocks().div_ceil(SUM_GROUPS).max(1);
        let partials: Vec<Vec<f32>> = (0..SUM_GROUPS)
            .into_par_iter()
            .map(|g| {
                let mut part = vec![0f32; m * c];
                let dst = Dst::rows(&mut part, 0, c);
                let first = g * per_group;
                for bi in first..(first + per_group).min(self.blocks()) {
                    let v0 = bi * VOCAB_BLOCK;
                    let nb = VOCAB_BLOCK.min(v - v0);
                    let w = self.block(v0, nb);
                    // SAFETY: `part` is this task's own.
                    unsafe {
                        matmul(
                            dst,
                            View::rows(e, v0, v),
                            View::rows(&w, 0, c),
                            (m, c, nb),
                            1.0,
                            bi > first,
                        );
                    }
                }
                part
            })
            .collect();
        let mut out = vec![0f32; m * c];
        for part in partials {
            for (o, p) in out.iter_mut().zip(part) {
                *o += p;
            }
        }
        out
    }
}

/// The logits `h (N, C) · Wᵀ` of a frozen f32 or bf16 head `w` (V, C), (N, V) f32, no gradient:
/// what the LM head gives where the head is kept in bf16 (a QLoRA base's), for generation.
pub fn head_logits(h: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, _) = h.dims2()?;
    let hb = h
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let head = HeadWeight::of(w)?;
    let z = head.logits(&hb, n);
    let v = head.v;
    drop(head);
    Tensor::from_vec(z, (n, v), h.device())
}

impl CustomOp1 for HeadCe {
    fn name(&self) -> &'static str {
        "frozen-head-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(hs) = s else {
            candle_core::bail!("head loss: f32 hidden states only");
        };
        let h = contiguous(hs, l)?;
        let (n, c) = l.shape().dims2()?;
        let head = HeadWeight::of(&self.w)?;
        let grad = self.directions.is_some();
        let mut loss = vec![0f32; n];
        let mut best = vec![u32::MAX; n];
        let mut directions = Vec::with_capacity(if grad { self.rows.len() * c } else { 0 });
        for rows in self.rows.chunks(self.block_rows) {
            let m = rows.len();
            let mut hb = Vec::with_capacity(m * c);
            for &r in rows {
                hb.extend_from_slice(&h[r * c..(r + 1) * c]);
            }
            let mut z = head.logits(&hb, m);
            let v = head.v;
            let terms: Vec<(f32, u32)> = z
                .par_chunks_mut(v)
                .zip(rows.par_iter())
                .map(|(row, &r)| row_terms(row, self.targets[r] as usize, grad))
                .collect();
            for (&r, (l, b)) in rows.iter().zip(terms) {
                loss[r] = l;
                best[r] = b;
            }
            if grad {
                // (softmax − onehot) · W for the block: (m, V) · (V, C).
                directions.extend_from_slice(&head.times(&z, m));
            }
        }
        *self.best.lock().expect("head loss lock") = best;
        if let Some(slot) = &self.directions {
            *slot.lock().expect("head loss lock") = directions;
        }
        Ok((CpuStorage::F32(loss), Shape::from(n)))
    }

    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(slot) = &self.directions else {
            return Ok(None);
        };
        let (n, c) = h.dims2()?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let d = slot.lock().expect("head loss lock");
        let mut dh = vec![0f32; n * c];
        for (k, &r) in self.rows.iter().enumerate() {
            let (out, dir) = (&mut dh[r * c..(r + 1) * c], &d[k * c..(k + 1) * c]);
            for (o, &x) in out.iter_mut().zip(dir) {
                *o = g[r] * x;
            }
        }
        Ok(Some(Tensor::from_vec(dh, (n, c), h.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs, max_abs_diff};
    use candle_core::{D, Device, Var};

    /// Against log-softmax and gather over the full logits: the loss of every counted row, 0
    /// elsewhere, the argmax, and the gradient of a weighted sum; in one block of rows and in
    /// blocks of 1 and 4 rows; with a vocabulary of several blocks; for an f32 head and a bf16 one
    /// (against the f32 products of its values).
    #[test]
    fn equals_log_softmax_of_the_full_logits_with_gradients() {
        let dev = Device::Cpu;
        let (n, c, v) = (37, 24, 2 * VOCAB_BLOCK + 904);
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c), &dev).unwrap()).unwrap();
        let targets: Vec<u32> = (0..n).map(|i| ((i * 977) % v) as u32).collect();
        let counts: Vec<bool> = (0..n).map(|i| i % 4 != 1).collect();
        let weights: Vec<f32> = (0..n)
            .map(|i| if counts[i] { 0.5 + (i % 3) as f32 } else { 0.0 })
            .collect();
        let wt = Tensor::from_slice(&weights, n, &dev).unwrap();
        let tt = Tensor::from_slice(&targets, n, &dev).unwrap();
        let keep = Tensor::from_vec(
            counts
                .iter()
                .map(|&k| if k { 1f32 } else { 0.0 })
                .collect::<Vec<_>>(),
            n,
            &dev,
        )
        .unwrap();
        let w32 = Tensor::randn(0f32, 0.5, (v, c), &dev).unwrap();
        let w16 = w32.to_dtype(candle_core::DType::BF16).unwrap();
        for w in [&w32, &w16] {
            let wf = w.to_dtype(candle_core::DType::F32).unwrap();
            let logits = h.as_tensor().matmul(&wf.t().unwrap()).unwrap();
            let reference = candle_nn::ops::log_softmax(&logits, D::Minus1)
                .unwrap()
                .gather(&tt.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .neg()
                .unwrap();
            let ref_best = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
            let ref_grad = (&reference * &wt)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let masked_ref = (&reference * &keep).unwrap();
            for block in [BLOCK_VALUES, v, 4 * v] {
                let fused =
                    head_cross_entropy_in_blocks(h.as_tensor(), w, &targets, &counts, block)
                        .unwrap();
                let what = format!("{:?} head, block {block}", w.dtype());
                let d = max_abs_diff(&fused.per_token, &masked_ref);
                assert!(d < 1e-4, "{what}: loss differs by {d}");
                for i in 0..n {
                    let want = if counts[i] { ref_best[i] } else { u32::MAX };
                    assert_eq!(fused.best[i], want, "{what}: argmax of row {i}");
                }
                let grad = (&fused.per_token * &wt)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                // Both sides sum thousands of f32 terms in different orders, so the bound is
                // relative to the gradient's size (a fixed 1e-5 failed now and then on random
                // data: 1.2e-5 seen once).
                let want = ref_grad.get(&h).unwrap();
                let scale = max_abs(want);
                let d = max_abs_diff(grad.get(&h).unwrap(), want);
                assert!(
                    d < 2e-5 * scale.max(1.0),
                    "{what}: gradient differs by {d} (largest entry {scale})"
                );
            }
            // The logits alone, as generation takes them.
            let detached = h.as_tensor().detach();
            let z = head_logits(&detached, w).unwrap();
            assert!(max_abs_diff(&z, &logits) < 1e-4);
            // Without a graph: the same losses, no gradient kept.
            let plain = frozen_head_cross_entropy(&detached, w, &targets, &counts).unwrap();
            assert!(max_abs_diff(&plain.per_token, &masked_ref) < 1e-4);
        }
        let detached = h.as_tensor().detach();
        // A target outside the vocabulary is an error.
        let mut bad = targets.clone();
        bad[3] = v as u32;
        assert!(frozen_head_cross_entropy(&detached, &w32, &bad, &counts).is_err());
    }
}
