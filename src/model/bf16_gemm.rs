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
/// Rows of `A` per parallel task, at most.
const MC: usize = 128;

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

/// Pairs `(r0[c], r1[c])` for every column `c` of two rows (`r1` absent: the odd tail of `k`,
/// paired with zero): the packing of an operand whose `k` runs across rows (`Wᵀ`'s backward
/// uses, `dyᵀ`, `x` as `dW`'s right operand), 16 columns per step and a masked tail.
fn row_pairs(r0: &[f32], r1: Option<&[f32]>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: callers check `available()`; the rows hold `out.len()` values.
    unsafe {
        row_pairs_avx512(r0, r1, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    for (c, o) in out.iter_mut().enumerate() {
        let lo = to_bf16(r0[c]) as u32;
        let hi = r1.map_or(0, |r| to_bf16(r[c]) as u32);
        *o = lo | (hi << 16);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn row_pairs_avx512(r0: &[f32], r1: Option<&[f32]>, out: &mut [u32]) {
    use std::arch::x86_64::*;
    let len = out.len();
    assert!(r0.len() >= len && r1.is_none_or(|r| r.len() >= len));
    for c in (0..len).step_by(16) {
        let mask: __mmask16 = if len - c >= 16 {
            0xffff
        } else {
            (1u16 << (len - c)) - 1
        };
        // SAFETY: the masked loads and store touch only columns c..len, inside the rows and out.
        unsafe {
            let pair = |r: &[f32]| {
                let v = _mm512_maskz_loadu_ps(mask, r.as_ptr().add(c));
                _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                    _mm512_cvtneps_pbh(v),
                ))
            };
            let v = match r1 {
                Some(r) => _mm512_or_si512(pair(r0), _mm512_slli_epi32::<16>(pair(r))),
                None => pair(r0),
            };
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(c).cast(), mask, v);
        }
    }
}

/// Packs `width` consecutive indices `i0..` of the non-`k` dimension of `m` (rows of `A` when
/// `along_rows`, columns of `B` otherwise) over the `k` pairs `q0..q0 + nq`, into
/// `out[(q − q0)·ld + (i − i0)]`: `ld` is the micro-panel's width (MR or NR), `out` is zeroed
/// past `width` by the caller. Vectorised in whichever direction the operand is contiguous.
#[allow(clippy::too_many_arguments)]
fn pack(
    m: &Mat,
    along_rows: bool,
    i0: usize,
    width: usize,
    k: usize,
    q0: usize,
    nq: usize,
    ld: usize,
    out: &mut [u32],
    scratch: &mut Vec<u32>,
) {
    // (stride along k, stride along the other dimension)
    let (sk, si) = if along_rows {
        (m.cs, m.rs)
    } else {
        (m.rs, m.cs)
    };
    let (k0, k1) = (2 * q0, (2 * (q0 + nq)).min(k));
    if si == 1 && sk != 1 {
        // k runs across rows of memory: two rows make one line of pairs.
        for q in 0..nq {
            let p = 2 * (q0 + q);
            if p >= k {
                break;
            }
            let r0 = &m.data[p * sk + i0..p * sk + i0 + width];
            let r1 = (p + 1 < k).then(|| &m.data[(p + 1) * sk + i0..(p + 1) * sk + i0 + width]);
            row_pairs(r0, r1, &mut out[q * ld..q * ld + width]);
        }
    } else if sk == 1 {
        // k is contiguous: the two values of a pair sit side by side, so one 64-bit gather
        // fetches a pair from each of 8 indices, and one rounding makes them the 8 pairs of
        // a line of the micro-panel.
        let full = (k1 - k0) / 2; // pairs with both values inside k
        let mut i = 0;
        #[cfg(target_arch = "x86_64")]
        while i + 8 <= width {
            let offs: [usize; 8] = std::array::from_fn(|t| (i0 + i + t) * si + k0);
            // SAFETY: callers check `available()`; every gathered pair (offs[t] + 2q, + 1) lies
            // inside `m.data` for q < full, and out has room for line q at q·ld + i .. + 8.
            unsafe { gather_pairs8(m.data, &offs, full, &mut out[i..], ld) };
            for (t, &o) in offs.iter().enumerate() {
                if full < nq {
                    // The odd tail of k: its value pairs with zero.
                    out[full * ld + i + t] = to_bf16(m.data[o + 2 * full]) as u32;
                }
            }
            i += 8;
        }
        for i in i..width {
            let base = (i0 + i) * si + k0;
            for q in 0..nq {
                let lo = to_bf16(m.data[base + 2 * q]) as u32;
                let hi = if k0 + 2 * q + 1 < k1 {
                    to_bf16(m.data[base + 2 * q + 1]) as u32
                } else {
                    0
                };
                out[q * ld + i] = lo | (hi << 16);
            }
        }
    } else {
        // Neither direction is contiguous (a strided view): pairs along each index, scattered.
        scratch.resize(nq, 0);
        for i in 0..width {
            let view = Mat {
                data: &m.data[k0 * sk..],
                rs: m.rs,
                cs: m.cs,
            };
            pairs(&view, i0 + i, along_rows, k1 - k0, scratch);
            for (q, &v) in scratch.iter().enumerate().take((k1 - k0).div_ceil(2)) {
                out[q * ld + i] = v;
            }
        }
    }
}

/// Lines `q = 0..nq` of 8 pairs: `out[q·ld + t] = pair(data[offs[t] + 2q], data[offs[t] + 2q + 1])`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn gather_pairs8(data: &[f32], offs: &[usize; 8], nq: usize, out: &mut [u32], ld: usize) {
    use std::arch::x86_64::*;
    let bytes: [i64; 8] = std::array::from_fn(|t| (offs[t] * 4) as i64);
    // SAFETY: the caller promises every pair read and every line written is in bounds.
    unsafe {
        let idx = _mm512_loadu_si512(bytes.as_ptr().cast());
        for q in 0..nq {
            let base = data.as_ptr().add(2 * q);
            let g = _mm512_i64gather_epi64::<1>(idx, base.cast());
            let b = _mm512_cvtneps_pbh(_mm512_castsi512_ps(g));
            _mm256_storeu_si256(
                out.as_mut_ptr().add(q * ld).cast(),
                std::mem::transmute::<__m256bh, __m256i>(b),
            );
        }
    }
}

