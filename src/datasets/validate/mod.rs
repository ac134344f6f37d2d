//! Streaming validator for uploaded JSONL datasets: the driver.
//!
//! The upload arrives as arbitrary byte chunks (lines and even UTF-8 characters are split
//! anywhere), so [`Validator::feed`] only buffers bytes until it holds a batch of complete
//! lines, then checks that batch in parallel (rayon) and merges the per-piece results in line
//! order. Memory stays flat: one batch plus the current partial line, plus the set of 16-byte
//! md5 digests of distinct examples (needed to count duplicates in file order).
//!
//! A `fine-tune` file holds one of two formats, reported as the report's `format`:
//! - chat, one conversation per line: `{"messages": [{"role": .., "content": ..}, ..]}`;
//! - preference (DPO) pairs, OpenAI's format: `{"input": {"messages": [..], "tools": [..],
//!   "parallel_tool_calls": ..}, "preferred_output": [{"role": "assistant", ..}],
//!   "non_preferred_output": [{"role": "assistant", ..}]}` (rules in `preference`).
//!
//! The first valid line decides which. Until then each line is checked as the format its
//! top-level keys name (`messages` makes a chat line, whatever else it has; otherwise `input`,
//! `preferred_output` or `non_preferred_output` a preference line), and gets that format's
//! errors; after it, each line is checked as the file's format, and one that lacks that
//! format's keys but has the other's is a `mixed_formats` error naming both formats and the
//! deciding line. (A file without any valid line reports the format of its first line whose
//! keys name one, else chat.) `pretrain` files are `text`: `{"text": ..}`.
//!
//! Duplicates are detected exactly like Hugging Face `datasets`' dedup (md5 of the `json.dumps`
//! of each row): md5 of `json.dumps(messages, ensure_ascii=False)` for chat, md5 of
//! `json.dumps(row, ensure_ascii=False, sort_keys=True)` for pretraining. Preference pairs hash
//! like chat what the trainer reads, and with sorted keys: md5 of `json.dumps({k: row[k] for k
//! in ("input", "preferred_output", "non_preferred_output")}, ensure_ascii=False,
//! sort_keys=True)`, so other top-level keys, key order and spacing do not make a pair
//! distinct. To get the same bytes without building a JSON tree, each line is parsed once by
//! serde_json into visitors that write Python's serialisation of the hashed value into a
//! reused buffer while they validate. (The one exception: while the format is undecided, a line
//! without `messages` is read as chat first and then again as preference, which in a good
//! preference file is line 1 alone.)
//!
//! md5 of those bytes is ~35-40% of the CPU time, serde_json's parsing most of the rest. (A
//! hand-written parser for the common case was tried: only ~7% faster overall, not worth a
//! second JSON parser.)
//!
//! This module holds the driver: batching, splitting a batch into pieces (a batch that starts
//! with the format undecided is checked line by line up to its deciding line, the rest in
//! parallel), merging piece results, the format and the duplicate bookkeeping. The rest, by
//! role:
//! - `line`: the per-line checker, which format a line is read as;
//! - `ctx`: the error codes, the first problem of a line and the per-piece scratch state;
//! - `pyjson`: Python's `json.dumps` canonical form, written while a line is parsed;
//! - `chat`: the schema of chat (`fine-tune`) lines, and the message-list checks that
//!   preference lines share;
//! - `tool_calls`: the schema of a message's `tool_calls`;
//! - `preference`: the schema of preference (DPO, `fine-tune`) lines (the rules an output
//!   message adds to a chat message's are in `chat`, beside the message checks they extend);
//! - `pretrain`: the schema of pretraining lines.

mod chat;
mod ctx;
mod line;
mod preference;
mod pretrain;
mod pyjson;
mod tool_calls;

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;

use rayon::prelude::*;

use self::ctx::{Code, N_CODES, too_long_message};
use self::line::Checker;
use super::bom::UTF8_BOM;
use super::format::DatasetFormat;
pub use super::format::Purpose;
use super::report::{LineError, MAX_REPORTED_ERRORS, ValidationReport};
use super::stats::StatsAcc;

