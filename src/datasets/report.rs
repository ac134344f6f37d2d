//! The outcome of validating one uploaded dataset: counts, per-code error totals, the first
//! errors with their line numbers, and the dataset statistics. Stored with the file record and
//! returned by the API, so it is plain serde data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::DatasetStats;

/// What [`Validator::finish`](super::Validator::finish) reports about one file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ValidationReport {
    /// Lines in the file, blank ones included (a last line without `\n` counts).
    pub total_lines: u64,
    /// Whitespace-only lines: allowed and skipped.
    pub blank_lines: u64,
    /// Lines that are valid examples, duplicates included.
    pub valid_examples: u64,
    /// Lines rejected with an error code.
    pub invalid_lines: u64,
    /// Valid examples whose hash equals an earlier valid example's (the first one is kept).
    pub duplicates: u64,
    /// Number of errors per error code, over the whole file.
    pub error_counts: BTreeMap<String, u64>,
    /// The first [`MAX_REPORTED_ERRORS`] errors in line order (a `no_examples` error, line 0,
    /// comes first).
    pub errors: Vec<LineError>,
    /// Statistics over the valid examples (duplicates included).
    pub stats: DatasetStats,
}

/// How many [`LineError`]s a report keeps; `error_counts` still counts all of them.
pub const MAX_REPORTED_ERRORS: usize = 100;

impl ValidationReport {
    /// True when the file can be trained on: no invalid line and at least one valid example.
    /// The file's status is `processed` when this holds, else `error`.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.invalid_lines == 0 && self.valid_examples > 0
    }
}

/// One rejected line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number; 0 for errors about the whole file (`no_examples`).
    pub line: u64,
    /// Stable machine-readable code, e.g. `invalid_role`.
    pub code: String,
    /// JSON path of the offending field, e.g. `messages[2].role`; empty for the whole line.
    pub param: String,
    /// Human-readable explanation.
    pub message: String,
}
