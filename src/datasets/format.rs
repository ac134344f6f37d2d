//! What a dataset is: the purpose it was uploaded for (which decides the line schemas it may
//! hold) and the format its lines turned out to have. Plain types under the validator, the
//! report and the statistics alike.

use serde::{Deserialize, Serialize};

/// What the dataset is for, which decides the line schema.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Chat lines, `{"messages": [{"role": .., "content": ..}, ..]}` (or ShareGPT or Alpaca
    /// lines, read as chat), or preference pairs, `{"input": {"messages": [..]},
    /// "preferred_output": [..], "non_preferred_output": [..]}` (one format per file).
    FineTune,
    /// Raw text lines: `{"text": ..}`.
    Pretrain,
}

/// Which line schema a file was validated against.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// `fine-tune` chat lines: `{"messages": [..]}`.
    Chat,
    /// `fine-tune` preference (DPO) pairs: `{"input": {"messages": [..]}, "preferred_output":
    /// [..], "non_preferred_output": [..]}`.
    Preference,
    /// `pretrain` documents: `{"text": ..}`.
    Text,
    /// `fine-tune` ShareGPT chats: `{"conversations": [{"from": .., "value": ..}, ..]}`, read as
    /// chat (see [`super::convert`]).
    #[serde(rename = "sharegpt")]
    ShareGpt,
    /// `fine-tune` Alpaca records: `{"instruction": .., "input": .., "output": ..}`, read as chat.
    Alpaca,
}

impl DatasetFormat {
    /// The name used in reports and messages: `chat`, `preference` or `text`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Preference => "preference",
            Self::Text => "text",
            Self::ShareGpt => "sharegpt",
            Self::Alpaca => "alpaca",
        }
    }

    /// What a report without `format` (stored before preference data existed) means: every
    /// `fine-tune` file was chat then, every `pretrain` file text.
    #[must_use]
    pub fn legacy(purpose: Purpose) -> Self {
        match purpose {
            Purpose::FineTune => Self::Chat,
            Purpose::Pretrain => Self::Text,
        }
    }
}
