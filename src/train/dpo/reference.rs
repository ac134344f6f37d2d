//! The reference model's log-probabilities: each pair's summed log-prob of its chosen and its
//! rejected output under the starting model, computed once before the first step and kept in
//! the job's folder while it runs ([`FILE`], which every checkpoint carries; the finished export
//! drops it), so a resumed job reads them back instead of needing the starting weights again. For LoRA the starting model is the base with
//! the adapters off; fresh adapters add exactly zero (PEFT initialises B to zero), so the model
//! that is about to train *is* the reference at step 0 and no second copy is held.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::data::{PreferencePair, collate_pairs};
use crate::model::Llama;
use crate::train::job::TrainError;
use crate::train::loss::model_row_log_probs;
use crate::train::progress::Progress;

/// The file, in the job's output folder and in each checkpoint (which carries it).
pub const FILE: &str = crate::train::checkpoint::REFERENCE_LOGPS_FILE;

/// Per pair: the reference's summed log-probs of (chosen, rejected).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub train: Vec<[f64; 2]>,
    pub valid: Vec<[f64; 2]>,
}

/// Summed log-probs of (chosen, rejected) for every pair, `batch_size` pairs at a time, with the
/// model as it is (the caller puts it in evaluation mode). `on_batch` hears the pairs done.
pub fn sequence_logps(
    net: &Llama,
    pairs: &[PreferencePair],
    batch_size: usize,
    pad: u32,
    device: &Device,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<[f64; 2]>, TrainError> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&PreferencePair> = chunk.iter().collect();
        let b = collate_pairs(&refs, pad, device)?;
        let hidden = net
            .forward_hidden(&b.input_ids, &b.positions, None)?
            .detach();
        let rows = model_row_log_probs(net, &hidden, &b.input_ids, &b.label_weights)?;
        let v = rows.log_probs.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let n = chunk.len();
        out.extend((0..n).map(|i| [v[i], v[n + i]]));
        on_batch(out.len());
    }
    Ok(out)
}

impl Reference {
    /// Computes the reference for both splits, reporting progress as the `reference_logps` phase.
    pub fn compute(
        net: &Llama,
        train: &[PreferencePair],
        valid: &[PreferencePair],
        batch_size: usize,
        pad: u32,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Reference, TrainError> {
        let total = (train.len() + valid.len()) as u64;
        progress.on_phase("reference_logps", 0, total);
        let train_lp = sequence_logps(net, train, batch_size, pad, device, &mut |done| {
            progress.on_phase("reference_logps", done as u64, total)
        })?;
        let offset = train.len() as u64;
        let valid_lp = sequence_logps(net, valid, batch_size, pad, device, &mut |done| {
            progress.on_phase("reference_logps", offset + done as u64, total)
        })?;
        Ok(Reference {
            train: train_lp,
            valid: valid_lp,
        })
    }

    /// Writes the reference to `dir/`[`FILE`].
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let as_tensor = |v: &[[f64; 2]]| -> candle_core::Result<Tensor> {
            let flat: Vec<f64> = v.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (v.len(), 2), &dev)
        };
        let tensors: HashMap<String, Tensor> = [
            ("train".to_string(), as_tensor(&self.train)?),
            ("valid".to_string(), as_tensor(&self.valid)?),
        ]
        .into();
        let path = dir.join(FILE);
        let tmp = dir.join(format!(".{FILE}.tmp"));
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|source| TrainError::Io { path, source })
    }

    /// Reads `dir/`[`FILE`] when it is there and holds `n_train` and `n_valid` pairs.
    pub fn load(
        dir: &Path,
        n_train: usize,
        n_valid: usize,
    ) -> Result<Option<Reference>, TrainError> {
        let path = dir.join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let read = |name: &str, n: usize| -> Result<Option<Vec<[f64; 2]>>, TrainError> {
            let Some(t) = tensors.get(name) else {
                return Ok(None);
            };
            let rows = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            if rows.len() != n || rows.iter().any(|r| r.len() != 2) {
                return Ok(None);
            }
            Ok(Some(rows.into_iter().map(|r| [r[0], r[1]]).collect()))
        };
        match (read("train", n_train)?, read("valid", n_valid)?) {
            (Some(train), Some(valid)) => Ok(Some(Reference { train, valid })),
            _ => {
                tracing::warn!(path = %path.display(), "reference log-probs do not match the data");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/fixtures/dpo_reference.json (`sequences`) comes from make_dpo_reference.py:
    /// transformers' LlamaForCausalLM on the tiny-llama-gqa fixture, each sequence alone, the sum
    /// of log-softmax at the masked labels. Wick batches the three pairs as one padded batch of
    /// six rows, as training does.
    #[test]
    fn sequence_log_probs_match_pytorch() {
        use crate::chat::loss_mask::ChatExample;
        use candle_nn::VarBuilder;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let text = std::fs::read_to_string(root.join("dpo_reference.json")).unwrap();
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        let dev = Device::Cpu;
        let dir = root.join("tiny-llama-gqa");
        let cfg = crate::model::hf::read_config(&dir).unwrap();
        let weights = crate::model::hf::load_weights(&dir, &cfg, DType::F32, &dev).unwrap();
        let net = Llama::load(VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg).unwrap();
        let seqs = r["sequences"].as_array().unwrap();
        let example = |i: usize| ChatExample {
            input_ids: serde_json::from_value(seqs[i]["input_ids"].clone()).unwrap(),
            loss_mask: serde_json::from_value(seqs[i]["loss_mask"].clone()).unwrap(),
            truncated: false,
        };
        let pairs: Vec<PreferencePair> = r["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PreferencePair {
                chosen: example(p[0].as_u64().unwrap() as usize),
                rejected: example(p[1].as_u64().unwrap() as usize),
            })
            .collect();
        let got = sequence_logps(&net, &pairs, 3, 0, &dev, &mut |_| {}).unwrap();
        for (pair, (p, g)) in r["pairs"].as_array().unwrap().iter().zip(&got).enumerate() {
            for side in 0..2 {
                let seq = &seqs[p[side].as_u64().unwrap() as usize];
                let want = seq["logp"].as_f64().unwrap();
                assert!(
                    (g[side] - want).abs() < 1e-5,
                    "pair {pair} side {side}: {} vs {want}",
                    g[side]
                );
                let tokens = PreferencePair::counted(if side == 0 {
                    &pairs[pair].chosen
                } else {
                    &pairs[pair].rejected
                });
                assert_eq!(tokens as u64, seq["tokens"].as_u64().unwrap());
            }
        }
    }

    #[test]
    fn save_and_load_round_trip_and_check_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reference {
            train: vec![[-1.25, -3.5], [-0.1, -7.0 / 3.0]],
            valid: vec![[-2.0, -4.0]],
        };
        r.save(dir.path()).unwrap();
        assert_eq!(Reference::load(dir.path(), 2, 1).unwrap(), Some(r));
        assert_eq!(Reference::load(dir.path(), 3, 1).unwrap(), None);
        assert_eq!(
            Reference::load(&dir.path().join("none"), 2, 1).unwrap(),
            None
        );
    }
}
