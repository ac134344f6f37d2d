//! Padding-free packing for supervised fine-tuning.
//!
//! Several tokenized conversations share one row. Positions restart at 0 for each example and the
//! attention mask is block-diagonal causal, so every example is computed exactly as if it sat
//! alone in its own row: the packed and unpacked batches give the same loss and gradients. The
//! first token of each example is never a label, so the last token of one example is never trained
//! to predict the first token of the next.
//!
//! Rows are filled greedily in order (an example that does not fit starts a new row), which keeps
//! the data order and so resumption deterministic. The tail of a row is padding: its own segment,
//! weight 0.

use candle_core::{DType, Device, Tensor};

use crate::chat::loss_mask::ChatExample;

/// Why examples could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("example {index} has {len} tokens, more than the row length {seq_len}")]
    TooLong {
        index: usize,
        len: usize,
        seq_len: usize,
    },
    #[error("example {0} has {1} ids but {2} mask entries")]
    Mismatch(usize, usize, usize),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One row: the examples' tokens back to back, and where each example ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRow {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    /// Length of each example in the row, in order.
    pub lengths: Vec<usize>,
}

/// A batch ready for `Llama::forward(input_ids, positions, Some(mask))` and
/// `shifted_cross_entropy(logits, input_ids, label_weights)`.
#[derive(Debug, Clone)]
pub struct SftBatch {
    /// (B, T) u32
    pub input_ids: Tensor,
    /// (B, T) u32, restarting at 0 for every example (and for the padding tail).
    pub positions: Tensor,
    /// (B, T) in the model's dtype: 1 where the token at `t` is a trained label.
    pub label_weights: Tensor,
    /// (B, 1, T, T) additive: 0 where query `i` may attend key `j` (same example, `j <= i`),
    /// -inf elsewhere.
    pub mask: Tensor,
    /// Counted label tokens in the batch.
    pub tokens: usize,
}

/// Packs `examples` into rows of at most `seq_len` tokens; with `packing` false, one example per
/// row.
pub fn pack_examples(
    examples: &[ChatExample],
    seq_len: usize,
    packing: bool,
) -> Result<Vec<PackedRow>, PackError> {
    let mut rows: Vec<PackedRow> = Vec::new();
    let mut row = PackedRow::default();
    for (index, ex) in examples.iter().enumerate() {
        let len = ex.input_ids.len();
        if len > seq_len {
            return Err(PackError::TooLong {
                index,
                len,
                seq_len,
            });
        }
        if len != ex.loss_mask.len() {
            return Err(PackError::Mismatch(index, len, ex.loss_mask.len()));
        }
        if !row.lengths.is_empty() && (!packing || row.input_ids.len() + len > seq_len) {
            rows.push(std::mem::take(&mut row));
        }
        row.input_ids.extend_from_slice(&ex.input_ids);
        row.loss_mask.extend_from_slice(&ex.loss_mask);
        row.lengths.push(len);
    }
    if !row.lengths.is_empty() {
        rows.push(row);
    }
    Ok(rows)
}

