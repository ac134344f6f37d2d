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

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

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

fn le_bytes<T: Copy>(values: &[T], to: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

/// Writes `weights` to `path` (through a temporary file and a rename) under `key`.
pub fn save(
    path: &Path,
    weights: &HashMap<String, Arc<QuantWeight>>,
    key: &str,
) -> std::io::Result<()> {
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32s = |v: &[f32]| le_bytes(v, f32::to_le_bytes);
    for (name, w) in weights {
        let (rows, cols) = w.shape();
        entries.push((
            format!("{name}.shape"),
            Dtype::U32,
            vec![2],
            le_bytes(&[rows as u32, cols as u32], u32::to_le_bytes),
        ));
        match &**w {
            QuantWeight::Nf4(q) => {
                let packed = q.packed.clone();
                entries.push((
                    format!("{name}.nf4.packed"),
                    Dtype::U8,
                    vec![packed.len()],
                    packed,
                ));
                match &q.absmax {
                    Absmax::Plain(a) => entries.push((
                        format!("{name}.nf4.absmax"),
                        Dtype::F32,
                        vec![a.len()],
                        f32s(a),
                    )),
                    Absmax::Double { q, absmax2, offset } => {
                        entries.push((
                            format!("{name}.nf4.qabsmax"),
                            Dtype::U8,
                            vec![q.len()],
                            q.clone(),
                        ));
                        entries.push((
                            format!("{name}.nf4.absmax2"),
                            Dtype::F32,
                            vec![absmax2.len()],
                            f32s(absmax2),
                        ));
                        entries.push((
                            format!("{name}.nf4.offset"),
                            Dtype::F32,
                            vec![1],
                            f32s(&[*offset]),
                        ));
                    }
                }
            }
            QuantWeight::Int8(q) => {
                let codes: Vec<u8> = q.codes.iter().map(|&c| c as u8).collect();
                entries.push((
                    format!("{name}.int8.codes"),
                    Dtype::U8,
                    vec![codes.len()],
                    codes,
                ));
                entries.push((
                    format!("{name}.int8.absmax"),
                    Dtype::F32,
                    vec![q.absmax.len()],
                    f32s(&q.absmax),
                ));
            }
        }
    }
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(std::io::Error::other)
        })
        .collect::<std::io::Result<_>>()?;
    let metadata = HashMap::from([("wick.quantized_base".to_string(), key.to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(std::io::Error::other)
}

/// The weights in `path` when it exists and was made under `key`; `None` otherwise (also for a
/// damaged file, which the caller then replaces).
pub fn load(path: &Path, key: &str) -> Option<HashMap<String, Arc<QuantWeight>>> {
    let bytes = std::fs::read(path).ok()?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).ok()?;
    let made_for = meta.metadata().as_ref()?.get("wick.quantized_base")?;
    if made_for != key {
        return None;
    }
    let st = SafeTensors::deserialize(&bytes).ok()?;
    let raw = |n: &str| st.tensor(n).ok().map(|t| t.data().to_vec());
    let f32s = |n: &str| -> Option<Vec<f32>> {
        let b = raw(n)?;
        Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let mut out = HashMap::new();
    for name in st.names() {
        let Some(w) = name.strip_suffix(".shape") else {
            continue;
        };
        let s = raw(name)?;
        let dim = |i: usize| {
            u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]) as usize
        };
        let shape = (dim(0), dim(1));
        let q = if let Some(packed) = raw(&format!("{w}.nf4.packed")) {
            let absmax = match f32s(&format!("{w}.nf4.absmax")) {
                Some(a) => Absmax::Plain(a),
                None => Absmax::Double {
                    q: raw(&format!("{w}.nf4.qabsmax"))?,
                    absmax2: f32s(&format!("{w}.nf4.absmax2"))?,
                    offset: *f32s(&format!("{w}.nf4.offset"))?.first()?,
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
                absmax: f32s(&format!("{w}.int8.absmax"))?,
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
