//! Cleaning a dataset into a new one: the streaming driver.
//!
//! A [`Cleaner`] reads a validated JSONL file in arbitrary chunks and writes the cleaned lines.
//! Complete lines are gathered into batches of a few MiB; each batch goes through two stages:
//!
//! 1. per line, in parallel (rayon): the validator's check (a line that fails is removed as
//!    `invalid`), conversion to chat (`convert`), personal data masked or the line dropped
//!    (`pii`), the quality filters and the language filter on the example's text, then the
//!    written line's canonical digest (the upload's duplicate key) and, for near
//!    deduplication, its MinHash signature;
//! 2. in file order: exact duplicates against every earlier kept example, near duplicates
//!    through the LSH index, the report, and the write.
//!
//! Memory stays flat in the file's size but for the duplicate bookkeeping: a 16-byte digest per
//! kept example, and with near deduplication the index's band keys and 8-bit signature per
//! example (`minhash`). A line that changes nothing is written byte for byte as it came.
//!
//! The rest, by role: `options` (what a clean does), `report` (what it did), `text` (an
//! example's text per format), `pii` (personal data), `filters` (quality measures), `language`
//! (language identification), `minhash` (near duplicates).

pub mod filters;
pub mod language;
pub mod minhash;
pub mod options;
pub mod pii;
pub mod report;
pub mod text;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::Value;

use self::minhash::{LshIndex, MinHasher, NearDupParams};
pub use self::options::{CleanOptions, ConvertTarget, Dedup, OptionError, PiiAction};
use self::pii::{PiiKind, PiiScanner};
pub use self::report::{CleanReport, CleanSample, SampleAction};
use self::report::{MAX_SAMPLES, NearDupSummary, rule};
use super::bom::UTF8_BOM;
use super::convert;
use super::format::{DatasetFormat, Purpose};
use super::validate::LineChecker;

/// Lines are cleaned in batches of about this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// The MinHash seed: fixed, so a clean is reproducible.
const MINHASH_SEED: u64 = 0x005e_ed0f_c1ea_0001;

/// Personal data found per kind, in [`PiiKind::ALL`] order.
type PiiCounts = [u64; PiiKind::ALL.len()];

/// What stage 1 made of one line.
enum Stage1 {
    Blank,
    Removed {
        rule: &'static str,
        detail: String,
        pii: PiiCounts,
    },
    Kept(Box<KeptLine>),
}

