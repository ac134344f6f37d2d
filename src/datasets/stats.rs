//! Statistics over the valid examples of a dataset, accumulated per batch of lines (in
//! parallel) and merged, so they cost no second pass over the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format::DatasetFormat;

/// Aggregate figures shown for a dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DatasetStats {
    /// Valid examples counted (duplicates included, as they are in the file).
    pub examples: u64,
    /// Messages per chat example; for a preference pair, the prompt's messages plus those of
    /// both outputs; all zeros for pretraining data.
    pub messages_per_example: Summary,
    /// Unicode scalar values (`chars().count()`) per example: sum over message contents for
    /// chat (for a preference pair: the prompt and both outputs), the `text` for pretraining.
    pub chars_per_example: Summary,
    /// Messages per role over the valid examples (a preference pair's prompt and outputs);
    /// roles that never occur are absent.
    pub role_counts: BTreeMap<String, u64>,
    /// Examples per power-of-two bucket of `chars_per_example`, from the first non-empty
    /// bucket to the last (empty buckets in between are kept so the shape is easy to plot).
    pub length_histogram: Vec<HistogramBucket>,
    /// Only for preference data: the prompt and the two outputs measured apart. Absent for
    /// chat and pretraining data (and in reports stored before preference data existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<PreferenceStats>,
}

/// The parts of the preference pairs, each in the units of `chars_per_example`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PreferenceStats {
    /// Valid pairs (the same as `examples`).
    pub pairs: u64,
    /// The prompt: the contents of `input.messages`.
    pub prompt: LengthStats,
    /// The contents of `preferred_output`.
    pub preferred: LengthStats,
    /// The contents of `non_preferred_output`.
    pub non_preferred: LengthStats,
}

/// The length distribution of one part of an example.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LengthStats {
    /// Unicode scalar values per example, summed over the part's message contents.
    pub chars: Summary,
    /// Examples per power-of-two bucket of `chars`, as `length_histogram`.
    pub length_histogram: Vec<HistogramBucket>,
}

/// Minimum, mean and maximum of a per-example count; all zero when there is no example.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Summary {
    /// Smallest value.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Largest value.
    pub max: u64,
}

/// Examples whose length `n` satisfies `le / 2 < n <= le` (the first bucket, `le = 1`, also
/// holds `n = 0`). Counts are per bucket, not cumulative.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramBucket {
    /// Upper bound (inclusive) of the bucket, a power of two.
    pub le: u64,
    /// Examples in the bucket.
    pub count: u64,
}

/// The roles a chat message may have, in the index order used by [`StatsAcc`].
pub(crate) const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Index of the assistant role in [`ROLES`].
pub(crate) const ASSISTANT: usize = 2;

/// Index of the tool role in [`ROLES`].
pub(crate) const TOOL: usize = 3;

/// 65 buckets: `le = 2^0 ..= 2^63`, plus one for lengths above 2^63.
const BUCKETS: usize = 65;

#[derive(Clone, Copy, Debug)]
struct MinMaxSum {
    min: u64,
    max: u64,
    sum: u64,
}

impl MinMaxSum {
    const EMPTY: Self = Self {
        min: u64::MAX,
        max: 0,
        sum: 0,
    };

    fn add(&mut self, v: u64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum = self.sum.saturating_add(v);
    }

    fn merge(&mut self, o: &Self) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum = self.sum.saturating_add(o.sum);
    }

    fn summary(&self, n: u64) -> Summary {
        if n == 0 {
            return Summary::default();
        }
        Summary {
            min: self.min,
            mean: self.sum as f64 / n as f64,
            max: self.max,
        }
    }
}

/// Lengths of one part of the examples: min, max, sum and power-of-two histogram. Also used for
/// token counts (`train::token_stats`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LengthAcc {
    stats: MinMaxSum,
    hist: [u64; BUCKETS],
}

impl LengthAcc {
    pub(crate) const EMPTY: Self = Self {
        stats: MinMaxSum::EMPTY,
        hist: [0; BUCKETS],
    };

    pub(crate) fn add(&mut self, chars: u64) {
        self.stats.add(chars);
        self.hist[bucket(chars)] += 1;
    }

