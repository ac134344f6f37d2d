//! Dataset handling: streaming validation of uploaded JSONL files, the report it produces and
//! the statistics shown for a dataset.

pub mod report;
pub mod stats;
pub mod validate;

pub use report::{DatasetFormat, LineError, ValidationReport};
pub use stats::{DatasetStats, HistogramBucket, LengthStats, PreferenceStats, Summary};
pub use validate::{Purpose, Validator};