/// A line that passed stage 1.
struct KeptLine {
    /// The line to write; `None`: the source bytes as they are.
    rewritten: Option<Vec<u8>>,
    /// Rules that changed it, with what they did.
    changes: Vec<(&'static str, String)>,
    pii: PiiCounts,
    /// Canonical digest of the written example.
    digest: [u8; 16],
    signature: Option<Vec<u32>>,
    /// Detected language, with a language filter.
    language: Option<&'static str>,
}

/// The read-only parts every line's stage 1 shares across threads.
struct Shared {
    opts: CleanOptions,
    purpose: Purpose,
    source: DatasetFormat,
    written: DatasetFormat,
    pii: Option<PiiScanner>,
    hasher: Option<MinHasher>,
    languages: Option<Vec<whatlang::Lang>>,
}

/// Per-thread scratch of stage 1.
struct Scratch {
    source: LineChecker,
    written: LineChecker,
}

/// Stage 1 of a batch in flight: its bytes and each line's range and outcome, or its panic.
type PendingBatch =
    std::sync::mpsc::Receiver<std::thread::Result<(Vec<u8>, Vec<((usize, usize), Stage1)>)>>;

/// Streams a validated file through the options; see the module docs.
pub struct Cleaner {
    shared: std::sync::Arc<Shared>,
    /// The batch whose stage 1 runs in the background.
    pending: Option<PendingBatch>,
    source_file: String,
    started: Instant,
    buf: Vec<u8>,
    /// Index in `buf` just past its last `\n`.
    tail_start: usize,
    /// Lines before the current batch.
    line_no: u64,
    /// No batch was submitted yet: the next one starts the file, and may start with a BOM.
    at_start: bool,
    /// Digest of each kept example → its line, for exact duplicates.
    exact: HashMap<[u8; 16], u64>,
    index: Option<LshIndex>,
    /// The line of each example in the LSH index, by its id there.
    index_lines: Vec<u64>,
    report: CleanReport,
    pii_totals: PiiCounts,
    /// Sees every removed or changed line, not only the report's first [`MAX_SAMPLES`].
    sample_log: Option<Box<dyn FnMut(&CleanSample) + Send>>,
}

impl Cleaner {
    /// A cleaner for a `purpose` file whose lines are `format`, from the file `source_file`.
    pub fn new(
        opts: CleanOptions,
        purpose: Purpose,
        format: DatasetFormat,
        source_file: &str,
    ) -> Result<Self, OptionError> {
        opts.validate(format)?;
        let written = if opts.convert == Some(ConvertTarget::Chat) {
            DatasetFormat::Chat
        } else {
            format
        };
        let near = opts.near();
        let near_on = opts.dedup == Dedup::Near;
        let params = NearDupParams {
            threshold: near.threshold,
            num_perm: near.num_perm,
            ngram: near.ngram,
        };
        let languages = opts.filters.languages.as_ref().map(|codes| {
            codes
                .iter()
                .filter_map(|c| language::parse(c))
                .collect::<Vec<_>>()
        });
        let mut removed = BTreeMap::new();
        let mut count = |on: bool, name: &str| {
            if on {
                removed.insert(name.to_string(), 0);
            }
        };
        let f = &opts.filters;
        count(true, rule::INVALID);
        count(opts.pii == PiiAction::Drop, rule::PII);
        count(f.min_chars.is_some(), rule::MIN_CHARS);
        count(f.max_chars.is_some(), rule::MAX_CHARS);
        count(f.max_repeated_line_share.is_some(), rule::REPEATED_LINES);
        count(f.max_repeated_ngram_share.is_some(), rule::REPEATED_NGRAMS);
        count(f.max_non_alnum_share.is_some(), rule::NON_ALNUM);
        count(languages.is_some(), rule::LANGUAGE);
        count(opts.dedup != Dedup::None, rule::DUPLICATE);
        count(near_on, rule::NEAR_DUPLICATE);
        let mut changed = BTreeMap::new();
        if opts.pii == PiiAction::Mask {
            changed.insert(rule::PII.to_string(), 0);
        }
        if opts.convert.is_some() {
            changed.insert(rule::CONVERT.to_string(), 0);
        }
        let (index, near_duplicates) = if near_on {
            let index = LshIndex::new(&params);
            let (bands, rows) = minhash::lsh_bands(params.threshold, params.num_perm);
            let summary = NearDupSummary {
                clusters: 0,
                bands,
                rows,
            };
            (Some(index), Some(summary))
        } else {
            (None, None)
        };
        let report = CleanReport {
            source_file: source_file.to_string(),
            options: CleanOptions {
                near_dup: near_on.then_some(near),
                ..opts.clone()
            },
            source_format: format,
            format: written,
            lines: 0,
            blank_lines: 0,
            kept: 0,
            removed,
            changed,
            pii: BTreeMap::new(),
            near_duplicates,
            languages: BTreeMap::new(),
            samples: Vec::new(),
            seconds: 0.0,
        };
        let shared = Shared {
            pii: (opts.pii != PiiAction::Keep).then(PiiScanner::new),
            hasher: near_on.then(|| MinHasher::new(params.num_perm, params.ngram, MINHASH_SEED)),
            languages,
            opts,
            purpose,
            source: format,
            written,
        };
        Ok(Cleaner {
            shared: std::sync::Arc::new(shared),
            pending: None,
            source_file: source_file.to_string(),
            started: Instant::now(),
            buf: Vec::new(),
            tail_start: 0,
            line_no: 0,
            at_start: true,
            exact: HashMap::new(),
            index,
            index_lines: Vec::new(),
            report,
            pii_totals: [0; PiiKind::ALL.len()],
            sample_log: None,
        })
    }

    /// Calls `log` with every line removed or changed (benchmarks and tools that need them all).
    #[must_use]
    pub fn with_sample_log(mut self, log: impl FnMut(&CleanSample) + Send + 'static) -> Self {
        self.sample_log = Some(Box::new(log));
        self
    }

    /// Adds the next bytes of the source; cleaned lines go to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut dyn Write) -> std::io::Result<()> {
        let old_len = self.buf.len();
        self.buf.extend_from_slice(data);
        if let Some(i) = memchr::memrchr(b'\n', data) {
            self.tail_start = old_len + i + 1;
        }
        if self.tail_start >= BATCH_BYTES {
            let rest = self.buf.split_off(self.tail_start);
            let batch = std::mem::replace(&mut self.buf, rest);
            self.tail_start = 0;
            self.submit(batch, out)?;
        }
        Ok(())
    }