    /// Minimum, mean and maximum over `n` values added.
    pub(crate) fn summary(&self, n: u64) -> Summary {
        self.stats.summary(n)
    }

    /// The sum of the values added.
    pub(crate) fn sum(&self) -> u64 {
        self.stats.sum
    }

    pub(crate) fn merge(&mut self, o: &Self) {
        self.stats.merge(&o.stats);
        for (acc, n) in self.hist.iter_mut().zip(&o.hist) {
            *acc += n;
        }
    }

    pub(crate) fn histogram(&self) -> Vec<HistogramBucket> {
        let first = self.hist.iter().position(|&n| n > 0);
        let last = self.hist.iter().rposition(|&n| n > 0);
        match (first, last) {
            (Some(a), Some(b)) => (a..=b)
                .map(|k| HistogramBucket {
                    le: if k >= 64 { u64::MAX } else { 1 << k },
                    count: self.hist[k],
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn finish(&self, n: u64) -> LengthStats {
        LengthStats {
            chars: self.stats.summary(n),
            length_histogram: self.histogram(),
        }
    }
}

/// Mergeable accumulator behind [`DatasetStats`]: fixed-size, so per-batch copies are cheap
/// and merging in any grouping gives the same result.
#[derive(Clone, Debug)]
pub(crate) struct StatsAcc {
    examples: u64,
    messages: MinMaxSum,
    chars: LengthAcc,
    roles: [u64; ROLES.len()],
    /// Preference pairs counted by [`Self::add_pair`].
    pairs: u64,
    /// Prompt, preferred and non-preferred lengths of those pairs.
    parts: [LengthAcc; 3],
}

impl Default for StatsAcc {
    fn default() -> Self {
        Self {
            examples: 0,
            messages: MinMaxSum::EMPTY,
            chars: LengthAcc::EMPTY,
            roles: [0; ROLES.len()],
            pairs: 0,
            parts: [LengthAcc::EMPTY; 3],
        }
    }
}

fn bucket(chars: u64) -> usize {
    if chars <= 1 {
        0
    } else {
        (u64::BITS - (chars - 1).leading_zeros()) as usize
    }
}

impl StatsAcc {
    /// Counts one valid example.
    pub(crate) fn add(&mut self, messages: u64, chars: u64, roles: &[u64; ROLES.len()]) {
        self.examples += 1;
        self.messages.add(messages);
        self.chars.add(chars);
        for (acc, n) in self.roles.iter_mut().zip(roles) {
            *acc += n;
        }
    }

    /// Counts the parts of a valid preference pair (also counted by [`Self::add`]): the chars
    /// of its prompt, preferred and non-preferred output.
    pub(crate) fn add_pair(&mut self, parts: [u64; 3]) {
        self.pairs += 1;
        for (acc, n) in self.parts.iter_mut().zip(parts) {
            acc.add(n);
        }
    }

    pub(crate) fn merge(&mut self, o: &Self) {
        self.examples += o.examples;
        self.messages.merge(&o.messages);
        self.chars.merge(&o.chars);
        for (acc, n) in self.roles.iter_mut().zip(&o.roles) {
            *acc += n;
        }
        self.pairs += o.pairs;
        for (acc, p) in self.parts.iter_mut().zip(&o.parts) {
            acc.merge(p);
        }
    }

    /// Pretraining (`Text`) examples have no messages; only preference data gets
    /// [`DatasetStats::preference`].
    pub(crate) fn finish(&self, format: DatasetFormat) -> DatasetStats {
        let role_counts = ROLES
            .iter()
            .zip(&self.roles)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        let chars = self.chars.finish(self.examples);
        let preference = (format == DatasetFormat::Preference).then(|| {
            let [prompt, preferred, non_preferred] = self.parts.map(|p| p.finish(self.pairs));
            PreferenceStats {
                pairs: self.pairs,
                prompt,
                preferred,
                non_preferred,
            }
        });
        DatasetStats {
            examples: self.examples,
            messages_per_example: if format == DatasetFormat::Text {
                Summary::default()
            } else {
                self.messages.summary(self.examples)
            },
            chars_per_example: chars.chars,
            role_counts,
            length_histogram: chars.length_histogram,
            preference,
        }
    }
}