/// Turns rows into tensors of width `T` = the longest row, padding with `pad_id`.
pub fn collate(
    rows: &[PackedRow],
    pad_id: u32,
    dtype: DType,
    device: &Device,
) -> Result<SftBatch, PackError> {
    let b = rows.len();
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * t);
    let mut pos = Vec::with_capacity(b * t);
    let mut weights = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t * t);
    let mut tokens = 0usize;
    for row in rows {
        let used = row.input_ids.len();
        // Segment index per position; the padding tail is a segment of its own.
        let mut seg = Vec::with_capacity(t);
        let mut lengths = row.lengths.clone();
        if used < t {
            lengths.push(t - used);
        }
        for (s, &len) in lengths.iter().enumerate() {
            for p in 0..len {
                seg.push(s);
                pos.push(p as u32);
            }
        }
        let mut start = 0;
        for &len in &row.lengths {
            for p in 0..len {
                // The first token of an example has no prediction inside the example.
                let w = if p == 0 { 0 } else { row.loss_mask[start + p] };
                weights.push(f32::from(w));
                tokens += usize::from(w);
            }
            start += len;
        }
        ids.extend_from_slice(&row.input_ids);
        ids.extend(std::iter::repeat_n(pad_id, t - used));
        weights.extend(std::iter::repeat_n(0f32, t - used));
        for i in 0..t {
            for j in 0..t {
                let visible = j <= i && seg[i] == seg[j];
                mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(SftBatch {
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        positions: Tensor::from_vec(pos, (b, t), device)?,
        label_weights: Tensor::from_vec(weights, (b, t), device)?.to_dtype(dtype)?,
        mask: Tensor::from_vec(mask, (b, 1, t, t), device)?.to_dtype(dtype)?,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::{Llama, sequential_positions};
    use crate::model::{ModelConfig, init_varmap};
    use crate::train::loss::shifted_cross_entropy;
    use candle_nn::VarBuilder;

    fn example(ids: &[u32], mask: &[u8]) -> ChatExample {
        ChatExample {
            input_ids: ids.to_vec(),
            loss_mask: mask.to_vec(),
            truncated: false,
        }
    }

    fn examples() -> Vec<ChatExample> {
        vec![
            example(&[1, 5, 6, 7, 8, 2], &[0, 0, 1, 1, 1, 1]),
            example(&[1, 9, 10, 2], &[0, 0, 1, 1]),
            example(&[1, 11, 12, 13, 14, 15, 16, 2], &[0, 0, 0, 1, 1, 0, 1, 1]),
            example(&[1, 17, 2], &[0, 1, 1]),
            example(&[1, 18, 19, 20, 2], &[0, 0, 0, 1, 1]),
        ]
    }

    #[test]
    fn packs_greedily_with_restarting_positions_and_block_mask() {
        let rows = pack_examples(&examples(), 12, true).unwrap();
        let lengths: Vec<Vec<usize>> = rows.iter().map(|r| r.lengths.clone()).collect();
        assert_eq!(lengths, vec![vec![6, 4], vec![8, 3], vec![5]]);
        let batch = collate(&rows[..2], 0, DType::F32, &Device::Cpu).unwrap();
        let pos: Vec<Vec<u32>> = batch.positions.to_vec2().unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0]);
        assert_eq!(pos[1], vec![0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]);
        let w: Vec<Vec<f32>> = batch.label_weights.to_vec2().unwrap();
        assert_eq!(w[0], vec![0., 0., 1., 1., 1., 1., 0., 0., 1., 1., 0.]);
        // Row 0: 4 + 2 labels; row 1: 4 + 2 (first tokens never count).
        assert_eq!(batch.tokens, 4 + 2 + 4 + 2);
        let t = 11;
        let flat: Vec<f32> = batch.mask.flatten_all().unwrap().to_vec1().unwrap();
        let visible = |row: usize, i: usize| -> Vec<usize> {
            (0..t)
                .filter(|&j| flat[(row * t + i) * t + j] == 0.0)
                .collect()
        };
        // Row 0: token 7 (second example, position 1) sees tokens 6 and 7 only.
        assert_eq!(visible(0, 7), vec![6, 7]);
        // Row 1: the last token of the first example sees its whole example, causally.
        assert_eq!(visible(1, 7), (0..8).collect::<Vec<_>>());
        // The padding token sees only itself.
        assert_eq!(visible(0, 10), vec![10]);
        // Without packing: one example per row.
        assert_eq!(pack_examples(&examples(), 12, false).unwrap().len(), 5);
        assert!(matches!(
            pack_examples(&examples(), 7, true),
            Err(PackError::TooLong { index: 2, .. })
        ));
    }

    /// Summed loss and gradients of `model` on `batch`, with the packed mask and positions or,
    /// when `plain`, the model's own causal mask and positions 0..T.
    fn loss_and_grads(
        model: &Llama,
        vars: &[(String, candle_core::Var)],
        batch: &SftBatch,
        plain: bool,
    ) -> (f64, Vec<Tensor>) {
        let logits = if plain {
            let (b, t) = batch.input_ids.dims2().unwrap();
            let pos = sequential_positions(b, t, &Device::Cpu).unwrap();
            model.forward(&batch.input_ids, &pos, None).unwrap()
        } else {
            model
                .forward(&batch.input_ids, &batch.positions, Some(&batch.mask))
                .unwrap()
        };
        let s = shifted_cross_entropy(&logits, &batch.input_ids, &batch.label_weights).unwrap();
        let grads = s.loss_sum.backward().unwrap();
        let g = vars
            .iter()
            .map(|(_, v)| grads.get(v.as_tensor()).unwrap().clone())
            .collect();
        (s.loss_sum.to_scalar::<f64>().unwrap(), g)
    }

    #[test]
    fn packed_and_unpacked_give_the_same_loss_and_gradients() {
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::llama(24, 16, 32, 2, 4, 2, 32);
        cfg.initializer_range = 0.3; // far from uniform logits, so every op matters
        let varmap = init_varmap(&cfg, 7, DType::F64, &dev).unwrap();
        let model = Llama::load(VarBuilder::from_varmap(&varmap, DType::F64, &dev), &cfg).unwrap();
        let vars: Vec<(String, candle_core::Var)> = {
            let data = varmap.data().lock().unwrap();
            let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let exs = examples();
        let packed = collate(&pack_examples(&exs, 12, true).unwrap(), 0, DType::F64, &dev).unwrap();
        let single = collate(
            &pack_examples(&exs, 12, false).unwrap(),
            0,
            DType::F64,
            &dev,
        )
        .unwrap();
        assert_eq!(packed.input_ids.dim(0).unwrap(), 3);
        assert_eq!(single.input_ids.dim(0).unwrap(), 5);
        assert_eq!(packed.tokens, single.tokens);
        let (l_packed, g_packed) = loss_and_grads(&model, &vars, &packed, false);
        // Unpacked rows use the model's plain causal mask and positions: the standard path.
        let (l_single, g_single) = loss_and_grads(&model, &vars, &single, true);
        assert!(l_packed > 1.0, "{l_packed}");
        assert!(
            (l_packed - l_single).abs() < 1e-5,
            "{l_packed} vs {l_single}"
        );
        for ((name, _), (a, b)) in vars.iter().zip(g_packed.iter().zip(&g_single)) {
            let diff = crate::testing::max_abs_diff(a, b);
            let norm = crate::testing::max_abs(a);
            assert!(norm > 0.0, "{name} got no gradient");
            assert!(diff < 1e-5, "{name}: max |Δgrad| = {diff}");
        }
        // A mask that lets examples see each other changes the loss: the test can fail.
        let leaky = Tensor::zeros_like(&packed.mask).unwrap();
        let logits = model
            .forward(&packed.input_ids, &packed.positions, Some(&leaky))
            .unwrap();
        let s = shifted_cross_entropy(&logits, &packed.input_ids, &packed.label_weights).unwrap();
        assert!((s.loss_sum.to_scalar::<f64>().unwrap() - l_single).abs() > 1e-3);
    }

    #[test]
    fn sft_loss_matches_pytorch_reference() {
        // tests/fixtures/sft_reference.json comes from tests/fixtures/make_sft_reference.py:
        // transformers' LlamaForCausalLM on the tiny-llama-gqa fixture, cross-entropy of shifted
        // labels with -100 outside the assistant mask, mean over the batch's counted tokens.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let text = std::fs::read_to_string(root.join("sft_reference.json")).unwrap();
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        let dev = Device::Cpu;
        let dir = root.join("tiny-llama-gqa");
        let cfg = crate::model::hf::read_config(&dir).unwrap();
        let weights = crate::model::hf::load_weights(&dir, &cfg, DType::F32, &dev).unwrap();
        let model = Llama::load(VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg).unwrap();
        let exs: Vec<ChatExample> = r["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| ChatExample {
                input_ids: serde_json::from_value(e["input_ids"].clone()).unwrap(),
                loss_mask: serde_json::from_value(e["loss_mask"].clone()).unwrap(),
                truncated: false,
            })
            .collect();
        let want = r["loss"].as_f64().unwrap();
        for packing in [true, false] {
            let rows = pack_examples(&exs, 32, packing).unwrap();
            assert_eq!(rows.len(), if packing { 1 } else { 3 });
            let batch = collate(&rows, 0, DType::F32, &dev).unwrap();
            let logits = model
                .forward(&batch.input_ids, &batch.positions, Some(&batch.mask))
                .unwrap();
            let s = shifted_cross_entropy(&logits, &batch.input_ids, &batch.label_weights).unwrap();
            assert_eq!(s.tokens as u64, r["tokens"].as_u64().unwrap());
            assert_eq!(batch.tokens as u64, r["tokens"].as_u64().unwrap());
            let got = s.loss_sum.to_scalar::<f32>().unwrap() as f64 / s.tokens;
            assert!(
                (got - want).abs() < 1e-5,
                "packing {packing}: {got} vs {want}"
            );
        }
    }
}