/// Complete lines are validated once this many bytes are buffered: big enough to amortise the
/// rayon fan-out, small enough to keep memory flat and each `feed` call short (~10 ms).
const BATCH_BYTES: usize = 4 << 20;

/// Pieces handed to rayon are at least this big, so per-piece overhead stays negligible.
const MIN_PIECE_BYTES: usize = 64 << 10;

/// Default for [`Validator::with_max_line_bytes`].
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// md5 of an example's canonical form. Digests are uniformly distributed already, so the hash
/// set hashes them by their first 8 bytes instead of running SipHash over 16.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ExampleDigest([u8; 16]);

impl Hash for ExampleDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `ExampleDigest` is hashed; stay correct anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The `fine-tune` format a line set, and that line (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FormatChoice {
    format: DatasetFormat,
    line: u64,
}

/// A checked batch and its buffer, or the panic that interrupted it.
type BatchOutcome = std::thread::Result<(Vec<PieceResult>, Vec<u8>)>;

type DigestSet = HashSet<ExampleDigest, BuildHasherDefault<PassThroughHasher>>;

/// Validates a JSONL dataset fed in arbitrary chunks; see the module docs.
///
/// `feed` copies the bytes and hands each complete ~4 MiB batch to the rayon pool, checking
/// it in the background while the next one fills. It blocks when a batch is ready but the
/// previous one is still being checked (backpressure, up to ~15 ms on two free cores), so
/// call it off the async executor: e.g. one `spawn_blocking` task that owns the validator
/// and receives the chunks through a bounded channel. `finish` waits for the last batch.
pub struct Validator {
    purpose: Purpose,
    max_line: usize,
    batch_bytes: usize,
    /// Complete lines not yet validated, then the current partial line.
    buf: Vec<u8>,
    /// Index in `buf` just past its last `\n`.
    tail_start: usize,
    /// Discarding the rest of a line already reported as too long.
    skipping: bool,
    /// No line was handed on yet: the next batch starts the file, and may start with a BOM.
    at_start: bool,
    /// The batch being checked in the background, if any.
    pending: Option<mpsc::Receiver<BatchOutcome>>,
    /// The buffer of the last finished batch, reused for the next one.
    spare: Vec<u8>,
    seen: DigestSet,
    /// The `fine-tune` format, set by the first valid line.
    format: Option<FormatChoice>,
    /// The first line whose keys named a format, for a report without any valid line.
    first_keyed: Option<FormatChoice>,
    total_lines: u64,
    blank_lines: u64,
    valid_examples: u64,
    invalid_lines: u64,
    duplicates: u64,
    code_counts: [u64; N_CODES],
    errors: Vec<LineError>,
    stats: StatsAcc,
}

impl Validator {
    /// A validator for a dataset with the given purpose.
    #[must_use]
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            max_line: DEFAULT_MAX_LINE_BYTES,
            batch_bytes: BATCH_BYTES,
            buf: Vec::new(),
            tail_start: 0,
            skipping: false,
            at_start: true,
            pending: None,
            spare: Vec::new(),
            seen: DigestSet::default(),
            format: None,
            first_keyed: None,
            total_lines: 0,
            blank_lines: 0,
            valid_examples: 0,
            invalid_lines: 0,
            duplicates: 0,
            code_counts: [0; N_CODES],
            errors: Vec::new(),
            stats: StatsAcc::default(),
        }
    }

    /// Lines longer than `max` bytes (excluding the `\n`) are rejected as `line_too_long`
    /// without being buffered whole, which is what bounds memory on a file without newlines.
    #[must_use]
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    #[cfg(test)]
    fn with_batch_bytes(mut self, n: usize) -> Self {
        self.batch_bytes = n.max(1);
        self
    }

    /// Adds the next bytes of the file. Any chunking gives the same report as one big chunk.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skipping {
                match memchr::memchr(b'\n', data) {
                    None => return,
                    Some(i) => {
                        data = &data[i + 1..];
                        self.skipping = false;
                        continue;
                    }
                }
            }
            // Appending at most one batch at a time keeps memory bounded even when the caller
            // hands over a huge chunk.
            let (now, rest) = data.split_at(data.len().min(self.batch_bytes));
            data = rest;
            let old_len = self.buf.len();
            self.buf.extend_from_slice(now);
            if let Some(i) = memchr::memrchr(b'\n', now) {
                self.tail_start = old_len + i + 1;
            }
            if self.buf.len() >= self.batch_bytes {
                self.flush_complete_lines();
            }
            if self.buf.len() - self.tail_start > self.max_line {
                self.flush_complete_lines();
                self.reject_long_partial_line();
            }
        }
    }

    /// Validates what is left (a last line may lack its `\n`) and returns the report.
    #[must_use]
    pub fn finish(mut self) -> ValidationReport {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.submit(buf);
        }
        self.wait_pending();
        let mut error_counts = BTreeMap::new();
        let mut errors = std::mem::take(&mut self.errors);
        if self.valid_examples == 0 {
            self.code_counts[Code::NoExamples as usize] += 1;
            errors.insert(
                0,
                LineError {
                    line: 0,
                    code: Code::NoExamples.as_str().to_string(),
                    param: String::new(),
                    message: "the file contains no valid example".to_string(),
                },
            );
            errors.truncate(MAX_REPORTED_ERRORS);
        }
        for code in Code::ALL {
            let n = self.code_counts[code as usize];
            if n > 0 {
                error_counts.insert(code.as_str().to_string(), n);
            }
        }
        let format = match self.purpose {
            Purpose::Pretrain => DatasetFormat::Text,
            Purpose::FineTune => self
                .format
                .or(self.first_keyed)
                .map_or(DatasetFormat::Chat, |c| c.format),
        };
        ValidationReport {
            format: Some(format),
            total_lines: self.total_lines,
            blank_lines: self.blank_lines,
            valid_examples: self.valid_examples,
            invalid_lines: self.invalid_lines,
            duplicates: self.duplicates,
            error_counts,
            errors,
            stats: self.stats.finish(format),
        }
    }

    fn flush_complete_lines(&mut self) {
        if self.tail_start == 0 {
            return;
        }
        // Double buffering: the previous batch has to be done before its buffer is reused.
        self.wait_pending();
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        next.extend_from_slice(&self.buf[self.tail_start..]);
        let mut batch = std::mem::replace(&mut self.buf, next);
        batch.truncate(self.tail_start);
        self.tail_start = 0;
        self.submit(batch);
    }

    /// Called once the partial line at the end of `buf` (and nothing else) exceeds the limit.
    fn reject_long_partial_line(&mut self) {
        // Line numbers count on from every line before, which may still be in flight.
        self.wait_pending();
        self.total_lines += 1;
        self.invalid_lines += 1;
        self.code_counts[Code::LineTooLong as usize] += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError {
                line: self.total_lines,
                code: Code::LineTooLong.as_str().to_string(),
                param: String::new(),
                message: too_long_message(self.max_line),
            });
        }
        self.buf.clear();
        self.tail_start = 0;
        self.skipping = true;
        self.at_start = false;
    }

    /// Starts validating whole lines in the background: `batch` ends with `\n`, except at
    /// `finish` where the last line may lack it. Overlapping the check of one batch with the
    /// caller filling the next keeps both cores busy while the caller reads and copies.
    fn submit(&mut self, mut batch: Vec<u8>) {
        self.wait_pending();
        // A byte order mark before line 1 is not part of it (Windows Notepad writes one).
        if std::mem::take(&mut self.at_start) && batch.starts_with(UTF8_BOM) {
            batch.drain(..UTF8_BOM.len());
        }
        let job = BatchJob {
            purpose: self.purpose,
            format: self.format,
            base_line: self.total_lines,
            max_line: self.max_line,
            min_piece: MIN_PIECE_BYTES.min(self.batch_bytes / 4).max(1),
        };
        if rayon::current_thread_index().is_some() {
            // Blocking a pool thread on a pool job could deadlock a small pool: stay inline.
            for r in check_batch(&batch, job) {
                self.merge(r);
            }
            self.spare = batch;
            return;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            // A panic inside `rayon::spawn` would abort the process; hand it to the caller.
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| check_batch(&batch, job)));
            let _ = tx.send(outcome.map(|results| (results, batch)));
        });
        self.pending = Some(rx);
    }

    /// Merges the batch in flight, if any.
    fn wait_pending(&mut self) {
        let Some(rx) = self.pending.take() else {
            return;
        };
        match rx.recv() {
            Ok(Ok((results, buf))) => {
                for r in results {
                    self.merge(r);
                }
                self.spare = buf;
            }
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(mpsc::RecvError) => panic!("validation batch was dropped unfinished"),
        }
    }

    /// Folds in one piece's result; pieces arrive in file order, so line numbers and "first
    /// occurrence" of a duplicate follow the file.
    fn merge(&mut self, r: PieceResult) {
        let base = self.total_lines;
        self.total_lines += r.lines;
        // Only a piece checked while the format was undecided sets these, its lines numbered.
        self.format = self.format.or(r.decided);
        self.first_keyed = self.first_keyed.or(r.first_keyed);
        self.blank_lines += r.blank;
        self.valid_examples += r.digests.len() as u64;
        self.invalid_lines += r.invalid;
        for (acc, n) in self.code_counts.iter_mut().zip(&r.code_counts) {
            *acc += n;
        }
        for e in r.errors {
            if self.errors.len() >= MAX_REPORTED_ERRORS {
                break;
            }
            self.errors.push(LineError {
                line: base + e.rel_line + 1,
                code: e.code.as_str().to_string(),
                param: e.param,
                message: e.message,
            });
        }
        self.seen.reserve(r.digests.len());
        for d in r.digests {
            if !self.seen.insert(d) {
                self.duplicates += 1;
            }
        }
        self.stats.merge(&r.stats);
    }
}

