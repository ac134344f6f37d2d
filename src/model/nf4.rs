//! NF4 storage of frozen weights (QLoRA): 4-bit NormalFloat codes with one absmax per block of
//! 64 values, optionally with the absmax values quantised again (double quantisation), laid out
//! and rounded exactly as bitsandbytes' `quantize_4bit(blocksize=64, quant_type="nf4")` lays them
//! out (checked against bitsandbytes 0.50 on a fixture, `tests/fixtures/make_nf4_reference.py`).
//!
//! - A weight is quantised flat, in row-major order: block `b` holds values `64b .. 64b + 64`
//!   (the last block may be shorter). `absmax_b = max |w|` over the block; each value becomes the
//!   index of the nearest of the 16 NF4 levels to `w · (1 / absmax_b)` (the midpoints decide, a
//!   value on a midpoint takes the lower level, as `torch.bucketize`). Two codes share a byte, the
//!   even element in the high nibble.
//! - Double quantisation (`compress_statistics`): the absmax values minus their mean (`offset`)
//!   are quantised with bitsandbytes' signed 8-bit dynamic map ([`dynamic_map`]) in blocks of 256,
//!   each with its own f32 absmax. 64 values then cost 32 bytes plus ~1.02 bytes of statistics
//!   instead of 4 (0.127 bits per value less than plain NF4's 0.5).
//! - Dequantising: `w ≈ NF4[code] · absmax_b`, with `absmax_b = map[q_b] · absmax2 + offset` under
//!   double quantisation.

/// Values per NF4 block.
pub const BLOCK: usize = 64;
/// absmax values per block of the second quantisation.
pub const STATS_BLOCK: usize = 256;

/// The 16 NormalFloat levels: quantiles of N(0, 1) rescaled to [−1, 1] with an exact zero
/// (Dettmers et al. 2023, "QLoRA", appendix E; the values bitsandbytes' `get_4bit_type("nf4")`
/// returns, as f32).
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The block statistics of an [`Nf4`] weight.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// Double quantisation: one byte per block, and per 256 blocks an f32 scale; `offset` is
    /// added back.
    Double {
        q: Vec<u8>,
        absmax2: Vec<f32>,
        offset: f32,
    },
}

/// A weight stored as NF4 codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    /// Rows and columns of the weight (out, in).
    pub shape: (usize, usize),
    /// Two codes per byte, ⌈n/2⌉ bytes.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
}

