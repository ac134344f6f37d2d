//! Training data: stream a JSONL file of `{"text": ...}` documents, tokenise it on every core,
//! join the documents with EOS into one token stream, pack it into rows of `max_seq_len`, hold out
//! a validation split, and hand out rows in a seeded shuffled order, epoch after epoch.
//!
//! The order is a pure function of (seed, epoch), so the data position of a resumed run is just
//! the number of rows consumed so far.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::datasets::bom::strip_bom_str;

/// Why the training data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    #[error("{path}: no documents with text")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Moves a seeded `fraction` of `items` (rounded down, at most all but one) out into the
/// validation split, both keeping file order. Chat methods hold out examples or pairs this way
/// when the job has no validation file.
pub fn hold_out<T>(items: &mut Vec<T>, fraction: f64, seed: u64) -> Vec<T> {
    let mut held = vec![false; items.len()];
    for i in held_out_indices(items.len(), fraction, seed) {
        held[i] = true;
    }
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (item, h) in std::mem::take(items).into_iter().zip(held) {
        if h {
            valid.push(item)
        } else {
            train.push(item)
        }
    }
    *items = train;
    valid
}

/// Which of `n` items [`hold_out`] moves to the validation split, in order.
pub fn held_out_indices(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let k = (n as f64 * fraction).floor() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut held = order[..k.min(n.saturating_sub(1))].to_vec();
    held.sort_unstable();
    held
}

impl DataError {
    /// A problem with line `line` (1-based) of `path`.
    pub fn line(path: &Path, line: usize, message: String) -> Self {
        DataError::Line {
            path: path.to_path_buf(),
            line,
            message,
        }
    }
}

/// Calls `f(line_number, line)` (1-based) for every non-blank line of the file at `path`, in
/// order, stopping at the first error. A byte order mark before line 1 is skipped, as upload
/// validation skips it (`datasets::bom`).
pub fn for_each_jsonl_line<E: From<DataError>>(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), E>,
) -> Result<(), E> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let line = if i == 0 { strip_bom_str(&line) } else { &line };
        if !line.trim().is_empty() {
            f(i + 1, line)?;
        }
    }
    Ok(())
}

/// The `text` of every non-blank line of a JSONL file, read lazily; errors name the line. A
/// byte order mark before line 1 is skipped.
pub struct JsonlTexts {
    path: PathBuf,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    line: usize,
}

impl JsonlTexts {
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(JsonlTexts {
            path: path.to_path_buf(),
            lines: BufReader::new(file).lines(),
            line: 0,
        })
    }
}

impl Iterator for JsonlTexts {
    type Item = Result<String, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = self.lines.next()?;
            self.line += 1;
            let err = |message: String| DataError::Line {
                path: self.path.clone(),
                line: self.line,
                message,
            };
            let raw = match raw {
                Ok(r) => r,
                Err(e) => return Some(Err(err(e.to_string()))),
            };
            let raw = if self.line == 1 {
                strip_bom_str(&raw)
            } else {
                &raw
            };
            if raw.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(raw) {
                Ok(v) => v,
                Err(e) => return Some(Err(err(format!("not valid JSON: {e}")))),
            };
            return Some(match v.get("text").and_then(|t| t.as_str()) {
                Some(t) => Ok(t.to_string()),
                None => Err(err("expected an object with a string field \"text\"".into())),
            });
        }
    }
}

/// Documents tokenised per chunk; a chunk is split across the rayon pool.
const CHUNK_DOCS: usize = 2048;

