//! Matrix products with bf16 inputs and f32 accumulation on processors with AVX512-BF16
//! (`vdpbf16ps`: 32 bf16 products summed into 16 f32 lanes per instruction, twice the f32 FMA's
//! rate), for the trainer's mixed-precision mode. Operands arrive as f32, are rounded to bf16
//! (nearest, ties to even, as PyTorch's autocast casts) while packed, and the result is f32.
//!
//! The layout follows the usual GEMM structure (Goto's packing into micro-panels): `B` is packed
//! once into panels of [`NR`] columns with consecutive pairs of `k` interleaved (the order
//! `vdpbf16ps` multiplies), rows of `A` into micro-panels of [`MR`] rows as bf16 pairs, and an
//! `MR × NR` micro-kernel keeps its 16 accumulators in registers over the whole `k`. Row blocks run
//! in parallel. Edges are padded with zeros in the packs, so the kernel never branches on shape.
//! Elsewhere [`available`] is false and callers use f32 products.

use rayon::prelude::*;

/// Rows of a micro-panel of `A`.
pub const MR: usize = 8;
/// Columns of a panel of `B` (two 16-lane registers).
pub const NR: usize = 32;
/// Rows of `A` per parallel task.
const MC: usize = 64;

/// Whether this processor has bf16 dot products (AVX512-BF16), detected at run time.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16 bits, rounding to nearest with ties to even; NaN stays NaN.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// A strided f32 matrix: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// The bf16 pairs `(v[2q], v[2q+1])` of `len` values of `m` along `k` (the row `r` of `A`, or the
/// column `r` of `B` when `along_rows` is false), the even one in the low half, into `out`
/// (⌈len/2⌉ values; an odd tail pairs with zero).
fn pairs(m: &Mat, r: usize, along_rows: bool, len: usize, out: &mut [u32]) {
    let (base, step) = if along_rows {
        (r * m.rs, m.cs)
    } else {
        (r * m.cs, m.rs)
    };
    if step == 1 {
        let src = &m.data[base..base + len];
        #[cfg(target_arch = "x86_64")]
        {
            let full = len / 32 * 32;
            // SAFETY: callers check `available()`; each call reads 32 values inside `src` and
            // writes 16 inside `out` (⌈len/2⌉ ≥ full/2).
            unsafe { pairs_avx512(&src[..full], &mut out[..full / 2]) };
            pairs_scalar(&src[full..], 1, &mut out[full / 2..]);
        }
        #[cfg(not(target_arch = "x86_64"))]
        pairs_scalar(src, 1, out);
    } else {
        let last = base + (len.max(1) - 1) * step;
        pairs_scalar(&m.data[base..=last], step, out);
    }
}

fn pairs_scalar(src: &[f32], step: usize, out: &mut [u32]) {
    let len = if src.is_empty() {
        0
    } else {
        (src.len() - 1) / step + 1
    };
    for (q, o) in out.iter_mut().enumerate().take(len.div_ceil(2)) {
        let lo = to_bf16(src[2 * q * step]) as u32;
        let hi = if 2 * q + 1 < len {
            to_bf16(src[(2 * q + 1) * step]) as u32
        } else {
            0
        };
        *o = lo | (hi << 16);
    }
}

/// 32 f32 at a time into 16 pairs: `vcvtne2ps2bf16` rounds to nearest even like [`to_bf16`], and
/// its output order (low register's values first) is exactly the pairs' order in memory.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pairs_avx512(src: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    for (s, o) in src.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        // SAFETY: s has 32 values, o room for 16.
        unsafe {
            let lo = _mm512_loadu_ps(s.as_ptr());
            let hi = _mm512_loadu_ps(s.as_ptr().add(16));
            let b = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                o.as_mut_ptr().cast(),
                std::mem::transmute::<__m512bh, __m512i>(b),
            );
        }
    }
}