/// Checks single lines of a file whose format is known, as the validator checks them: cleaning
/// reads each line of a validated file through one, and each line it writes.
pub struct LineChecker(Checker);

impl LineChecker {
    /// A checker for lines of `format` (any of the purpose's formats).
    #[must_use]
    pub fn new(purpose: Purpose, format: DatasetFormat) -> Self {
        let choice = FormatChoice { format, line: 1 };
        LineChecker(Checker::new(
            purpose,
            Some(choice),
            0,
            DEFAULT_MAX_LINE_BYTES,
        ))
    }

    /// The md5 of the line's canonical form (what duplicates are counted by), or its error
    /// (with line 0: the caller knows the line's number). A blank line is `None`.
    pub fn check(&mut self, line: &[u8]) -> Option<Result<[u8; 16], LineError>> {
        let c = &mut self.0;
        let blank = c.res.blank;
        c.line(line);
        if let Some(d) = c.res.digests.pop() {
            return Some(Ok(d.0));
        }
        if c.res.blank > blank {
            return None;
        }
        let e = c
            .res
            .errors
            .pop()
            .expect("a line is blank, valid or has an error");
        Some(Err(LineError {
            line: 0,
            code: e.code.as_str().to_string(),
            param: e.param,
            message: e.message,
        }))
    }
}

