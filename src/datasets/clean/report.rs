//! What a clean did, stored with the cleaned file and shown by the API and the dashboard: lines
//! kept and removed per rule, lines changed, personal data found per type, near-duplicate
//! groups, detected languages, and the first lines removed or changed, each with its number and
//! the rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::options::CleanOptions;
use crate::datasets::format::DatasetFormat;

/// How many [`CleanSample`]s a report keeps.
pub const MAX_SAMPLES: usize = 100;

/// The rules, in the order a line meets them; a removed line counts under the first that
/// removed it.
pub mod rule {
    /// The source line failed validation.
    pub const INVALID: &str = "invalid";
    /// `pii: "drop"` and the line held personal data; with `"mask"`, a change.
    pub const PII: &str = "pii";
    /// The line was written as OpenAI chat (`convert`); a change.
    pub const CONVERT: &str = "convert";
    pub use super::super::filters::rule::*;
    /// Outside `filters.languages`.
    pub const LANGUAGE: &str = "language";
    /// Equal to an earlier line's example.
    pub const DUPLICATE: &str = "duplicate";
    /// Near an earlier line's example (MinHash).
    pub const NEAR_DUPLICATE: &str = "near_duplicate";
}

/// The report of one clean.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CleanReport {
    /// The id of the file that was cleaned.
    pub source_file: String,
    /// The options as applied (defaults filled in).
    pub options: CleanOptions,
    /// The source's format, and the format written (chat after `convert`).
    pub source_format: DatasetFormat,
    pub format: DatasetFormat,
    /// Non-blank lines read.
    pub lines: u64,
    /// Whitespace-only lines, dropped.
    pub blank_lines: u64,
    /// Lines written.
    pub kept: u64,
    /// Lines removed, per rule (every rule the options turn on is listed, zeros included).
    pub removed: BTreeMap<String, u64>,
    /// Lines written changed, per rule (`pii` masked, `convert`).
    pub changed: BTreeMap<String, u64>,
    /// Personal data found per type (`email`, `phone`, ...): replaced in kept lines with
    /// `"mask"`, found in removed lines with `"drop"`.
    pub pii: BTreeMap<String, u64>,
    /// With near deduplication: the groups found and the LSH banding used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_duplicates: Option<NearDupSummary>,
    /// With a language filter: examples per detected language (`und` when too short to tell).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub languages: BTreeMap<String, u64>,
    /// The first [`MAX_SAMPLES`] lines removed or changed, in line order.
    pub samples: Vec<CleanSample>,
    /// Seconds the clean took, and input megabytes per second.
    pub seconds: f64,
}

/// Near-duplicate detection's figures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NearDupSummary {
    /// Groups of two or more lines joined by near-duplicate matches.
    pub clusters: u64,
    /// LSH bands and rows per band (bands × rows ≤ `num_perm`).
    pub bands: usize,
    pub rows: usize,
}

/// One removed or changed line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CleanSample {
    /// 1-based line number in the source file.
    pub line: u64,
    pub rule: String,
    pub action: SampleAction,
    /// What the rule saw: the validation error, the measure, the duplicated line, the types of
    /// personal data.
    pub detail: String,
    /// For a duplicate or near duplicate: the earlier line it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SampleAction {
    Removed,
    Changed,
}