/// Tokenises every document of `path` and joins them into one stream, each followed by `eos`.
/// Reads the file in chunks so memory holds one chunk of text at a time.
pub fn tokenize_file(path: &Path, tokenizer: &Tokenizer, eos: u32) -> Result<Vec<u32>, DataError> {
    let mut stream = Vec::new();
    let mut texts = JsonlTexts::open(path)?;
    let mut docs = 0usize;
    loop {
        let chunk: Vec<String> = texts.by_ref().take(CHUNK_DOCS).collect::<Result<_, _>>()?;
        if chunk.is_empty() {
            break;
        }
        docs += chunk.len();
        let encoded: Vec<Vec<u32>> = chunk
            .par_iter()
            .map(|t| {
                tokenizer
                    .encode_fast(t.as_str(), false)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| DataError::Tokenize(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        for ids in encoded {
            stream.extend_from_slice(&ids);
            stream.push(eos);
        }
    }
    if docs == 0 || stream.len() < 2 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(stream)
}

/// Token rows of a fixed length. The last row may be padded; `real[i]` says how many leading
/// tokens of row `i` are real.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedRows {
    pub seq_len: usize,
    tokens: Vec<u32>,
    real: Vec<usize>,
}

impl PackedRows {
    /// Cuts `stream` into consecutive rows of `seq_len` tokens; a final partial row of at least
    /// two tokens is padded with `pad`.
    pub fn pack(stream: &[u32], seq_len: usize, pad: u32) -> Self {
        let mut tokens = Vec::with_capacity(stream.len().div_ceil(seq_len) * seq_len);
        let mut real = Vec::new();
        for chunk in stream.chunks(seq_len) {
            if chunk.len() < 2 {
                break;
            }
            tokens.extend_from_slice(chunk);
            tokens.resize(tokens.len() + seq_len - chunk.len(), pad);
            real.push(chunk.len());
        }
        PackedRows {
            seq_len,
            tokens,
            real,
        }
    }

    /// No rows yet, of `seq_len` tokens each.
    pub fn empty(seq_len: usize) -> Self {
        PackedRows {
            seq_len,
            tokens: Vec::new(),
            real: Vec::new(),
        }
    }

    /// Appends `other`'s rows (of the same length) after these.
    pub fn append(&mut self, other: &PackedRows) {
        assert_eq!(self.seq_len, other.seq_len, "rows of one length");
        self.tokens.extend_from_slice(&other.tokens);
        self.real.extend_from_slice(&other.real);
    }

    /// Real (non-padding) tokens of row `i`.
    pub fn real_tokens(&self, i: usize) -> usize {
        self.real[i]
    }

    /// The mean length of the documents in row `i` (its real tokens over the documents they
    /// touch, counted by their `eos`): what "short" means for the length curriculum.
    pub fn mean_document_length(&self, i: usize, eos: u32) -> f64 {
        let real = &self.row(i)[..self.real[i]];
        let ends = real.iter().filter(|&&t| t == eos).count();
        let docs = ends + usize::from(real.last() != Some(&eos));
        real.len() as f64 / docs.max(1) as f64
    }

    pub fn len(&self) -> usize {
        self.real.len()
    }

    pub fn is_empty(&self) -> bool {
        self.real.is_empty()
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> PackedRows {
        let mut tokens = Vec::with_capacity(indices.len() * self.seq_len);
        for &i in indices {
            tokens.extend_from_slice(self.row(i));
        }
        PackedRows {
            seq_len: self.seq_len,
            tokens,
            real: indices.iter().map(|&i| self.real[i]).collect(),
        }
    }

    /// Splits off a validation set of `fraction` of the rows (at least one when `fraction > 0` and
    /// there are two rows or more), chosen by `seed`. Both parts keep the file order.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> (PackedRows, PackedRows) {
        let n = self.len();
        let mut n_valid = (fraction * n as f64).round() as usize;
        if fraction > 0.0 && n >= 2 {
            n_valid = n_valid.clamp(1, n - 1);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed_7a11_da7a_0001));
        let mut valid: Vec<usize> = order[..n_valid].to_vec();
        let mut train: Vec<usize> = order[n_valid..].to_vec();
        valid.sort_unstable();
        train.sort_unstable();
        (self.select(&train), self.select(&valid))
    }

    /// The loss-bearing tokens of a row: every real token except the first, which nothing predicts.
    pub fn counted_tokens(&self, i: usize) -> usize {
        self.real[i].saturating_sub(1)
    }

    /// Builds the batch of rows `indices`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch, DataError> {
        let (b, t) = (indices.len(), self.seq_len);
        let mut ids = Vec::with_capacity(b * t);
        let mut weights = Vec::with_capacity(b * t);
        let mut counted = 0usize;
        for &i in indices {
            ids.extend_from_slice(self.row(i));
            // The label at position p is counted when p holds a real token (p = 0 is never a label).
            weights.extend((0..t).map(|p| if p < self.real[i] { 1f32 } else { 0.0 }));
            counted += self.counted_tokens(i);
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            positions: crate::model::llama::sequential_positions(b, t, device)?,
            label_weights: Tensor::from_vec(weights, (b, t), device)?,
            counted_tokens: counted,
        })
    }
}