/// `k` pairs per block: a block of a `B` panel (KC · NR · 4 bytes = 32 KiB) stays in L1 while
/// every micro-panel of a task's rows multiplies it, and the task's `A` block in L2.
const KC: usize = 256;

/// `C (m × n, row-major) = A (m × k) · B (k × n)` with bf16-rounded inputs and f32 accumulation.
/// Panics unless [`available`].
pub fn matmul(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    assert!(available(), "bf16 matmul needs AVX512-BF16");
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let kp = k.div_ceil(2); // bf16 pairs along k
    let panels = n.div_ceil(NR);
    // B: per panel, per k pair, NR columns × 2 bf16 (u32 each: low half k even, high half k odd).
    let mut bp = vec![0u32; panels * kp * NR];
    bp.par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            let mut scratch = Vec::new();
            let width = NR.min(n - p * NR);
            pack(&b, false, p * NR, width, k, 0, kp, NR, panel, &mut scratch);
        });
    // Rows per task: at most MC, and small enough that every thread gets a few tasks.
    let threads = rayon::current_num_threads().max(1);
    let mc = (m.div_ceil(4 * threads).div_ceil(MR) * MR).clamp(MR, MC);
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let cptr = SendPtr(c.as_mut_ptr());
    (0..m.div_ceil(mc)).into_par_iter().for_each(|blk| {
        let row0 = blk * mc;
        let rows = mc.min(m - row0);
        let panels_a = rows.div_ceil(MR);
        let mut ap = vec![0u32; panels_a * KC * MR];
        let mut scratch = Vec::new();
        let mut tile = [0f32; MR * NR];
        for q0 in (0..kp).step_by(KC) {
            let nq = KC.min(kp - q0);
            for mp in 0..panels_a {
                let live = MR.min(rows - mp * MR);
                let dst = &mut ap[mp * nq * MR..(mp + 1) * nq * MR];
                if live < MR {
                    dst.iter_mut().for_each(|v| *v = 0);
                }
                pack(
                    &a,
                    true,
                    row0 + mp * MR,
                    live,
                    k,
                    q0,
                    nq,
                    MR,
                    dst,
                    &mut scratch,
                );
            }
            let first = q0 == 0;
            for p in 0..panels {
                let bpanel = &bp[p * kp * NR + q0 * NR..p * kp * NR + (q0 + nq) * NR];
                let cols = NR.min(n - p * NR);
                for mp in 0..panels_a {
                    let live = MR.min(rows - mp * MR);
                    let apanel = &ap[mp * nq * MR..(mp + 1) * nq * MR];
                    // SAFETY: this task alone owns rows row0..row0+rows of C; a full tile is
                    // written in place (read first unless this is the first k block), an edge
                    // tile through `tile`; every element of C is written by the first block.
                    unsafe {
                        let at = cptr.at((row0 + mp * MR) * n + p * NR);
                        if live == MR && cols == NR {
                            kernel(apanel, bpanel, nq, at, n, !first);
                        } else {
                            for i in 0..live {
                                for j in 0..cols {
                                    tile[i * NR + j] = if first { 0.0 } else { *at.add(i * n + j) };
                                }
                            }
                            kernel(apanel, bpanel, nq, tile.as_mut_ptr(), NR, true);
                            for i in 0..live {
                                for j in 0..cols {
                                    *at.add(i * n + j) = tile[i * NR + j];
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    // SAFETY: the tasks above wrote all m·n elements.
    unsafe { c.set_len(m * n) };
    c
}

/// The output pointer, shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// The element `i` (a method, so closures capture the whole `SendPtr`).
    ///
    /// # Safety
    /// `i` lies inside the allocation.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(i) }
    }
}
// SAFETY: tasks write disjoint rows (see `matmul`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `C[tile] (+)= Σ_q ap[q] · bp[q]` over `kp` bf16 pairs, for the MR × NR tile at `c` with row
/// stride `ldc`; `accumulate`: add to what the tile holds, else overwrite it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    debug_assert!(ap.len() >= kp * MR && bp.len() >= kp * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's tile has MR rows of NR floats at stride ldc.
            unsafe {
                row[0] = _mm512_loadu_ps(c.add(i * ldc));
                row[1] = _mm512_loadu_ps(c.add(i * ldc + 16));
            }
        }
    }
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
        // SAFETY: as above.
        unsafe {
            _mm512_storeu_ps(c.add(i * ldc), row[0]);
            _mm512_storeu_ps(c.add(i * ldc + 16), row[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: &[u32], _: &[u32], _: usize, _: *mut f32, _: usize, _: bool) {
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
        // k = 1100 and 515 span several k blocks (KC pairs); m = 300 several row tasks.
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 32, 2),
            (13, 45, 7),
            (70, 33, 129),
            (130, 96, 64),
            (70, 33, 1100),
            (300, 70, 515),
        ] {
            let a = values(m * k, 1);
            let bt = values(n * k, 2);
            // Every layout the linear op uses: A row-major or transposed in memory, B likewise.
            for (a_t, b_t) in [(false, true), (false, false), (true, false), (true, true)] {
                // A(i, p): row-major (m, k), or stored (k, m); B(p, j): stored (n, k), or (k, n).
                let am = if a_t {
                    Mat {
                        data: &a,
                        rs: 1,
                        cs: m,
                    }
                } else {
                    Mat {
                        data: &a,
                        rs: k,
                        cs: 1,
                    }
                };
                let bm = if b_t {
                    Mat {
                        data: &bt,
                        rs: 1,
                        cs: k,
                    }
                } else {
                    Mat {
                        data: &bt,
                        rs: n,
                        cs: 1,
                    }
                };
                let c = matmul(am, bm, m, n, k);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|p| {
                                from_bf16(to_bf16(am.data[i * am.rs + p * am.cs])) as f64
                                    * from_bf16(to_bf16(bm.data[p * bm.rs + j * bm.cs])) as f64
                            })
                            .sum();
                        let err = (c[i * n + j] as f64 - exact).abs();
                        // f32 accumulation of k products of magnitude ≤ 1.
                        assert!(
                            err <= 1e-6 * (k as f64 + 1.0),
                            "({m},{n},{k}) A transposed {a_t}, B transposed {b_t}, at ({i},{j}): {err}"
                        );
                    }
                }
            }
        }
    }
}