/// The midpoints between consecutive NF4 levels, computed in f32 as bitsandbytes does.
fn midpoints() -> [f32; 15] {
    std::array::from_fn(|i| (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0)
}

/// How many of `bounds` (sorted) lie strictly below `x`: `torch.bucketize(x, bounds)`.
fn bucket(x: f32, bounds: &[f32]) -> usize {
    bounds.partition_point(|&b| b < x)
}

/// Blockwise absmax scaling as bitsandbytes' reference kernels compute it: full blocks multiply
/// by `1 / absmax` (absmax clamped to 1e-38), a short last block divides; clamped to [−1, 1].
/// Calls `f(index, scaled value)` for every value and returns the absmax of every block.
fn scaled_blocks(w: &[f32], block: usize, mut f: impl FnMut(usize, f32)) -> Vec<f32> {
    let full = w.len() / block * block;
    let mut absmax = Vec::with_capacity(w.len().div_ceil(block));
    for (b, chunk) in w.chunks(block).enumerate() {
        let am = chunk.iter().fold(0f32, |m, &v| m.max(v.abs()));
        absmax.push(am);
        let am = am.max(1e-38);
        let inv = 1.0 / am;
        for (i, &v) in chunk.iter().enumerate() {
            let at = b * block + i;
            let s = if at < full { v * inv } else { v / am };
            f(at, s.clamp(-1.0, 1.0));
        }
    }
    absmax
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`): for exponents
/// `i = 0..7`, the midpoints of `2^i` equal steps of [0.1, 1] (torch's f32 `linspace`) scaled by
/// `10^(i−6)`, with both signs, then 0 and 1; sorted.
pub fn dynamic_map() -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7i32 {
        let n = (1usize << i) + 1;
        let b = linspace_f32(0.1, 1.0, n);
        let scale = 10f64.powi(i - 6) as f32;
        let means: Vec<f32> = b.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        data.extend(means.iter().map(|&m| scale * m));
        data.extend(means.iter().map(|&m| -scale * m));
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    data.try_into().expect("256 values")
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: the first half steps up from
/// `start`, the second steps down from `end`, in f32.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

impl Nf4 {
    /// Quantises the row-major `rows × cols` weight `w`; `double_quant` also quantises the block
    /// statistics.
    pub fn quantize(w: &[f32], (rows, cols): (usize, usize), double_quant: bool) -> Nf4 {
        assert_eq!(
            w.len(),
            rows * cols,
            "nf4: the shape does not cover the weight"
        );
        let bounds = midpoints();
        let mut packed = vec![0u8; w.len().div_ceil(2)];
        let absmax = scaled_blocks(w, BLOCK, |i, s| {
            let code = bucket(s, &bounds) as u8;
            packed[i / 2] |= if i.is_multiple_of(2) { code << 4 } else { code };
        });
        let absmax = if double_quant {
            // The mean in f64, rounded once: within an f32 rounding of torch's pairwise f32 sum.
            let offset =
                (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len() as f64) as f32;
            let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
            let map = dynamic_map();
            let map_bounds: Vec<f32> = map.windows(2).map(|p| (p[0] + p[1]) / 2.0).collect();
            let mut q = vec![0u8; centred.len()];
            let absmax2 = scaled_blocks(&centred, STATS_BLOCK, |i, s| {
                q[i] = bucket(s, &map_bounds) as u8;
            });
            Absmax::Double { q, absmax2, offset }
        } else {
            Absmax::Plain(absmax)
        };
        Nf4 {
            shape: (rows, cols),
            packed,
            absmax,
        }
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        self.shape.0 * self.shape.1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The absmax of every block, dequantised under double quantisation.
    pub fn block_absmax(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::Plain(a) => a.clone(),
            Absmax::Double { q, absmax2, offset } => {
                let map = dynamic_map();
                q.iter()
                    .enumerate()
                    .map(|(b, &c)| map[c as usize] * absmax2[b / STATS_BLOCK] + offset)
                    .collect()
            }
        }
    }

    /// Values `start .. start + out.len()` of the flat weight, dequantised into `out`, given
    /// [`Nf4::block_absmax`].
    pub fn dequantize_range(&self, absmax: &[f32], start: usize, out: &mut [f32]) {
        // Whole blocks from a block's start: one scale per block, two codes per byte.
        let full = if start.is_multiple_of(BLOCK) {
            out.len() / BLOCK * BLOCK
        } else {
            0
        };
        for (b, chunk) in out[..full].chunks_exact_mut(BLOCK).enumerate() {
            let blk = start / BLOCK + b;
            let am = absmax[blk];
            let bytes = &self.packed[blk * BLOCK / 2..(blk + 1) * BLOCK / 2];
            for (pair, &byte) in chunk.chunks_exact_mut(2).zip(bytes) {
                pair[0] = NF4_CODE[(byte >> 4) as usize] * am;
                pair[1] = NF4_CODE[(byte & 0xf) as usize] * am;
            }
        }
        for (k, o) in out.iter_mut().enumerate().skip(full) {
            let i = start + k;
            let byte = self.packed[i / 2];
            let code = if i.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0xf
            };
            *o = NF4_CODE[code as usize] * absmax[i / BLOCK];
        }
    }

    /// The whole weight, dequantised (row-major).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.len()];
        self.dequantize_range(&self.block_absmax(), 0, &mut out);
        out
    }

    /// Bytes held: the codes and the statistics.
    pub fn bytes(&self) -> usize {
        self.packed.len()
            + match &self.absmax {
                Absmax::Plain(a) => 4 * a.len(),
                Absmax::Double { q, absmax2, .. } => q.len() + 4 * absmax2.len() + 4,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture() -> std::collections::HashMap<String, candle_core::Tensor> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nf4_reference.safetensors");
        candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
    }

    fn f32s(t: &candle_core::Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn u8s(t: &candle_core::Tensor) -> Vec<u8> {
        t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
    }

    /// The levels are bitsandbytes' own, value for value; the dynamic map is, to the last bit
    /// of some entries: torch's f32 `linspace` steps its vectorised lanes from a lane base
    /// (`base + j·step`), so the last bit of its points depends on the machine's SIMD width, where
    /// [`linspace_f32`] computes `start + i·step` for every point.
    #[test]
    fn levels_and_dynamic_map_are_bitsandbytes() {
        let f = fixture();
        assert_eq!(f32s(&f["nf4.code"]), NF4_CODE.to_vec());
        let want = f32s(&f["big.dq.code"]);
        for (i, (a, b)) in dynamic_map().iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 2.0 * f32::EPSILON * b.abs(), // one ulp
                "dynamic map entry {i}: {a} vs bitsandbytes' {b}"
            );
        }
    }

    /// Codes, statistics and dequantised values equal bitsandbytes' `quantize_4bit` /
    /// `dequantize_4bit` (nf4, blocksize 64), with and without `compress_statistics`, on a weight
    /// of 260 blocks and one whose last block is short.
    #[test]
    fn quantisation_equals_bitsandbytes() {
        let f = fixture();
        for (name, shape) in [("big", (32, 520)), ("tail", (3, 100))] {
            let w = f32s(&f[&format!("{name}.weight")]);
            let plain = Nf4::quantize(&w, shape, false);
            assert_eq!(
                plain.packed,
                u8s(&f[&format!("{name}.packed")]),
                "{name}: codes"
            );
            assert_eq!(
                plain.absmax,
                Absmax::Plain(f32s(&f[&format!("{name}.absmax")])),
                "{name}: absmax"
            );
            assert_eq!(
                plain.dequantize(),
                f32s(&f[&format!("{name}.dequant")]),
                "{name}"
            );

            let double = Nf4::quantize(&w, shape, true);
            assert_eq!(double.packed, plain.packed);
            let Absmax::Double { q, absmax2, offset } = &double.absmax else {
                panic!("double quantisation")
            };
            let want_offset = f32s(&f[&format!("{name}.dq.offset")])[0];
            assert!(
                (offset - want_offset).abs() <= 1e-6 * want_offset.abs(),
                "{name}: offset {offset} vs {want_offset}"
            );
            assert_eq!(
                q,
                &u8s(&f[&format!("{name}.dq.qabsmax")]),
                "{name}: statistics"
            );
            let want2 = f32s(&f[&format!("{name}.dq.absmax2")]);
            for (a, b) in absmax2.iter().zip(&want2) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{name}: absmax2 {a} vs {b}"
                );
            }
            let got = double.dequantize();
            let want = f32s(&f[&format!("{name}.dq.dequant")]);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{name}: double-quantised values differ by {worst} (relative)"
            );
        }
    }

    #[test]
    fn storage_is_about_half_a_byte_per_value() {
        let w: Vec<f32> = (0..64 * 512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let plain = Nf4::quantize(&w, (64, 512), false);
        let double = Nf4::quantize(&w, (64, 512), true);
        let per_value = |b: usize| 8.0 * b as f64 / w.len() as f64;
        assert!((per_value(plain.bytes()) - 4.5).abs() < 1e-9); // 4 bits + 32 bits / 64
        assert!(per_value(double.bytes()) < 4.14); // 4 bits + 8 / 64 + 32 / (64 · 256)
    }
}
