//! A QLoRA job's quantised base projections, kept beside its work (`quantized-base.safetensors`
//! in the job's output folder, never in the models folder) so that a resumed job reads the codes
//! instead of reading and quantising the base again. The file says what it was made from (the
//! method and the base's weight files, by name, size and modification time); a file made from
//! anything else is ignored and replaced.
//!
//! Layout, per projection weight `W` (a Hugging Face name): NF4 `W.nf4.packed` (u8),
//! `W.nf4.absmax` (f32) or, double-quantised, `W.nf4.qabsmax` (u8), `W.nf4.absmax2` (f32),
//! `W.nf4.offset` (f32, one value); int8 `W.int8.codes` (the i8 codes as u8) and
//! `W.int8.absmax` (f32); and `W.shape` (u32: rows, columns).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::hf::{self, HfError, LazyTensor};
use super::int8::Int8;
use super::nf4::{Absmax, Nf4};
use super::quantized::QuantWeight;

/// The file's name in a job's output folder.
pub const FILE: &str = "quantized-base.safetensors";

/// What the cache was made from: the quantisation and the base's weight files.
pub fn key(method: &str, weight_files: &[std::path::PathBuf]) -> String {
    let files: Vec<String> = weight_files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{len}:{modified}", f.display())
        })
        .collect();
    format!("{method}|{}", files.join("|"))
}

/// A flat tensor made when written.
fn flat<'a, T: candle_core::WithDType>(
    name: String,
    make: Box<dyn Fn() -> Vec<T> + 'a>,
    len: usize,
) -> (String, LazyTensor<'a>) {
    let make = move || Tensor::from_vec(make(), len, &Device::Cpu);
    let shape = vec![len];
    (
        name,
        LazyTensor {
            shape,
            dtype: T::DTYPE,
            make: Box::new(make),
        },
    )
}

/// Writes `weights` to `path` (through a temporary file and a rename) under `key`, one tensor at
/// a time.
pub fn save(
    path: &Path,
    weights: &HashMap<String, Arc<QuantWeight>>,
    key: &str,
) -> Result<(), HfError> {
    let mut tensors: Vec<(String, LazyTensor)> = Vec::new();
    for (name, w) in weights {
        let (rows, cols) = w.shape();
        tensors.push((
            format!("{name}.shape"),
            LazyTensor {
                shape: vec![2],
                dtype: DType::U32,
                make: Box::new(move || Tensor::new(&[rows as u32, cols as u32], &Device::Cpu)),
            },
        ));
        match &**w {
            QuantWeight::Nf4(q) => {
                tensors.push(flat(
                    format!("{name}.nf4.packed"),
                    Box::new(|| q.packed.clone()),
                    q.packed.len(),
                ));
                match &q.absmax {
                    Absmax::Plain(a) => tensors.push(flat(
                        format!("{name}.nf4.absmax"),
                        Box::new(|| a.clone()),
                        a.len(),
                    )),
                    Absmax::Double { q, absmax2, offset } => {
                        tensors.push(flat(
                            format!("{name}.nf4.qabsmax"),
                            Box::new(|| q.clone()),
                            q.len(),
                        ));
                        tensors.push(flat(
                            format!("{name}.nf4.absmax2"),
                            Box::new(|| absmax2.clone()),
                            absmax2.len(),
                        ));
                        let offset = *offset;
                        tensors.push(flat(
                            format!("{name}.nf4.offset"),
                            Box::new(move || vec![offset]),
                            1,
                        ));
                    }
                }
            }
            QuantWeight::Int8(q) => {
                tensors.push(flat(
                    format!("{name}.int8.codes"),
                    Box::new(|| q.codes.iter().map(|&c| c as u8).collect()),
                    q.codes.len(),
                ));
                tensors.push(flat(
                    format!("{name}.int8.absmax"),
                    Box::new(|| q.absmax.clone()),
                    q.absmax.len(),
                ));
            }
        }
    }
    hf::save_weights_lazy_with(path, tensors, &[(META_KEY, key)])
}

/// The metadata entry that holds what the file was made from.
const META_KEY: &str = "wick.quantized_base";

/// The weights in `path` when it exists and was made under `key`; `None` otherwise (also for a
/// damaged file, which the caller then replaces). Tensors are read one at a time.
pub fn load(path: &Path, key: &str) -> Option<HashMap<String, Arc<QuantWeight>>> {
    use std::io::{Read, Seek, SeekFrom};
    let header = hf::read_header(path).ok()?;
    if header.meta.metadata().as_ref()?.get(META_KEY)? != key {
        return None;
    }
    let infos = header.meta.tensors();
    let mut file = std::fs::File::open(path).ok()?;
    let mut raw = |n: &str| -> Option<Vec<u8>> {
        let (begin, end) = infos.get(n)?.data_offsets;
        file.seek(SeekFrom::Start(header.data_start + begin as u64))
            .ok()?;
        let mut b = vec![0u8; end - begin];
        file.read_exact(&mut b).ok()?;
        Some(b)
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut out = HashMap::new();
    let mut names: Vec<&String> = infos.keys().collect();
    names.sort();
    for name in names {
        let Some(w) = name.strip_suffix(".shape") else {
            continue;
        };
        let s = raw(name)?;
        if s.len() != 8 {
            return None;
        }
        let dim = |i: usize| {
            u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]) as usize
        };
        let shape = (dim(0), dim(1));
        let q = if let Some(packed) = raw(&format!("{w}.nf4.packed")) {
            let absmax = match raw(&format!("{w}.nf4.absmax")) {
                Some(a) => Absmax::Plain(f32s(a)),
                None => Absmax::Double {
                    q: raw(&format!("{w}.nf4.qabsmax"))?,
                    absmax2: f32s(raw(&format!("{w}.nf4.absmax2"))?),
                    offset: *f32s(raw(&format!("{w}.nf4.offset"))?).first()?,
                },
            };
            QuantWeight::Nf4(Nf4 {
                shape,
                packed,
                absmax,
            })
        } else {
            let codes = raw(&format!("{w}.int8.codes"))?
                .into_iter()
                .map(|c| c as i8)
                .collect();
            QuantWeight::Int8(Int8 {
                shape,
                codes,
                absmax: f32s(raw(&format!("{w}.int8.absmax"))?),
            })
        };
        out.insert(w.to_string(), Arc::new(q));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Quantization;

    /// NF4 (plain and double-quantised) and int8 weights come back equal; another key, a missing
    /// file and a damaged one give nothing.
    #[test]
    fn weights_come_back_equal_under_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let w: Vec<f32> = (0..40 * 70)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        let mut weights = HashMap::new();
        for (name, kind, dq) in [
            ("a.weight", Quantization::Nf4, false),
            ("b.weight", Quantization::Nf4, true),
            ("c.weight", Quantization::Int8, false),
        ] {
            let q = QuantWeight::quantize(&w, (40, 70), kind, dq);
            weights.insert(name.to_string(), Arc::new(q));
        }
        assert!(load(&path, "k").is_none());
        save(&path, &weights, "k").unwrap();
        let back = load(&path, "k").unwrap();
        assert_eq!(back.len(), 3);
        for (name, q) in &weights {
            assert_eq!(back[name], *q, "{name}");
        }
        assert!(load(&path, "other").is_none());
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(load(&path, "k").is_none());
    }
}