    /// Cleans what is left (a last line may lack its `\n`) and returns the report.
    pub fn finish(mut self, out: &mut dyn Write) -> std::io::Result<CleanReport> {
        let batch = std::mem::take(&mut self.buf);
        self.submit(batch, out)?;
        self.drain(out)?;
        let mut report = self.report;
        for kind in PiiKind::ALL {
            let n = self.pii_totals[kind.index()];
            if n > 0 {
                report.pii.insert(kind.as_str().to_string(), n);
            }
        }
        if let (Some(summary), Some(index)) = (report.near_duplicates.as_mut(), &self.index) {
            summary.clusters = index.clusters();
        }
        report.seconds = self.started.elapsed().as_secs_f64();
        debug_assert_eq!(report.source_file, self.source_file);
        Ok(report)
    }

    /// Starts stage 1 of `batch` on the rayon pool, then runs stage 2 of the batch before it
    /// (if any) meanwhile: one batch's duplicate bookkeeping and writing overlap the next one's
    /// parallel work.
    fn submit(&mut self, mut batch: Vec<u8>, out: &mut dyn Write) -> std::io::Result<()> {
        // A byte order mark before line 1 is not part of it, and is not written (see `bom`).
        if std::mem::take(&mut self.at_start) && batch.starts_with(UTF8_BOM) {
            batch.drain(..UTF8_BOM.len());
        }
        if batch.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let results = stage1_batch(&shared, &batch);
                (batch, results)
            }));
            let _ = tx.send(outcome);
        };
        if rayon::current_thread_index().is_some() {
            // Waiting on a pool job from a pool thread could deadlock a small pool: stay inline.
            job();
        } else {
            rayon::spawn(job);
        }
        if let Some(previous) = self.pending.replace(rx) {
            self.finish_batch(previous, out)?;
        }
        Ok(())
    }

    /// Stage 2 of the batch in flight, if any.
    fn drain(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.pending.take() {
            Some(rx) => self.finish_batch(rx, out),
            None => Ok(()),
        }
    }

    fn finish_batch(&mut self, rx: PendingBatch, out: &mut dyn Write) -> std::io::Result<()> {
        let (batch, results) = match rx.recv() {
            Ok(Ok(done)) => done,
            Ok(Err(payload)) => std::panic::resume_unwind(payload),
            Err(_) => panic!("a cleaning batch was dropped unfinished"),
        };
        for ((start, end), result) in results {
            self.line_no += 1;
            self.stage2(&batch[start..end], result, out)?;
        }
        Ok(())
    }

    /// Duplicates, the report and the write, in file order.
    fn stage2(
        &mut self,
        source: &[u8],
        result: Stage1,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let line = self.line_no;
        let kept = match result {
            Stage1::Blank => {
                self.report.blank_lines += 1;
                return Ok(());
            }
            Stage1::Removed { rule, detail, pii } => {
                self.report.lines += 1;
                self.add_pii(&pii);
                self.removed(line, rule, detail, None);
                return Ok(());
            }
            Stage1::Kept(k) => k,
        };
        self.report.lines += 1;
        if let Some(lang) = kept.language {
            *self.report.languages.entry(lang.to_string()).or_default() += 1;
        }
        if self.shared.opts.dedup != Dedup::None {
            if let Some(&first) = self.exact.get(&kept.digest) {
                let detail = format!("the same example as line {first}");
                self.removed(line, rule::DUPLICATE, detail, Some(first));
                return Ok(());
            }
            self.exact.insert(kept.digest, line);
        }
        if let (Some(index), Some(sig)) = (self.index.as_mut(), kept.signature.as_ref()) {
            let id = self.index_lines.len() as u32;
            self.index_lines.push(line);
            if let Some(m) = index.check_and_insert(id, sig) {
                let first = self.index_lines[m.earlier as usize];
                let detail = format!(
                    "near duplicate of line {first} (estimated Jaccard similarity {:.2})",
                    m.jaccard
                );
                self.removed(line, rule::NEAR_DUPLICATE, detail, Some(first));
                return Ok(());
            }
        }
        self.add_pii(&kept.pii);
        for (rule, detail) in kept.changes {
            *self.report.changed.entry(rule.to_string()).or_default() += 1;
            self.sample(line, rule, SampleAction::Changed, detail, None);
        }
        self.report.kept += 1;
        out.write_all(kept.rewritten.as_deref().unwrap_or(source))?;
        out.write_all(b"\n")
    }

    fn add_pii(&mut self, pii: &PiiCounts) {
        for (total, n) in self.pii_totals.iter_mut().zip(pii) {
            *total += n;
        }
    }

    fn removed(&mut self, line: u64, rule: &'static str, detail: String, of: Option<u64>) {
        *self.report.removed.entry(rule.to_string()).or_default() += 1;
        self.sample(line, rule, SampleAction::Removed, detail, of);
    }

    fn sample(
        &mut self,
        line: u64,
        rule: &str,
        action: SampleAction,
        detail: String,
        duplicate_of: Option<u64>,
    ) {
        let keep = self.report.samples.len() < MAX_SAMPLES;
        if !keep && self.sample_log.is_none() {
            return;
        }
        let sample = CleanSample {
            line,
            rule: rule.to_string(),
            action,
            detail,
            duplicate_of,
        };
        if let Some(log) = self.sample_log.as_mut() {
            log(&sample);
        }
        if keep {
            self.report.samples.push(sample);
        }
    }
}

