//! Dataset handling: what a dataset is (`format`: its purpose and line format), streaming
//! validation of uploaded JSONL files, the report it produces and the statistics shown for a
//! dataset, other chat formats read as OpenAI's (`convert`), cleaning a file into a new one
//! (`clean`), and the byte order mark every reader skips at the start of a file (`bom`).

pub mod bom;
pub mod clean;
pub mod convert;
pub mod format;
pub mod report;
pub mod stats;
pub mod validate;

pub use format::{DatasetFormat, Purpose};
pub use report::{LineError, ValidationReport};
pub use stats::{DatasetStats, HistogramBucket, LengthStats, PreferenceStats, Summary};
pub use validate::Validator;
