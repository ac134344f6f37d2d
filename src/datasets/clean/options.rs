//! What a clean does: the options of `POST /v1/files/{id}/clean`, their defaults, and the checks
//! that refuse a bad one naming it (`near_dup.threshold`, `filters.languages[1]`, ...).

use serde::{Deserialize, Serialize};

use super::language;
use crate::datasets::format::DatasetFormat;

/// Every option of a clean; `{}` is exact deduplication and nothing else.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CleanOptions {
    #[serde(default)]
    pub dedup: Dedup,
    /// MinHash settings, with `dedup: "near"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_dup: Option<NearDupOptions>,
    #[serde(default)]
    pub pii: PiiAction,
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    /// Write OpenAI chat lines from ShareGPT or Alpaca ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<ConvertTarget>,
}

/// Which duplicates a clean removes (the first of each group is kept).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// Examples whose canonical form equals an earlier one's (the upload report's duplicates).
    #[default]
    Exact,
    /// Exact duplicates, then near duplicates by MinHash (estimated Jaccard similarity of word
    /// n-gram sets at or above the threshold).
    Near,
    None,
}

/// MinHash near-duplicate settings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NearDupOptions {
    /// Jaccard similarity at or above which two examples are near duplicates.
    #[serde(default = "NearDupOptions::default_threshold")]
    pub threshold: f64,
    /// Hash permutations per signature.
    #[serde(default = "NearDupOptions::default_num_perm")]
    pub num_perm: usize,
    /// Words per shingle (CJK characters count as words).
    #[serde(default = "NearDupOptions::default_ngram")]
    pub ngram: usize,
}

impl NearDupOptions {
    fn default_threshold() -> f64 {
        0.8
    }
    fn default_num_perm() -> usize {
        128
    }
    fn default_ngram() -> usize {
        5
    }
}

impl Default for NearDupOptions {
    fn default() -> Self {
        NearDupOptions {
            threshold: Self::default_threshold(),
            num_perm: Self::default_num_perm(),
            ngram: Self::default_ngram(),
        }
    }
}

/// What happens to personal data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    #[default]
    Keep,
    /// Replaced by typed placeholders (`<EMAIL>`, `<PHONE>`, ...).
    Mask,
    /// Lines holding any are removed.
    Drop,
}

/// Quality filters; each applies when set. Lengths and shares are of the example's text: the
/// `text` of a document, the message contents of a chat (or the fields a ShareGPT or Alpaca
/// line converts to), a preference pair's prompt and both outputs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Fewest characters (Unicode scalar values) an example may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_chars: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u64>,
    /// Largest share of non-blank lines that repeat an earlier line of the same example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_repeated_line_share: Option<f64>,
    /// Largest share of characters (of words) inside word n-grams that occur more than once in
    /// the example, n = `repeated_ngram_size` (Gopher's duplicate n-gram character fraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_repeated_ngram_share: Option<f64>,
    /// n for `max_repeated_ngram_share` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated_ngram_size: Option<usize>,
    /// Largest share of non-whitespace characters that are neither letters nor digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_non_alnum_share: Option<f64>,
    /// Keep only examples in these languages (ISO 639-1 like `en`, or 639-3 like `eng`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
}

impl Filters {
    /// No filter set.
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }
}

/// The format `convert` writes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConvertTarget {
    /// OpenAI's `{"messages": [...]}`.
    Chat,
}

/// A bad option: its dotted name and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct OptionError {
    pub param: String,
    pub message: String,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> OptionError {
    OptionError {
        param: param.into(),
        message: message.into(),
    }
}

fn share(param: &str, v: Option<f64>) -> Result<(), OptionError> {
    match v {
        Some(x) if !(0.0..=1.0).contains(&x) => Err(bad(
            param,
            format!("{param} must be between 0 and 1, got {x}"),
        )),
        _ => Ok(()),
    }
}

impl CleanOptions {
    /// The MinHash settings that apply (the defaults when `near_dup` is absent).
    pub fn near(&self) -> NearDupOptions {
        self.near_dup.unwrap_or_default()
    }