/// One micro-batch ready for the model.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input_ids: Tensor,     // (B, T) u32
    pub positions: Tensor,     // (B, T) u32
    pub label_weights: Tensor, // (B, T) f32, weight of the label at each position
    pub counted_tokens: usize,
}

/// Hands out row indices in a seeded shuffled order, epoch after epoch. Its whole state is the
/// number of rows handed out so far.
#[derive(Debug, Clone)]
pub struct RowSampler {
    n_rows: usize,
    seed: u64,
    position: u64,
    order: Option<(u64, Vec<usize>)>,
}

impl RowSampler {
    pub fn new(n_rows: usize, seed: u64, position: u64) -> Self {
        assert!(n_rows > 0, "a sampler needs rows");
        RowSampler {
            n_rows,
            seed,
            position,
            order: None,
        }
    }

    /// Rows handed out so far, across epochs: the data position a checkpoint stores.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Epochs consumed, fractional.
    pub fn epoch(&self) -> f64 {
        self.position as f64 / self.n_rows as f64
    }

    /// The permutation of rows for `epoch`, a pure function of (seed, epoch).
    pub fn epoch_order(n_rows: usize, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n_rows).collect();
        let mix =
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        order.shuffle(&mut StdRng::seed_from_u64(mix));
        order
    }

    /// The next `count` row indices.
    pub fn next_rows(&mut self, count: usize) -> Vec<usize> {
        (0..count)
            .map(|_| {
                let epoch = self.position / self.n_rows as u64;
                let within = (self.position % self.n_rows as u64) as usize;
                if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    self.order = Some((epoch, Self::epoch_order(self.n_rows, self.seed, epoch)));
                }
                self.position += 1;
                self.order.as_ref().expect("order set above").1[within]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_before_line_1_is_skipped_by_both_readers() {
        // As Windows Notepad saves UTF-8: a byte order mark, CRLF line ends.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.jsonl");
        std::fs::write(
            &path,
            "\u{feff}{\"text\": \"one\"}\r\n\r\n{\"text\": \"two\"}\r\n",
        )
        .unwrap();
        let mut lines = Vec::new();
        for_each_jsonl_line::<DataError>(&path, |n, line| {
            lines.push((n, line.to_string()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            lines,
            [
                (1, "{\"text\": \"one\"}".to_string()),
                (3, "{\"text\": \"two\"}".to_string())
            ]
        );
        let texts: Vec<String> = JsonlTexts::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts, ["one", "two"]);
    }

    #[test]
    fn packing_pads_the_last_row_and_counts_real_tokens() {
        let stream: Vec<u32> = (10..21).collect(); // 11 tokens
        let rows = PackedRows::pack(&stream, 4, 0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.row(2), &[18, 19, 20, 0]);
        assert_eq!(rows.counted_tokens(0), 3);
        assert_eq!(rows.counted_tokens(2), 2);
        let b = rows.batch(&[2, 0], &Device::Cpu).unwrap();
        assert_eq!(b.counted_tokens, 5);
        assert_eq!(
            b.label_weights.to_vec2::<f32>().unwrap()[0],
            vec![1.0, 1.0, 1.0, 0.0]
        );
        // A lone trailing token cannot form a row.
        assert_eq!(PackedRows::pack(&stream[..9], 4, 0).len(), 2);
    }

    #[test]
    fn sampler_visits_every_row_once_per_epoch_and_resumes_from_its_position() {
        let mut s = RowSampler::new(10, 7, 0);
        let first: Vec<usize> = s.next_rows(10);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second = s.next_rows(10);
        assert_ne!(first, second, "each epoch is reshuffled");
        let mut a = RowSampler::new(10, 7, 0);
        let _ = a.next_rows(13);
        let rest_a = a.next_rows(9);
        let mut b = RowSampler::new(10, 7, 13);
        assert_eq!(b.next_rows(9), rest_a);
    }

    #[test]
    fn validation_split_is_disjoint_and_seeded() {
        let stream: Vec<u32> = (0..400).collect();
        let rows = PackedRows::pack(&stream, 10, 0);
        let (train, valid) = rows.split_validation(0.1, 3);
        assert_eq!((train.len(), valid.len()), (36, 4));
        let (_, valid2) = rows.split_validation(0.1, 3);
        assert_eq!(valid, valid2);
        let firsts: Vec<u32> = (0..valid.len()).map(|i| valid.row(i)[0]).collect();
        assert!((0..train.len()).all(|i| !firsts.contains(&train.row(i)[0])));
    }
}