/// What [`check_batch`] needs to know besides the bytes.
#[derive(Clone, Copy)]
struct BatchJob {
    purpose: Purpose,
    /// The `fine-tune` format decided by the batches before, if any.
    format: Option<FormatChoice>,
    /// Lines before the batch.
    base_line: u64,
    max_line: usize,
    min_piece: usize,
}

/// Checks the lines of `batch` in parallel; results in file order. While the `fine-tune`
/// format is undecided, lines are checked one by one until a valid one decides it (normally
/// the first), the rest in parallel as that format.
fn check_batch(batch: &[u8], job: BatchJob) -> Vec<PieceResult> {
    let mut results = Vec::new();
    let mut format = job.format;
    let mut rest = batch;
    if job.purpose == Purpose::FineTune && format.is_none() {
        let mut c = Checker::new(job.purpose, None, job.base_line, job.max_line);
        let used = c.lines(batch, true);
        format = c.format;
        results.push(c.res);
        rest = &batch[used..];
        if rest.is_empty() {
            return results;
        }
    }
    let pieces = split_pieces(rest, rayon::current_num_threads() * 4, job.min_piece);
    if pieces.len() == 1 {
        results.push(check_piece(pieces[0], job.purpose, format, job.max_line));
    } else {
        results.par_extend(
            pieces
                .par_iter()
                .map(|p| check_piece(p, job.purpose, format, job.max_line)),
        );
    }
    results
}