/// The quality and language filters on an example's `contents`: the removal, if one fails.
/// Sets `language` to the detected language's code when there is a language filter.
fn filter(
    shared: &Shared,
    contents: &str,
    language: &mut Option<&'static str>,
    pii: PiiCounts,
) -> Option<Stage1> {
    let filters = &shared.opts.filters;
    if filters.is_empty() {
        return None;
    }
    if let Some((rule, detail)) = filters::first_failed(filters, contents) {
        return Some(Stage1::Removed { rule, detail, pii });
    }
    let allowed = shared.languages.as_ref()?;
    let detected = language::detect(contents);
    *language = Some(detected.map_or("und", language::code));
    match detected {
        Some(lang) if !allowed.contains(&lang) => Some(Stage1::Removed {
            rule: rule::LANGUAGE,
            detail: format!("detected {}", language::code(lang)),
            pii,
        }),
        _ => None,
    }
}

/// Stage 1 of every line of `batch`, in parallel: each line's byte range and outcome.
fn stage1_batch(shared: &Shared, batch: &[u8]) -> Vec<((usize, usize), Stage1)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', batch) {
        ranges.push((start, nl));
        start = nl + 1;
    }
    if start < batch.len() {
        ranges.push((start, batch.len()));
    }
    ranges
        .into_par_iter()
        .map_init(
            || Scratch {
                source: LineChecker::new(shared.purpose, shared.source),
                written: LineChecker::new(shared.purpose, shared.written),
            },
            |scratch, (a, b)| ((a, b), stage1(shared, scratch, &batch[a..b])),
        )
        .collect()
}

