//! Int8 storage of frozen weights (QLoRA's `"quantization": "int8"`): each row of the weight
//! scaled by its own absmax, as bitsandbytes' `int8_vectorwise_quant` (LLM.int8()'s weight format)
//! does: `q = round(w · (127 / absmax_row))` in [−127, 127], `w ≈ q · absmax_row · (1/127)`. One byte
//! per value plus one f32 per row; the error of a value is at most `absmax_row / 254`. Codes,
//! statistics and dequantised values equal bitsandbytes 0.50's `int8_vectorwise_quant` /
//! `int8_vectorwise_dequant` bit for bit (`tests/fixtures/make_int8_reference.py`).

/// bitsandbytes' reciprocal of 127, as its dequantisation multiplies by it.
const INV_127: f32 = 7.874_015_7e-3;

/// A weight stored as per-row int8 codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8 {
    /// Rows and columns of the weight (out, in).
    pub shape: (usize, usize),
    /// One code per value, row-major.
    pub codes: Vec<i8>,
    /// `max |w|` of each row.
    pub absmax: Vec<f32>,
}

impl Int8 {
    /// Quantises the row-major `rows × cols` weight `w`.
    pub fn quantize(w: &[f32], (rows, cols): (usize, usize)) -> Int8 {
        assert_eq!(
            w.len(),
            rows * cols,
            "int8: the shape does not cover the weight"
        );
        let mut codes = vec![0i8; w.len()];
        let mut absmax = Vec::with_capacity(rows);
        for (row, out) in w.chunks(cols.max(1)).zip(codes.chunks_mut(cols.max(1))) {
            let am = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
            absmax.push(am);
            // bitsandbytes: `torch.round(A · (127 / absmax))` (ties to even); rows of zeros stay zero.
            let scale = if am > 0.0 { 127.0 / am } else { 0.0 };
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v * scale).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
        Int8 {
            shape: (rows, cols),
            codes,
            absmax,
        }
    }

    /// Rows `r0 .. r0 + out.len() / cols` of the weight, dequantised into `out`.
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) {
        let cols = self.shape.1;
        for (k, row) in out.chunks_mut(cols).enumerate() {
            let r = r0 + k;
            let am = self.absmax[r];
            let codes = &self.codes[r * cols..(r + 1) * cols];
            for (o, &c) in row.iter_mut().zip(codes) {
                *o = c as f32 * am * INV_127;
            }
        }
    }

    /// The whole weight, dequantised (row-major).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        self.dequantize_rows(0, &mut out);
        out
    }

    /// Bytes held: the codes and the row statistics.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.absmax.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-computed row and the error bound on a larger weight.
    #[test]
    fn rounds_each_row_by_its_absmax() {
        // Row 0: absmax 2 → scale 63.5: 2 → 127, −1 → −63.5 → −64 (ties to even), 0.5 →
        // 31.75 → 32. Row 1: zeros stay zeros.
        let q = Int8::quantize(&[2.0, -1.0, 0.5, 0.0, 0.0, 0.0], (2, 3));
        assert_eq!(q.codes, vec![127, -64, 32, 0, 0, 0]);
        assert_eq!(q.absmax, vec![2.0, 0.0]);
        let d = q.dequantize();
        assert_eq!(d[0], 2.0);
        assert!((d[1] - (-64.0 * 2.0 / 127.0)).abs() < 1e-6);
        assert_eq!(&d[3..], &[0.0, 0.0, 0.0]);
        assert_eq!(q.bytes(), 6 + 8);

        let (rows, cols) = (17, 300);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / cols) as f32))
            .collect();
        let q = Int8::quantize(&w, (rows, cols));
        let d = q.dequantize();
        for r in 0..rows {
            let bound = q.absmax[r] / 254.0 * (1.0 + 1e-5);
            for c in 0..cols {
                let i = r * cols + c;
                assert!((d[i] - w[i]).abs() <= bound, "row {r} col {c}");
            }
        }
        // A block of rows dequantises as the whole does.
        let mut part = vec![0f32; 3 * cols];
        q.dequantize_rows(5, &mut part);
        assert_eq!(part, d[5 * cols..8 * cols]);
    }

    /// Codes, row statistics and dequantised values equal bitsandbytes' on the fixture.
    #[test]
    fn equals_bitsandbytes_int8_vectorwise_quant() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/int8_reference.safetensors");
        let f = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
        let get = |k: &str| -> Vec<f32> { f[k].flatten_all().unwrap().to_vec1::<f32>().unwrap() };
        for case in ["big", "small"] {
            let shape = f[&format!("{case}.weight")].dims2().unwrap();
            let q = Int8::quantize(&get(&format!("{case}.weight")), shape);
            let codes: Vec<f32> = q.codes.iter().map(|&c| c as f32).collect();
            assert_eq!(codes, get(&format!("{case}.codes")), "{case}: codes");
            assert_eq!(q.absmax, get(&format!("{case}.absmax")), "{case}: absmax");
            assert_eq!(
                q.dequantize(),
                get(&format!("{case}.dequant")),
                "{case}: values"
            );
        }
    }
}
