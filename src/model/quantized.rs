//! A frozen projection weight stored quantised (QLoRA's base): NF4 ([`super::nf4`]) or per-row
//! int8 ([`super::int8`]), behind one type the dequantising product ([`super::quantized_linear`]),
//! the model and the export share.

use candle_core::{DType, Result, Tensor};

use super::int8::Int8;
use super::nf4::Nf4;
use crate::spec::Quantization;

/// A quantised weight (out, in).
#[derive(Debug, Clone, PartialEq)]
pub enum QuantWeight {
    Nf4(Nf4),
    Int8(Int8),
}

impl QuantWeight {
    /// Quantises the row-major `rows × cols` weight `w` as `kind` asks (`double_quant` applies to
    /// NF4's block statistics).
    pub fn quantize(
        w: &[f32],
        shape: (usize, usize),
        kind: Quantization,
        double_quant: bool,
    ) -> QuantWeight {
        match kind {
            Quantization::Nf4 => QuantWeight::Nf4(Nf4::quantize(w, shape, double_quant)),
            Quantization::Int8 => QuantWeight::Int8(Int8::quantize(w, shape)),
        }
    }

    /// Quantises the 2-D tensor `w` (any float dtype).
    pub fn quantize_tensor(w: &Tensor, kind: Quantization, double_quant: bool) -> Result<Self> {
        let shape = w.dims2()?;
        let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::quantize(&values, shape, kind, double_quant))
    }

    /// Rows and columns (out, in).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            QuantWeight::Nf4(q) => q.shape,
            QuantWeight::Int8(q) => q.shape,
        }
    }

    /// Bytes held: codes and statistics.
    pub fn bytes(&self) -> usize {
        match self {
            QuantWeight::Nf4(q) => q.bytes(),
            QuantWeight::Int8(q) => q.bytes(),
        }
    }

    /// The whole weight, dequantised (row-major).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            QuantWeight::Nf4(q) => q.dequantize(),
            QuantWeight::Int8(q) => q.dequantize(),
        }
    }

    /// A reader of dequantised rows, with what it needs computed once (NF4's block statistics
    /// under double quantisation).
    pub fn rows(&self) -> RowReader<'_> {
        RowReader {
            w: self,
            nf4_absmax: match self {
                QuantWeight::Nf4(q) => q.block_absmax(),
                QuantWeight::Int8(_) => Vec::new(),
            },
        }
    }
}

/// Dequantises blocks of rows of a [`QuantWeight`].
pub struct RowReader<'a> {
    w: &'a QuantWeight,
    nf4_absmax: Vec<f32>,
}

impl RowReader<'_> {
    /// Rows `r0 .. r0 + out.len() / in` of the weight, dequantised into `out`.
    pub fn read(&self, r0: usize, out: &mut [f32]) {
        match self.w {
            QuantWeight::Nf4(q) => q.dequantize_range(&self.nf4_absmax, r0 * q.shape.1, out),
            QuantWeight::Int8(q) => q.dequantize_rows(r0, out),
        }
    }
}

/// Whether `name` is a projection's weight (`model.layers.N.self_attn.q_proj.weight`, ...): what
/// QLoRA stores quantised.
pub fn is_projection_weight(name: &str) -> bool {
    name.starts_with("model.layers.")
        && crate::spec::LORA_TARGETS
            .iter()
            .any(|p| name.ends_with(&format!(".{p}.weight")))
}