/// Names of the kinds found, for a sample's detail: `email ×2, phone`.
fn describe_pii(counts: &PiiCounts) -> String {
    PiiKind::ALL
        .iter()
        .filter(|k| counts[k.index()] > 0)
        .map(|k| match counts[k.index()] {
            1 => k.as_str().to_string(),
            n => format!("{} ×{n}", k.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything one line needs that does not depend on the lines before it.
fn stage1(shared: &Shared, scratch: &mut Scratch, source: &[u8]) -> Stage1 {
    let opts = &shared.opts;
    let digest = match scratch.source.check(source) {
        None => return Stage1::Blank,
        Some(Err(e)) => {
            let at = if e.param.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.param)
            };
            return Stage1::Removed {
                rule: rule::INVALID,
                detail: format!("{}{at}: {}", e.code, e.message),
                pii: [0; PiiKind::ALL.len()],
            };
        }
        Some(Ok(d)) => d,
    };
    let pii_suspect = shared
        .pii
        .as_ref()
        .is_some_and(|scanner| scanner.may_contain(source));
    let rewrites = opts.convert.is_some() || pii_suspect;
    let reads_text = !opts.filters.is_empty() || shared.hasher.is_some();
    if !rewrites && !reads_text {
        return Stage1::Kept(Box::new(KeptLine {
            rewritten: None,
            changes: Vec::new(),
            pii: [0; PiiKind::ALL.len()],
            digest,
            signature: None,
            language: None,
        }));
    }
    // A line nothing rewrites needs only its text: read without a JSON tree where the format
    // allows (chats and documents).
    if !rewrites && let Some((rendered, contents)) = text::quick(shared.source, source) {
        let mut language = None;
        if let Some(removed) = filter(shared, &contents, &mut language, [0; PiiKind::ALL.len()]) {
            return removed;
        }
        return Stage1::Kept(Box::new(KeptLine {
            rewritten: None,
            changes: Vec::new(),
            pii: [0; PiiKind::ALL.len()],
            digest,
            signature: shared.hasher.as_ref().and_then(|h| h.signature(&rendered)),
            language,
        }));
    }
    let removed = |detail: String| Stage1::Removed {
        rule: rule::INVALID,
        detail,
        pii: [0; PiiKind::ALL.len()],
    };
    // A line the validator passed parses and converts; should one not, it is removed, not kept.
    let mut value = match serde_json::from_slice::<Value>(source) {
        Ok(v) => v,
        Err(e) => return removed(format!("invalid_json: {e}")),
    };
    let mut changes = Vec::new();
    let mut format = shared.source;
    if opts.convert.is_some() && format != DatasetFormat::Chat {
        let converted = match convert::convert(format, &value) {
            Ok(c) => c,
            Err(e) => return removed(format!("{}: {e}", e.code)),
        };
        value = converted.to_line();
        format = DatasetFormat::Chat;
        changes.push((rule::CONVERT, format!("{} to chat", shared.source.as_str())));
    }
    let mut pii = [0; PiiKind::ALL.len()];
    if pii_suspect && let Some(scanner) = &shared.pii {
        text::for_each_text_mut(format, &mut value, &mut |s| {
            if let Some(masked) = scanner.mask(s, &mut pii) {
                *s = masked;
            }
        });
        if pii.iter().any(|n| *n > 0) {
            if opts.pii == PiiAction::Drop {
                return Stage1::Removed {
                    rule: rule::PII,
                    detail: format!("personal data: {}", describe_pii(&pii)),
                    pii,
                };
            }
            changes.push((rule::PII, format!("masked: {}", describe_pii(&pii))));
        }
    }
    let mut language = None;
    if !opts.filters.is_empty()
        && let Some(removed) = filter(shared, &text::contents(format, &value), &mut language, pii)
    {
        return removed;
    }
    let signature = shared
        .hasher
        .as_ref()
        .and_then(|h| h.signature(&text::rendered(format, &value)));
    let (rewritten, digest) = if changes.is_empty() {
        (None, digest)
    } else {
        let bytes = serde_json::to_vec(&value).expect("JSON values serialise");
        let digest = match scratch.written.check(&bytes) {
            Some(Ok(d)) => d,
            // A masked or converted line that no longer validates (an output that was nothing
            // but personal data, say) is removed: writing the source would undo the clean.
            Some(Err(e)) => {
                return Stage1::Removed {
                    rule: rule::INVALID,
                    detail: format!("after cleaning, {}: {}", e.code, e.message),
                    pii,
                };
            }
            None => return removed("after cleaning, the line is blank".into()),
        };
        (Some(bytes), digest)
    };
    Stage1::Kept(Box::new(KeptLine {
        rewritten,
        changes,
        pii,
        digest,
        signature,
        language,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cleans `data` (fed in small chunks, so batching and line splits are exercised) and
    /// returns the written lines and the report.
    fn clean(
        opts: &str,
        purpose: Purpose,
        format: DatasetFormat,
        data: &str,
    ) -> (Vec<String>, CleanReport) {
        let opts: CleanOptions = serde_json::from_str(opts).unwrap();
        let mut c = Cleaner::new(opts, purpose, format, "file-src").unwrap();
        let mut out = Vec::new();
        for chunk in data.as_bytes().chunks(7) {
            c.feed(chunk, &mut out).unwrap();
        }
        let report = c.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_string).collect(), report)
    }

    fn doc(text: &str) -> String {
        serde_json::json!({ "text": text }).to_string()
    }

    fn rules(r: &CleanReport) -> Vec<(u64, &str, SampleAction)> {
        r.samples
            .iter()
            .map(|s| (s.line, s.rule.as_str(), s.action))
            .collect()
    }

    #[test]
    fn a_bom_at_the_start_of_the_file_is_skipped_and_not_written() {
        let data = format!("\u{feff}{}\r\n{}\n", doc("first"), doc("second"));
        let (lines, r) = clean("{}", Purpose::Pretrain, DatasetFormat::Text, &data);
        assert_eq!((r.lines, r.kept), (2, 2), "{:?}", r.samples);
        // (Written byte for byte: line 1 keeps its `\r`, which `clean` drops with the `\n`.)
        assert_eq!(lines, [doc("first"), doc("second")]);
        // Anywhere else the mark is invalid, as the upload report says.
        let data = format!("{}\n\u{feff}{}\n", doc("first"), doc("second"));
        let (lines, r) = clean("{}", Purpose::Pretrain, DatasetFormat::Text, &data);
        assert_eq!(lines, [doc("first")]);
        assert_eq!(r.removed["invalid"], 1);
    }

    #[test]
    fn exact_dedup_by_default_and_invalid_lines_removed() {
        let data = [
            doc("the first document"),
            "not json".into(),
            doc("the first document"),
            String::new(),
            r#"{"text": "the first document", "source": "elsewhere"}"#.into(),
            doc("another one"),
        ]
        .join("\n");
        let (lines, r) = clean("{}", Purpose::Pretrain, DatasetFormat::Text, &data);
        // Line 5 differs only in another key: pretraining hashes the whole sorted row, so it
        // is a different example (the upload report would count it as distinct too).
        assert_eq!(
            lines,
            [
                doc("the first document"),
                lines[1].clone(),
                doc("another one")
            ]
        );
        assert_eq!((r.lines, r.blank_lines, r.kept), (5, 1, 3));
        assert_eq!(r.removed["invalid"], 1);
        assert_eq!(r.removed["duplicate"], 1);
        assert_eq!(
            rules(&r),
            [
                (2, "invalid", SampleAction::Removed),
                (3, "duplicate", SampleAction::Removed)
            ]
        );
        assert_eq!(r.samples[1].detail, "the same example as line 1");
        assert!(
            r.samples[0].detail.starts_with("invalid_json"),
            "{}",
            r.samples[0].detail
        );
        // Unchanged lines are written byte for byte.
        assert_eq!(
            lines[1],
            r#"{"text": "the first document", "source": "elsewhere"}"#
        );
    }

    #[test]
    fn pii_mask_rewrites_only_free_text_and_counts_per_type() {
        let chat = serde_json::json!({"messages": [
            {"role": "user", "content": "Mail me at jane.doe@example.com or call +1 (555) 123-4567."},
            {"role": "assistant", "content": "Noted: jane.doe@example.com."}]})
        .to_string();
        let clean_line = serde_json::json!({"messages": [
            {"role": "user", "content": "Version 2.10.1 was released on 2024-01-15."},
            {"role": "assistant", "content": "Thanks."}]})
        .to_string();
        let data = format!("{chat}\n{clean_line}\n");
        let (lines, r) = clean(
            r#"{"pii": "mask"}"#,
            Purpose::FineTune,
            DatasetFormat::Chat,
            &data,
        );
        let masked: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            masked["messages"][0]["content"],
            "Mail me at <EMAIL> or call <PHONE>."
        );
        assert_eq!(masked["messages"][1]["content"], "Noted: <EMAIL>.");
        assert_eq!(masked["messages"][0]["role"], "user");
        assert_eq!(lines[1], clean_line, "no personal data: the line as it was");
        assert_eq!(r.pii["email"], 2);
        assert_eq!(r.pii["phone"], 1);
        assert_eq!(r.changed["pii"], 1);
        assert_eq!(rules(&r), [(1, "pii", SampleAction::Changed)]);
        assert_eq!(r.samples[0].detail, "masked: email ×2, phone");
        // Drop removes the line instead.
        let (lines, r) = clean(
            r#"{"pii": "drop"}"#,
            Purpose::FineTune,
            DatasetFormat::Chat,
            &data,
        );
        assert_eq!(lines, [clean_line]);
        assert_eq!(r.removed["pii"], 1);
    }

    #[test]
    fn masking_makes_exact_duplicates_of_examples_that_differed_only_in_personal_data() {
        let data = [
            doc("write to a@example.com today"),
            doc("write to b@example.org today"),
        ]
        .join("\n");
        let (lines, r) = clean(
            r#"{"pii": "mask"}"#,
            Purpose::Pretrain,
            DatasetFormat::Text,
            &data,
        );
        assert_eq!(lines, [doc("write to <EMAIL> today")]);
        assert_eq!((r.removed["duplicate"], r.changed["pii"]), (1, 1));
    }

    #[test]
    fn filters_remove_with_their_rule_and_measure() {
        let data = [
            doc("ok"),                                              // too short
            doc("a perfectly ordinary sentence about the weather"), // kept
            doc("buy now\nbuy now\nbuy now\nbuy now"),              // repeated lines
            doc("$$$ ### !!! %%% @@@ &&& *** ((("),                 // symbols
            doc(&"long ".repeat(40)),                               // too long
        ]
        .join("\n");
        let opts = r#"{"dedup": "none", "filters": {"min_chars": 5, "max_chars": 100,
            "max_repeated_line_share": 0.5, "max_non_alnum_share": 0.5}}"#;
        let (lines, r) = clean(opts, Purpose::Pretrain, DatasetFormat::Text, &data);
        assert_eq!(
            lines,
            [doc("a perfectly ordinary sentence about the weather")]
        );
        assert_eq!(
            rules(&r),
            [
                (1, "min_chars", SampleAction::Removed),
                (3, "repeated_lines", SampleAction::Removed),
                (4, "non_alnum", SampleAction::Removed),
                (5, "max_chars", SampleAction::Removed),
            ]
        );
        assert!(
            !r.removed.contains_key("duplicate"),
            "dedup none: not a rule"
        );
    }

    #[test]
    fn language_filter_keeps_listed_languages_and_short_texts() {
        let data = [
            doc("The weather is lovely today and we are going for a long walk in the park."),
            doc("Das Wetter ist heute sehr schön und wir gehen im Park spazieren."),
            doc("ok"),
        ]
        .join("\n");
        let opts = r#"{"filters": {"languages": ["en"]}}"#;
        let (lines, r) = clean(opts, Purpose::Pretrain, DatasetFormat::Text, &data);
        assert_eq!(lines.len(), 2);
        assert_eq!(r.removed["language"], 1);
        assert_eq!(r.samples[0].detail, "detected de");
        assert_eq!(r.languages["en"], 1);
        assert_eq!(r.languages["und"], 1);
    }

    #[test]
    fn convert_writes_chat_lines_that_validate() {
        let data = [
            r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
            r#"{"conversations": [{"from": "robot", "value": "x"}]}"#,
        ]
        .join("\n");
        let (lines, r) = clean(
            r#"{"convert": "chat"}"#,
            Purpose::FineTune,
            DatasetFormat::ShareGpt,
            &data,
        );
        assert_eq!(
            lines,
            [
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#
            ]
        );
        assert_eq!(
            (r.format, r.source_format),
            (DatasetFormat::Chat, DatasetFormat::ShareGpt)
        );
        assert_eq!(r.changed["convert"], 1);
        assert_eq!(r.removed["invalid"], 1);
    }

    /// Planted near duplicates (one word changed in a 60-word document: of its 56 5-gram shingles
    /// 5 change, Jaccard 51/61 ≈ 0.84) are removed, naming their original; distinct documents stay.
    #[test]
    fn near_dedup_removes_planted_near_duplicates() {
        let mut state = 0x9e37_79b9_u64;
        let mut word = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("w{}", state % 5000)
        };
        let docs: Vec<Vec<String>> = (0..40).map(|_| (0..60).map(|_| word()).collect()).collect();
        let mut lines: Vec<String> = docs.iter().map(|d| doc(&d.join(" "))).collect();
        for original in &docs[..10] {
            let mut copy = original.clone();
            copy[30] = "changed".into();
            lines.push(doc(&copy.join(" ")));
        }
        let data = lines.join("\n");
        let (kept, r) = clean(
            r#"{"dedup": "near"}"#,
            Purpose::Pretrain,
            DatasetFormat::Text,
            &data,
        );
        assert_eq!(kept.len(), 40);
        assert_eq!(r.removed["near_duplicate"], 10);
        assert_eq!(r.near_duplicates.as_ref().unwrap().clusters, 10);
        for (i, s) in r.samples.iter().enumerate() {
            assert_eq!((s.line, s.rule.as_str()), (41 + i as u64, "near_duplicate"));
            assert!(
                s.detail
                    .starts_with(&format!("near duplicate of line {} ", i + 1)),
                "{}",
                s.detail
            );
        }
        assert_eq!(r.options.near_dup, Some(options::NearDupOptions::default()));
    }
}