/// Splits `batch` at line ends into about `parts` pieces of at least `min` bytes.
fn split_pieces(batch: &[u8], parts: usize, min: usize) -> Vec<&[u8]> {
    let target = (batch.len() / parts.max(1)).max(min);
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let mut end = (start + target).min(batch.len());
        if end < batch.len() {
            end = match memchr::memchr(b'\n', &batch[end..]) {
                Some(i) => end + i + 1,
                None => batch.len(),
            };
        }
        pieces.push(&batch[start..end]);
        start = end;
    }
    pieces
}

/// An error found in a piece; the line number is made absolute at merge time.
struct PieceError {
    rel_line: u64,
    code: Code,
    param: String,
    message: String,
}

/// Everything a piece contributes to the report.
struct PieceResult {
    lines: u64,
    blank: u64,
    invalid: u64,
    code_counts: [u64; N_CODES],
    /// At most [`MAX_REPORTED_ERRORS`]: later ones could never make the report.
    errors: Vec<PieceError>,
    /// One per valid example, in line order.
    digests: Vec<ExampleDigest>,
    stats: StatsAcc,
    /// The format this piece's first valid line decided, when it started undecided.
    decided: Option<FormatChoice>,
    /// The first line whose keys named a format while it was undecided.
    first_keyed: Option<FormatChoice>,
}

impl Default for PieceResult {
    // By hand: `[u64; N_CODES]` is longer than the arrays std derives `Default` for.
    fn default() -> Self {
        Self {
            lines: 0,
            blank: 0,
            invalid: 0,
            code_counts: [0; N_CODES],
            errors: Vec::new(),
            digests: Vec::new(),
            stats: StatsAcc::default(),
            decided: None,
            first_keyed: None,
        }
    }
}