    /// Checks the options against each other and against the file's `format`.
    pub fn validate(&self, format: DatasetFormat) -> Result<(), OptionError> {
        if let Some(n) = &self.near_dup {
            if self.dedup != Dedup::Near {
                return Err(bad("near_dup", "near_dup applies with dedup \"near\" only"));
            }
            if !(n.threshold > 0.0 && n.threshold < 1.0) {
                return Err(bad(
                    "near_dup.threshold",
                    format!(
                        "threshold must be between 0 and 1 (exclusive), got {}",
                        n.threshold
                    ),
                ));
            }
            if !(16..=1024).contains(&n.num_perm) {
                return Err(bad(
                    "near_dup.num_perm",
                    format!("num_perm must be between 16 and 1024, got {}", n.num_perm),
                ));
            }
            if !(1..=32).contains(&n.ngram) {
                return Err(bad(
                    "near_dup.ngram",
                    format!("ngram must be between 1 and 32, got {}", n.ngram),
                ));
            }
        }
        let f = &self.filters;
        if let (Some(lo), Some(hi)) = (f.min_chars, f.max_chars)
            && lo > hi
        {
            return Err(bad(
                "filters.max_chars",
                format!("max_chars ({hi}) must be at least min_chars ({lo})"),
            ));
        }
        share("filters.max_repeated_line_share", f.max_repeated_line_share)?;
        share(
            "filters.max_repeated_ngram_share",
            f.max_repeated_ngram_share,
        )?;
        share("filters.max_non_alnum_share", f.max_non_alnum_share)?;
        if let Some(n) = f.repeated_ngram_size
            && !(1..=32).contains(&n)
        {
            return Err(bad(
                "filters.repeated_ngram_size",
                format!("repeated_ngram_size must be between 1 and 32, got {n}"),
            ));
        }
        if let Some(langs) = &f.languages {
            if langs.is_empty() {
                return Err(bad(
                    "filters.languages",
                    "languages must name at least one language",
                ));
            }
            for (i, code) in langs.iter().enumerate() {
                if language::parse(code).is_none() {
                    return Err(bad(
                        format!("filters.languages[{i}]"),
                        format!(
                            "unknown language {code:?}: use an ISO 639-1 code (en, de, zh, ...) \
                             or ISO 639-3 (eng, deu, cmn, ...) of a language the detector knows"
                        ),
                    ));
                }
            }
        }
        if self.convert.is_some()
            && !matches!(
                format,
                DatasetFormat::Chat | DatasetFormat::ShareGpt | DatasetFormat::Alpaca
            )
        {
            return Err(bad(
                "convert",
                format!(
                    "convert writes chat lines from ShareGPT or Alpaca ones; this file holds {} lines",
                    format.as_str()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CleanOptions, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_options_are_exact_dedup_only() {
        let o = parse("{}").unwrap();
        assert_eq!(o.dedup, Dedup::Exact);
        assert_eq!(o.pii, PiiAction::Keep);
        assert!(o.filters.is_empty() && o.convert.is_none());
        assert_eq!(o.near(), NearDupOptions::default());
        o.validate(DatasetFormat::Text).unwrap();
    }

    #[test]
    fn every_bad_option_names_itself() {
        let cases = [
            (r#"{"near_dup": {"threshold": 0.9}}"#, "near_dup"),
            (
                r#"{"dedup": "near", "near_dup": {"threshold": 1.0}}"#,
                "near_dup.threshold",
            ),
            (
                r#"{"dedup": "near", "near_dup": {"num_perm": 8}}"#,
                "near_dup.num_perm",
            ),
            (
                r#"{"dedup": "near", "near_dup": {"ngram": 0}}"#,
                "near_dup.ngram",
            ),
            (
                r#"{"filters": {"min_chars": 10, "max_chars": 5}}"#,
                "filters.max_chars",
            ),
            (
                r#"{"filters": {"max_repeated_line_share": 1.5}}"#,
                "filters.max_repeated_line_share",
            ),
            (
                r#"{"filters": {"max_repeated_ngram_share": -1}}"#,
                "filters.max_repeated_ngram_share",
            ),
            (
                r#"{"filters": {"max_non_alnum_share": 2}}"#,
                "filters.max_non_alnum_share",
            ),
            (
                r#"{"filters": {"repeated_ngram_size": 99}}"#,
                "filters.repeated_ngram_size",
            ),
            (r#"{"filters": {"languages": []}}"#, "filters.languages"),
            (
                r#"{"filters": {"languages": ["en", "klingon"]}}"#,
                "filters.languages[1]",
            ),
            (r#"{"convert": "chat"}"#, "convert"),
        ];
        for (json, param) in cases {
            let o = parse(json).unwrap();
            assert_eq!(
                o.validate(DatasetFormat::Text).unwrap_err().param,
                param,
                "{json}"
            );
        }
        parse(r#"{"convert": "chat"}"#)
            .unwrap()
            .validate(DatasetFormat::ShareGpt)
            .unwrap();
        // Unknown names and values are refused by the parser.
        assert!(parse(r#"{"dedup": "fuzzy"}"#).is_err());
        assert!(parse(r#"{"pii": "hide"}"#).is_err());
        assert!(parse(r#"{"filters": {"min_words": 3}}"#).is_err());
        assert!(parse(r#"{"speed": 1}"#).is_err());
    }
}
