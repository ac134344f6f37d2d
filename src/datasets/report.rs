//! The outcome of validating one uploaded dataset: counts, per-code error totals, the first
//! errors with their line numbers, and the dataset statistics. Stored with the file record and
//! returned by the API, so it is plain serde data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format::{DatasetFormat, Purpose};
use super::stats::DatasetStats;

/// What [`Validator::finish`](super::Validator::finish) reports about one file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ValidationReport {
    /// The schema the lines were checked against. A `fine-tune` file is chat or preference, as
    /// its first valid line says (when no line is valid: the first line whose top-level keys name
    /// one, else chat); `pretrain` files are text. Always set by the validator; `None` only in
    /// reports stored before this field existed, which [`Self::format_or_legacy`] reads as
    /// [`DatasetFormat::legacy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DatasetFormat>,
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

    /// The file's format, also for reports stored before `format` existed.
    #[must_use]
    pub fn format_or_legacy(&self, purpose: Purpose) -> DatasetFormat {
        self.format.unwrap_or(DatasetFormat::legacy(purpose))
    }
}

/// One rejected line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number; 0 for errors about the whole file (`no_examples`).
    pub line: u64,
    /// Stable machine-readable code, e.g. `invalid_role`.
    pub code: String,
    /// JSON path of the offending field, e.g. `messages[2].role` or
    /// `input.messages[0].content`; empty for the whole line.
    pub param: String,
    /// Human-readable explanation.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stored_before_formats_still_read() {
        // A chat report as stored before `format` and `stats.preference` existed.
        let old = serde_json::json!({
            "total_lines": 1, "blank_lines": 0, "valid_examples": 1, "invalid_lines": 0,
            "duplicates": 0, "error_counts": {}, "errors": [],
            "stats": {
                "examples": 1,
                "messages_per_example": {"min": 2, "mean": 2.0, "max": 2},
                "chars_per_example": {"min": 7, "mean": 7.0, "max": 7},
                "role_counts": {"assistant": 1, "user": 1},
                "length_histogram": [{"le": 8, "count": 1}]
            }
        });
        let r: ValidationReport = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(r.format, None);
        assert!(r.stats.preference.is_none());
        assert_eq!(r.format_or_legacy(Purpose::FineTune), DatasetFormat::Chat);
        assert_eq!(r.format_or_legacy(Purpose::Pretrain), DatasetFormat::Text);
        // And writes back unchanged: neither absent field is written as null.
        assert_eq!(serde_json::to_value(&r).unwrap(), old);
        let names: Vec<String> = [
            DatasetFormat::Chat,
            DatasetFormat::Preference,
            DatasetFormat::Text,
        ]
        .iter()
        .map(|f| serde_json::to_string(f).unwrap())
        .collect();
        assert_eq!(names, ["\"chat\"", "\"preference\"", "\"text\""]);
    }
}