/// Checks every line of `piece`. With `format` undecided (only tests), lines are numbered as
/// if the piece started the file.
fn check_piece(
    piece: &[u8],
    purpose: Purpose,
    format: Option<FormatChoice>,
    max_line: usize,
) -> PieceResult {
    let mut c = Checker::new(purpose, format, 0, max_line);
    c.lines(piece, false);
    c.res
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn run(purpose: Purpose, data: &[u8]) -> ValidationReport {
        let mut v = Validator::new(purpose);
        v.feed(data);
        v.finish()
    }

    /// (line, code, param) of the reported errors.
    pub(super) fn errs(r: &ValidationReport) -> Vec<(u64, &str, &str)> {
        r.errors
            .iter()
            .map(|e| (e.line, e.code.as_str(), e.param.as_str()))
            .collect()
    }

    pub(super) const U: &str = r#"{"role": "user", "content": "hi"}"#;
    pub(super) const A: &str = r#"{"role": "assistant", "content": "hello"}"#;

    pub(super) fn chat(msgs: &[&str]) -> String {
        format!("{{\"messages\": [{}]}}", msgs.join(", "))
    }

    pub(super) fn hand_built() -> Vec<u8> {
        let mut f = Vec::new();
        let mut line = |s: &[u8]| {
            f.extend_from_slice(s);
            f.push(b'\n');
        };
        line(chat(&[U, A]).as_bytes()); // 1 ok
        line(chat(&[r#"{"role": "bot", "content": "x"}"#, A]).as_bytes()); // 2
        line(chat(&[U, r#"{"role": "assistant", "content": "x", "weight": 2}"#]).as_bytes()); // 3
        line(chat(&[r#"{"role": "user", "content": "x", "weight": 1}"#, A]).as_bytes()); // 4
        line(b"{\"messages\": [oops"); // 5
        line(b"{\"messages\": [{\"role\": \"user\", \"content\": \"caf\xc3\"}]}"); // 6
        line(b"   \t "); // 7 blank
        line(br#"{"messages": []}"#); // 8
        line(chat(&[U, U]).as_bytes()); // 9
        line(chat(&[U, A]).as_bytes()); // 10 duplicate of 1
        line(chat(&[U, r#"{"role": "assistant", "content": 42}"#]).as_bytes()); // 11
        line(br#"{"messages": [{"content": "hello", "role": "user"}, {"content": "hello", "role": "assistant"}]}"#); // 12 ok, other key order: not a duplicate
        line(br#"{"source": "x", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#); // 13 dup of 1
        line(br#"[1, 2]"#); // 14
        line(br#"{"text": "hi"}"#); // 15
        line(br#"{"messages": {"role": "user"}}"#); // 16
        line(br#"{"messages": ["hi"]}"#); // 17
        line(chat(&[U, r#"{"role": "assistant", "content": "x", "weight": 0}"#]).as_bytes()); // 18
        line(
            chat(&[
                r#"{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}], "content": null}"#,
                r#"{"role": "tool", "tool_call_id": "1", "content": "42"}"#,
                A,
            ])
            .as_bytes(),
        ); // 19 ok
        line(chat(&[r#"{"role": "assistant", "content": null}"#]).as_bytes()); // 20
        line(chat(&[U, "{\"role\": \"assistant\", \"content\": \"a\tb\"}"]).as_bytes()); // 21 raw tab
        line(
            chat(&[
                U,
                r#"{"role": "assistant", "content": "a", "content": "b"}"#,
            ])
            .as_bytes(),
        ); // 22
        f.extend_from_slice(chat(&[U, A]).as_bytes()); // 23 dup of 1, no trailing newline
        f
    }

    #[test]
    fn ok_file_and_no_examples() {
        let good = format!("{}\n\n{}\n", chat(&[U, A]), chat(&[A]));
        let r = run(Purpose::FineTune, good.as_bytes());
        assert!(r.is_ok());
        assert!(r.errors.is_empty());
        for data in [&b""[..], b"\n \n", b"{}\n"] {
            let r = run(Purpose::FineTune, data);
            assert!(!r.is_ok());
            assert_eq!(r.errors[0].line, 0);
            assert_eq!(r.errors[0].code, "no_examples");
            assert_eq!(r.error_counts["no_examples"], 1);
        }
    }

    /// Every prefix of each of `lines`, and each line with one byte replaced by each of
    /// `subs`, one per line.
    pub(super) fn mangle<S: AsRef<str>>(lines: &[S], subs: &[u8]) -> Vec<u8> {
        let mut mangled = Vec::new();
        for line in lines {
            let bytes = line.as_ref().as_bytes();
            for cut in 0..bytes.len() {
                mangled.extend_from_slice(&bytes[..cut]);
                mangled.push(b'\n');
                for &c in subs {
                    mangled.extend_from_slice(&bytes[..cut]);
                    mangled.push(c);
                    mangled.extend_from_slice(&bytes[cut + 1..]);
                    mangled.push(b'\n');
                }
            }
        }
        mangled
    }

    /// Each line of a checked piece was blank, invalid (with exactly one code) or an example,
    /// and both of the last two occurred.
    pub(super) fn assert_one_outcome_each(res: &PieceResult) {
        assert_eq!(
            res.lines,
            res.blank + res.invalid + res.digests.len() as u64
        );
        assert_eq!(res.invalid, res.code_counts.iter().sum::<u64>());
        assert!(res.invalid > 0 && !res.digests.is_empty());
    }

    pub(super) fn feed_in(
        purpose: Purpose,
        data: &[u8],
        sizes: &mut dyn FnMut() -> usize,
    ) -> ValidationReport {
        // A tiny batch so that batching, piece splitting and merging all happen.
        let mut v = Validator::new(purpose).with_batch_bytes(97);
        let mut rest = data;
        while !rest.is_empty() {
            let n = sizes().clamp(1, rest.len());
            v.feed(&rest[..n]);
            rest = &rest[n..];
        }
        v.finish()
    }

    #[test]
    fn chunking_invariance() {
        let mut data = hand_built();
        // Multi-byte characters (2, 3 and 4 bytes) for chunk edges to cut through.
        data.extend_from_slice(
            "\n{\"messages\": [{\"role\": \"user\", \"content\": \"é日本😀\"}, {\"role\": \"assistant\", \"content\": \"ß🚀\"}]}\n"
                .as_bytes(),
        );
        data = data.repeat(5);
        let whole = run(Purpose::FineTune, &data);
        // 7 valid examples per copy, 4 distinct overall.
        assert_eq!(whole.duplicates, 5 * 7 - 4);
        assert_eq!(feed_in(Purpose::FineTune, &data, &mut || 1), whole);
        assert_eq!(feed_in(Purpose::FineTune, &data, &mut || 1 << 20), whole);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for max in [3, 17, 200] {
            let mut sizes = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % max) as usize + 1
            };
            assert_eq!(feed_in(Purpose::FineTune, &data, &mut sizes), whole);
        }
        let big = Validator::new(Purpose::FineTune).with_batch_bytes(4096);
        let mut v = big;
        v.feed(&data);
        assert_eq!(v.finish(), whole);
    }

    #[test]
    fn works_from_inside_a_one_thread_rayon_pool() {
        // Waiting on a pool job from the pool's only thread would deadlock; the validator
        // must notice and check inline.
        let data = hand_built().repeat(3);
        let whole = run(Purpose::FineTune, &data);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let inside = pool.install(|| feed_in(Purpose::FineTune, &data, &mut || 7));
        assert_eq!(inside, whole);
    }

    #[test]
    fn line_too_long_is_chunking_invariant() {
        let data = format!("{}\n{}\n{}", chat(&[U, A]), "x".repeat(300), chat(&[U, A]));
        let mk = || Validator::new(Purpose::FineTune).with_max_line_bytes(100);
        let mut v = mk();
        v.feed(data.as_bytes());
        let whole = v.finish();
        assert_eq!(errs(&whole), vec![(2, "line_too_long", "")]);
        assert_eq!((whole.total_lines, whole.duplicates), (3, 1));
        let mut v = mk();
        for b in data.as_bytes() {
            v.feed(std::slice::from_ref(b));
        }
        assert_eq!(v.finish(), whole);
    }

    /// `depth` nested arrays (`[[[..]]]`), or objects (`{"a": {"a": ..}}`) when `objects`.
    fn nested(depth: usize, objects: bool) -> String {
        let (open, close) = if objects {
            ("{\"a\": ", "}")
        } else {
            ("[", "]")
        };
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn deep_nesting_is_refused_for_fine_tune_as_for_pretrain() {
        // Pretraining reads every value, so serde_json's nesting limit refuses a deep one as
        // invalid JSON; a fine-tune line must be refused the same way, wherever the deep
        // value sits (a top-level key the format does not read included), and without
        // overflowing the stack.
        let msgs = chat(&[U, A]);
        let body = &msgs[1..msgs.len() - 1];
        for objects in [false, true] {
            let deep = nested(100_000, objects);
            let pretrain = run(
                Purpose::Pretrain,
                format!("{{\"text\": \"hi\", \"meta\": {deep}}}").as_bytes(),
            );
            assert_eq!(errs(&pretrain)[1..], [(1, "invalid_json", "")]);
            let lines = [
                chat(&[U, A]),
                format!("{{{body}, \"meta\": {deep}}}"),
                format!("{{\"meta\": {deep}, {body}}}"),
                format!("{{{body}, \"tools\": [{deep}]}}"),
                chat(&[
                    U,
                    &format!("{{\"role\": \"assistant\", \"content\": \"x\", \"x\": {deep}}}"),
                ]),
                format!("{{\"messages\": {{\"a\": {deep}}}}}"),
                format!(
                    "{{\"input\": {{\"messages\": [{U}]}}, \"preferred_output\": [{A}], \"non_preferred_output\": [{A}], \"x\": {deep}}}"
                ),
                format!("{{\"conversations\": [], \"x\": {deep}}}"),
            ];
            let r = run(Purpose::FineTune, lines.join("\n").as_bytes());
            let want: Vec<_> = (2..=8).map(|l| (l, "invalid_json", "")).collect();
            assert_eq!(errs(&r), want);
            // The same reason as pretraining's; only the column differs.
            let reason = |m: &str| m.rsplit_once(" at column").map(|(r, _)| r.to_string());
            let got = reason(&r.errors[0].message);
            assert_eq!(got, reason(&pretrain.errors[1].message));
            assert!(got.unwrap().contains("recursion limit"));
        }
        // The limit: 127 levels, the line's object included, for both purposes.
        for (depth, ok) in [(126, true), (127, false)] {
            let meta = nested(depth, false);
            let text = format!("{{\"text\": \"hi\", \"meta\": {meta}}}");
            assert_eq!(run(Purpose::Pretrain, text.as_bytes()).is_ok(), ok);
            let line = format!("{{{body}, \"meta\": {meta}}}");
            assert_eq!(run(Purpose::FineTune, line.as_bytes()).is_ok(), ok);
        }
    }

    #[test]
    fn a_bom_at_the_start_of_the_file_is_skipped() {
        // Windows Notepad saves UTF-8 with a byte order mark before line 1.
        let mut data = b"\xEF\xBB\xBF".to_vec();
        data.extend_from_slice(format!("{}\r\n{}\r\n", chat(&[U, A]), chat(&[A])).as_bytes());
        let r = run(Purpose::FineTune, &data);
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!((r.total_lines, r.valid_examples, r.duplicates), (2, 2, 0));
        // Without the mark, the same report: the BOM is not part of line 1 (nor of its hash).
        let plain = run(Purpose::FineTune, &data[3..]);
        assert_eq!(r, plain);
        // Wherever the chunks cut the mark.
        for size in [1, 2, 4] {
            assert_eq!(feed_in(Purpose::FineTune, &data, &mut || size), plain);
        }
        // Pretraining files too, a first line that is all the file included.
        let r = run(Purpose::Pretrain, b"\xEF\xBB\xBF{\"text\": \"hi\"}");
        assert!(r.is_ok(), "{:?}", r.errors);
        // A mark anywhere else is an error that names it.
        let mut data = format!("{}\n", chat(&[U, A])).into_bytes();
        data.extend_from_slice(b"\xEF\xBB\xBF");
        data.extend_from_slice(chat(&[A]).as_bytes());
        let r = run(Purpose::FineTune, &data);
        assert_eq!(errs(&r), [(2, "invalid_json", "")]);
        assert!(
            r.errors[0].message.contains("BOM"),
            "{}",
            r.errors[0].message
        );
    }

    #[test]
    fn purpose_serde_names() {
        assert_eq!(
            serde_json::to_string(&Purpose::FineTune).unwrap(),
            "\"fine-tune\""
        );
        assert_eq!(
            serde_json::to_string(&Purpose::Pretrain).unwrap(),
            "\"pretrain\""
        );
    }

    #[test]
    fn only_first_errors_are_kept() {
        let data = "x\n".repeat(250);
        let mut v = Validator::new(Purpose::FineTune).with_batch_bytes(64);
        v.feed(data.as_bytes());
        let r = v.finish();
        assert_eq!(r.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(r.errors[0].code, "no_examples");
        assert_eq!(r.errors[1].line, 1);
        assert_eq!(r.errors[99].line, 99);
        assert_eq!(r.error_counts["invalid_json"], 250);
    }

    #[test]
    fn mangled_lines_give_one_outcome_each() {
        // Every prefix of some lines, and single-byte substitutions with JSON-significant
        // bytes: each mangled line must come out as exactly one of blank / valid / invalid,
        // without panicking (the debug assertions in the writer run here too).
        let mut base: Vec<String> = String::from_utf8_lossy(&hand_built())
            .lines()
            .map(str::to_string)
            .collect();
        base.push(
            r#"{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"a": [1, -2.5e3, true, null, "é
"]}]}], "x": {"y": 1}}"#
                .to_string(),
        );
        let subs = [
            b'"', b'\\', b',', b':', b'}', b']', b'{', b'[', b' ', b'0', b'-', b'e', b'.', b'n',
            b'u', b'\t',
        ];
        for purpose in [Purpose::FineTune, Purpose::Pretrain] {
            let res = check_piece(&mangle(&base, &subs), purpose, None, usize::MAX);
            assert_one_outcome_each(&res);
        }
    }
}