/// `C (m × n, row-major) = A (m × k) · B (k × n)` with bf16-rounded inputs and f32 accumulation.
/// Panics unless [`available`].
pub fn matmul(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    assert!(available(), "bf16 matmul needs AVX512-BF16");
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return c;
    }
    let kp = k.div_ceil(2); // bf16 pairs along k
    let panels = n.div_ceil(NR);
    // B: per panel, per k pair, NR columns × 2 bf16 (u32 each: low half k even, high half k odd).
    let mut bp = vec![0u32; panels * kp * NR];
    bp.par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            let mut col = vec![0u32; kp];
            for j in 0..NR.min(n - p * NR) {
                pairs(&b, p * NR + j, false, k, &mut col);
                for (q, &v) in col.iter().enumerate() {
                    panel[q * NR + j] = v;
                }
            }
        });
    c.par_chunks_mut(MC * n)
        .enumerate()
        .for_each(|(blk, c_rows)| {
            let row0 = blk * MC;
            let rows = c_rows.len() / n;
            let mut ap = vec![0u32; kp * MR];
            let mut row = vec![0u32; kp];
            for r0 in (0..rows).step_by(MR) {
                // A micro-panel: per k pair, MR rows' pairs (zero rows past the edge).
                let live = (rows - r0).min(MR);
                if live < MR {
                    ap.iter_mut().for_each(|v| *v = 0);
                }
                for i in 0..live {
                    pairs(&a, row0 + r0 + i, true, k, &mut row);
                    for (q, &v) in row.iter().enumerate() {
                        ap[q * MR + i] = v;
                    }
                }
                for p in 0..panels {
                    let mut tile = [0f32; MR * NR];
                    // SAFETY: `available()` was checked above; both packs hold kp pairs.
                    unsafe { kernel(&ap, &bp[p * kp * NR..(p + 1) * kp * NR], kp, &mut tile) };
                    let cols = (n - p * NR).min(NR);
                    for i in 0..live {
                        let dst = &mut c_rows[(r0 + i) * n + p * NR..(r0 + i) * n + p * NR + cols];
                        dst.copy_from_slice(&tile[i * NR..i * NR + cols]);
                    }
                }
            }
        });
    c
}

/// `tile (MR × NR) = Σ_q ap[q] · bp[q]` over `kp` bf16 pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    debug_assert!(ap.len() >= kp * MR && bp.len() >= kp * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (a, b) = (ap.as_ptr(), bp.as_ptr());
    for q in 0..kp {
        // SAFETY: q < kp and the packs hold kp·MR and kp·NR elements.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16).cast()));
            for (i, row) in acc.iter_mut().enumerate() {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(q * MR + i) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], x, b0);
                row[1] = _mm512_dpbf16_ps(row[1], x, b1);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: each row of the tile has NR = 32 floats.
        unsafe {
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), row[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: &[u32], _: &[u32], _: usize, _: &mut [f32; MR * NR]) {
    unreachable!("bf16 matmul needs AVX512-BF16")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to the even mantissa (1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: up to the even one.
        assert_eq!(from_bf16(to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(
            from_bf16(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// Against an f64 product of the bf16-rounded inputs, for shapes with every edge (m, n not
    /// multiples of the tile, odd k) and transposed operands.
    #[test]
    fn matches_f64_products_of_the_rounded_inputs() {
        if !available() {
            eprintln!("skipped: no AVX512-BF16 on this processor");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 32, 2),
            (13, 45, 7),
            (70, 33, 129),
            (130, 96, 64),
        ] {
            let a = values(m * k, 1);
            let bt = values(n * k, 2); // stored (n, k): B is its transpose
            let c = matmul(
                Mat {
                    data: &a,
                    rs: k,
                    cs: 1,
                },
                Mat {
                    data: &bt,
                    rs: 1,
                    cs: k,
                },
                m,
                n,
                k,
            );
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|p| {
                            from_bf16(to_bf16(a[i * k + p])) as f64
                                * from_bf16(to_bf16(bt[j * k + p])) as f64
                        })
                        .sum();
                    let err = (c[i * n + j] as f64 - exact).abs();
                    // f32 accumulation of k products of magnitude ≤ 1.
                    assert!(
                        err <= 1e-6 * (k as f64 + 1.0),
                        "({m},{n},{k}) at ({i},{j}): {err}"
                    );
                }
            }
        }
    }
}
