//! Streaming validator for uploaded JSONL datasets.
//!
//! The upload arrives as arbitrary byte chunks (lines and even UTF-8 characters are split
//! anywhere), so [`Validator::feed`] only buffers bytes until it holds a batch of complete
//! lines, then checks that batch in parallel (rayon) and merges the per-piece results in line
//! order. Memory stays flat: one batch plus the current partial line, plus the set of 16-byte
//! md5 digests of distinct examples (needed to count duplicates in file order).
//!
//! Duplicates are detected exactly like the seed's Python dedup (HF `datasets`): md5 of
//! `json.dumps(messages, ensure_ascii=False)` for chat, md5 of
//! `json.dumps(row, ensure_ascii=False, sort_keys=True)` for pretraining. To get the same bytes
//! without building a JSON tree, each line is parsed once by serde_json into visitors that
//! write Python's serialisation of the hashed value into a reused buffer while they validate.
//!
//! md5 of those bytes is ~35-40% of the CPU time, serde_json's parsing most of the rest. (A
//! hand-written parser for the common case was tried: only ~7% faster overall, not worth a
//! second JSON parser.)

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;

use md5::{Digest as _, Md5};
use rayon::prelude::*;
use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::report::{LineError, MAX_REPORTED_ERRORS, ValidationReport};
use super::stats::{ASSISTANT, ROLES, StatsAcc};

/// What the dataset is for, which decides the line schema.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Chat lines: `{"messages": [{"role": .., "content": ..}, ..]}`.
    FineTune,
    /// Raw text lines: `{"text": ..}`.
    Pretrain,
}

/// Complete lines are validated once this many bytes are buffered: big enough to amortise the
/// rayon fan-out, small enough to keep memory flat and each `feed` call short (~10 ms).
const BATCH_BYTES: usize = 4 << 20;

/// Pieces handed to rayon are at least this big, so per-piece overhead stays negligible.
const MIN_PIECE_BYTES: usize = 64 << 10;

/// Default for [`Validator::with_max_line_bytes`].
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// Error codes; one per rejected line (the first problem found, checked in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    LineTooLong,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    MissingMessages,
    MessagesNotArray,
    EmptyMessages,
    InvalidMessage,
    InvalidRole,
    InvalidContent,
    InvalidWeight,
    NoTrainedAssistant,
    MissingText,
    InvalidText,
    EmptyText,
    NoExamples,
}

const N_CODES: usize = Code::NoExamples as usize + 1;

impl Code {
    const ALL: [Code; N_CODES] = [
        Code::LineTooLong,
        Code::InvalidUtf8,
        Code::InvalidJson,
        Code::NotAnObject,
        Code::MissingMessages,
        Code::MessagesNotArray,
        Code::EmptyMessages,
        Code::InvalidMessage,
        Code::InvalidRole,
        Code::InvalidContent,
        Code::InvalidWeight,
        Code::NoTrainedAssistant,
        Code::MissingText,
        Code::InvalidText,
        Code::EmptyText,
        Code::NoExamples,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Code::LineTooLong => "line_too_long",
            Code::InvalidUtf8 => "invalid_utf8",
            Code::InvalidJson => "invalid_json",
            Code::NotAnObject => "not_an_object",
            Code::MissingMessages => "missing_messages",
            Code::MessagesNotArray => "messages_not_array",
            Code::EmptyMessages => "empty_messages",
            Code::InvalidMessage => "invalid_message",
            Code::InvalidRole => "invalid_role",
            Code::InvalidContent => "invalid_content",
            Code::InvalidWeight => "invalid_weight",
            Code::NoTrainedAssistant => "no_trained_assistant",
            Code::MissingText => "missing_text",
            Code::InvalidText => "invalid_text",
            Code::EmptyText => "empty_text",
            Code::NoExamples => "no_examples",
        }
    }
}

fn too_long_message(max: usize) -> String {
    format!("line is longer than {max} bytes")
}

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
    /// The batch being checked in the background, if any.
    pending: Option<mpsc::Receiver<BatchOutcome>>,
    /// The buffer of the last finished batch, reused for the next one.
    spare: Vec<u8>,
    seen: DigestSet,
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
            pending: None,
            spare: Vec::new(),
            seen: DigestSet::default(),
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
        ValidationReport {
            total_lines: self.total_lines,
            blank_lines: self.blank_lines,
            valid_examples: self.valid_examples,
            invalid_lines: self.invalid_lines,
            duplicates: self.duplicates,
            error_counts,
            errors,
            stats: self.stats.finish(self.purpose == Purpose::FineTune),
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
    }

    /// Starts validating whole lines in the background: `batch` ends with `\n`, except at
    /// `finish` where the last line may lack it. Overlapping the check of one batch with the
    /// caller filling the next keeps both cores busy while the caller reads and copies.
    fn submit(&mut self, batch: Vec<u8>) {
        self.wait_pending();
        let (purpose, max_line) = (self.purpose, self.max_line);
        let min_piece = MIN_PIECE_BYTES.min(self.batch_bytes / 4).max(1);
        if rayon::current_thread_index().is_some() {
            // Blocking a pool thread on a pool job could deadlock a small pool: stay inline.
            for r in check_batch(&batch, purpose, max_line, min_piece) {
                self.merge(r);
            }
            self.spare = batch;
            return;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            // A panic inside `rayon::spawn` would abort the process; hand it to the caller.
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                check_batch(&batch, purpose, max_line, min_piece)
            }));
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

/// Checks the lines of `batch` in parallel; results in file order.
fn check_batch(
    batch: &[u8],
    purpose: Purpose,
    max_line: usize,
    min_piece: usize,
) -> Vec<PieceResult> {
    let pieces = split_pieces(batch, rayon::current_num_threads() * 4, min_piece);
    if pieces.len() == 1 {
        return vec![check_piece(pieces[0], purpose, max_line)];
    }
    pieces
        .par_iter()
        .map(|p| check_piece(p, purpose, max_line))
        .collect()
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
}

fn check_piece(piece: &[u8], purpose: Purpose, max_line: usize) -> PieceResult {
    let mut c = Checker {
        purpose,
        max_line,
        ctx: Ctx::default(),
        res: PieceResult {
            lines: 0,
            blank: 0,
            invalid: 0,
            code_counts: [0; N_CODES],
            errors: Vec::new(),
            digests: Vec::new(),
            stats: StatsAcc::default(),
        },
    };
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', piece) {
        c.line(&piece[start..nl]);
        start = nl + 1;
    }
    if start < piece.len() {
        c.line(&piece[start..]);
    }
    c.res
}

struct Checker {
    purpose: Purpose,
    max_line: usize,
    ctx: Ctx,
    res: PieceResult,
}

impl Checker {
    fn line(&mut self, line: &[u8]) {
        let rel = self.res.lines;
        self.res.lines += 1;
        if line.len() > self.max_line {
            return self.fail(
                rel,
                Code::LineTooLong,
                String::new(),
                too_long_message(self.max_line),
            );
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            self.res.blank += 1;
            return;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1);
                return self.fail(rel, Code::InvalidUtf8, String::new(), msg);
            }
        };
        self.ctx.reset();
        // Most lines are pure ASCII; then a string's char count is its length, which saves a
        // counting pass over every content string.
        self.ctx.ascii = line.is_ascii();
        let parsed = match self.purpose {
            Purpose::FineTune => parse_with(text, ChatLine(&mut self.ctx)),
            Purpose::Pretrain => parse_with(text, PretrainLine(&mut self.ctx)),
        };
        if let Err(e) = parsed {
            return self.fail(
                rel,
                Code::InvalidJson,
                String::new(),
                json_error_message(&e),
            );
        }
        if self.purpose == Purpose::FineTune && self.ctx.problem.is_none() && !self.ctx.trained {
            let msg = if self.ctx.roles[ASSISTANT] == 0 {
                "no assistant message: there is nothing to train on"
            } else {
                "every assistant message has weight 0: there is nothing to train on"
            };
            self.ctx.problem(
                Code::NoTrainedAssistant,
                || "messages".into(),
                || msg.into(),
            );
        }
        if let Some(p) = self.ctx.problem.take() {
            return self.fail(rel, p.code, p.param, p.message);
        }
        let digest: [u8; 16] = Md5::digest(&self.ctx.out).into();
        self.res.digests.push(ExampleDigest(digest));
        self.res
            .stats
            .add(self.ctx.messages, self.ctx.chars, &self.ctx.roles);
    }

    fn fail(&mut self, rel: u64, code: Code, param: String, message: String) {
        self.res.invalid += 1;
        self.res.code_counts[code as usize] += 1;
        if self.res.errors.len() < MAX_REPORTED_ERRORS {
            self.res.errors.push(PieceError {
                rel_line: rel,
                code,
                param,
                message,
            });
        }
    }
}

fn parse_with<'de, V: Visitor<'de, Value = ()>>(text: &'de str, v: V) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_any(&mut de, v)?;
    de.end()
}

/// serde_json says "at line 1 column N"; every line is parsed alone, so the line is noise.
fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let reason = full
        .rfind(" at line ")
        .map_or(full.as_str(), |i| &full[..i]);
    if e.column() > 0 {
        format!("invalid JSON: {reason} at column {}", e.column())
    } else {
        format!("invalid JSON: {reason}")
    }
}

/// The first schema problem of a line; parsing goes on after it so that a later JSON syntax
/// error still wins (a line that is not JSON is reported as such).
struct Problem {
    code: Code,
    param: String,
    message: String,
}

/// Per-piece scratch state, reused for every line so the hot path does not allocate.
#[derive(Default)]
struct Ctx {
    /// Python's `json.dumps` of the hashed value of the current line.
    out: Vec<u8>,
    /// (key start, key end, value end) in `out` for the entries of the objects being written,
    /// innermost last; used to reject duplicate keys and to sort keys.
    entries: Vec<(usize, usize, usize)>,
    /// Scratch for sorting keys; objects are finished one at a time, so one of each will do.
    order: Vec<usize>,
    sorted: Vec<u8>,
    problem: Option<Problem>,
    messages: u64,
    chars: u64,
    roles: [u64; ROLES.len()],
    trained: bool,
    /// The line is pure ASCII.
    ascii: bool,
}

impl Ctx {
    fn char_count(&self, s: &str) -> u64 {
        if self.ascii {
            s.len() as u64
        } else {
            s.chars().count() as u64
        }
    }

    fn reset(&mut self) {
        self.out.clear();
        self.entries.clear();
        self.problem = None;
        self.messages = 0;
        self.chars = 0;
        self.roles = [0; ROLES.len()];
        self.trained = false;
    }

    /// Records a problem unless the line already has one; the strings are built lazily
    /// because the happy path must not allocate.
    fn problem(
        &mut self,
        code: Code,
        param: impl FnOnce() -> String,
        message: impl FnOnce() -> String,
    ) {
        if self.problem.is_none() {
            self.problem = Some(Problem {
                code,
                param: param(),
                message: message(),
            });
        }
    }
}

/// What a transcoded value was, enough to validate a field without keeping a tree.
enum Leaf<'de> {
    Null,
    Bool,
    Num(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Leaf<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Leaf::Null => "null",
            Leaf::Bool => "boolean",
            Leaf::Num(_) => "number",
            Leaf::Str(_) => "string",
            Leaf::Array => "array",
            Leaf::Object => "object",
        }
    }
}

// ---- Python `json.dumps(.., ensure_ascii=False)` output -----------------------------------

/// Writes a string that serde_json borrowed straight from the input. It only borrows when the
/// JSON string had no escape, and JSON forbids raw `"`, `\` and control characters, so the
/// text needs no escaping in Python's output either.
fn write_plain_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Python's `ensure_ascii=False` escaping: only `"`, `\` and U+0000..U+001F are escaped
/// (`\n \r \t \b \f` by name, the rest as lowercase `\u00xx`); everything else is raw UTF-8.
fn write_py_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs_py_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            push_py_escape(out, b);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn needs_py_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Writes Python's escape of an ASCII byte for which [`needs_py_escape`] holds.
fn push_py_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let named: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            return;
        }
    };
    out.extend_from_slice(named);
}

/// Python's `repr(float)`: shortest round-trip digits (Rust's `{:e}` gives the same digits),
/// positional notation for exponents -4..16, else `d.ddde+XX`.
///
/// Caveats, all outside what the dataset generator produces: serde_json's default float parser
/// may be 1 ulp off for inputs with more than ~17 significant digits (the `float_roundtrip`
/// feature fixes that at some cost), and serde_json turns `-0` and integers beyond 64 bits
/// into floats, which Python would keep as ints (`0`, exact digits).
fn write_py_float(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        // Unreachable from JSON input; Python's spelling, for completeness.
        let s: &[u8] = if v.is_nan() {
            b"NaN"
        } else if v > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        };
        out.extend_from_slice(s);
        return;
    }
    if v == 0.0 {
        out.extend_from_slice(if v.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return;
    }
    let sci = format!("{v:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mant = match mant.strip_prefix('-') {
        Some(m) => {
            out.push(b'-');
            m
        }
        None => mant,
    };
    let digits: Vec<u8> = mant.bytes().filter(|&b| b != b'.').collect();
    if (-4..16).contains(&exp) {
        // `exp` is in -4..16, so these casts cannot wrap.
        let point = exp + 1;
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-point) as usize, b'0');
            out.extend_from_slice(&digits);
        } else if point as usize >= digits.len() {
            out.extend_from_slice(&digits);
            out.resize(out.len() + point as usize - digits.len(), b'0');
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[point as usize..]);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    }
}

/// Writes one object key and returns it decoded (borrowed when it had no escape).
struct KeySeed<'c> {
    out: Option<&'c mut Vec<u8>>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        if let Some(out) = self.out {
            write_plain_str(out, v);
        }
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if let Some(out) = self.out {
            write_py_str(out, v);
        }
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Transcodes any JSON value into Python's `json.dumps` form; `sort` is `sort_keys=True`.
struct Py<'c> {
    ctx: &'c mut Ctx,
    sort: bool,
}

impl<'de> DeserializeSeed<'de> for Py<'_> {
    type Value = Leaf<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Py<'_> {
    type Value = Leaf<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.ctx.out.extend_from_slice(b"null");
        Ok(Leaf::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        let s: &[u8] = if v { b"true" } else { b"false" };
        self.ctx.out.extend_from_slice(s);
        Ok(Leaf::Bool)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let _ = write!(self.ctx.out, "{v}");
        Ok(Leaf::Num(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let _ = write!(self.ctx.out, "{v}");
        Ok(Leaf::Num(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        write_py_float(&mut self.ctx.out, v);
        Ok(Leaf::Num(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        write_plain_str(&mut self.ctx.out, v);
        Ok(Leaf::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        write_py_str(&mut self.ctx.out, v);
        Ok(Leaf::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        ctx.out.push(b'[');
        let mut first = true;
        loop {
            let sep = ctx.out.len();
            if !first {
                ctx.out.extend_from_slice(b", ");
            }
            let seed = Py {
                ctx: &mut *ctx,
                sort: self.sort,
            };
            if seq.next_element_seed(seed)?.is_none() {
                ctx.out.truncate(sep);
                break;
            }
            first = false;
        }
        ctx.out.push(b']');
        Ok(Leaf::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        transcode_map(self.ctx, map, self.sort, &mut [])?;
        Ok(Leaf::Object)
    }
}

/// Writes an object in Python's form. Values of the keys named in `watch` are handed back.
///
/// Duplicate keys are rejected (as `invalid_json`): RFC 8259 leaves their meaning open,
/// Python keeps the last value at the first position and Arrow differs again, so refusing
/// them is the only way to hash what the trainer will see.
fn transcode_map<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx,
    mut map: A,
    sort: bool,
    watch: &mut [(&'static str, Option<Leaf<'de>>)],
) -> Result<(), A::Error> {
    let body = ctx.out.len() + 1;
    ctx.out.push(b'{');
    let base = ctx.entries.len();
    // Decoded keys, only needed to sort like Python (escaped forms do not sort the same).
    let mut names: Vec<Cow<'de, str>> = Vec::new();
    // Duplicates among watched keys show up as an already filled slot; only the other keys
    // need comparing, and messages usually have none.
    let mut unwatched = 0;
    loop {
        let sep = ctx.out.len();
        if ctx.entries.len() > base {
            ctx.out.extend_from_slice(b", ");
        }
        let key_start = ctx.out.len();
        let Some(key) = map.next_key_seed(KeySeed {
            out: Some(&mut ctx.out),
        })?
        else {
            ctx.out.truncate(sep);
            break;
        };
        let key_end = ctx.out.len();
        ctx.out.extend_from_slice(b": ");
        let slot = watch_slot(watch, &key, &mut unwatched).map_err(A::Error::custom)?;
        let leaf = map.next_value_seed(Py {
            ctx: &mut *ctx,
            sort,
        })?;
        if let Some(i) = slot {
            watch[i].1 = Some(leaf);
        }
        ctx.entries.push((key_start, key_end, ctx.out.len()));
        if sort {
            names.push(key);
        }
    }
    finish_map(ctx, base, body, &names, sort, unwatched).map_err(A::Error::custom)
}

/// Which watched key `key` is; a watched key seen twice is a duplicate.
fn watch_slot(
    watch: &[(&'static str, Option<Leaf>)],
    key: &str,
    unwatched: &mut usize,
) -> Result<Option<usize>, String> {
    match watch.iter().position(|(name, _)| *name == key) {
        Some(i) if watch[i].1.is_some() => Err(format!("duplicate key {key:?}")),
        Some(i) => Ok(Some(i)),
        None => {
            *unwatched += 1;
            Ok(None)
        }
    }
}

/// Ends an object whose entries (from `ctx.entries[base..]`) were written after `body`:
/// rejects duplicate keys, sorts the entries when `sort`, and closes the brace. `names` holds
/// the decoded keys when `sort`.
fn finish_map(
    ctx: &mut Ctx,
    base: usize,
    body: usize,
    names: &[Cow<str>],
    sort: bool,
    unwatched: usize,
) -> Result<(), String> {
    let entries = &ctx.entries[base..];
    if sort && entries.len() > 1 {
        let order = &mut ctx.order;
        order.clear();
        order.extend(0..entries.len());
        order.sort_by(|&a, &b| names[a].as_bytes().cmp(names[b].as_bytes()));
        if let Some(w) = order.windows(2).find(|w| names[w[0]] == names[w[1]]) {
            return Err(format!("duplicate key {:?}", names[w[0]]));
        }
        if order.windows(2).any(|w| w[0] > w[1]) {
            let sorted = &mut ctx.sorted;
            sorted.clear();
            for (i, &k) in order.iter().enumerate() {
                if i > 0 {
                    sorted.extend_from_slice(b", ");
                }
                let (ks, _, ve) = entries[k];
                sorted.extend_from_slice(&ctx.out[ks..ve]);
            }
            ctx.out.truncate(body);
            ctx.out.extend_from_slice(sorted);
        }
    } else if !sort
        && unwatched > 1
        && let Some(dup) = duplicate_key(&ctx.out, entries)
    {
        return Err(format!("duplicate key {}", String::from_utf8_lossy(dup)));
    }
    ctx.entries.truncate(base);
    ctx.out.push(b'}');
    Ok(())
}

/// Compares written keys: escaping is injective, so equal strings have equal escaped forms.
fn duplicate_key<'o>(out: &'o [u8], entries: &[(usize, usize, usize)]) -> Option<&'o [u8]> {
    let key = |e: &(usize, usize, usize)| &out[e.0..e.1];
    if entries.len() <= 16 {
        // Messages have a handful of keys: pairwise is cheaper than sorting.
        for (i, a) in entries.iter().enumerate() {
            if let Some(b) = entries[..i].iter().find(|b| key(b) == key(a)) {
                return Some(key(b));
            }
        }
        None
    } else {
        let mut keys: Vec<&[u8]> = entries.iter().map(key).collect();
        keys.sort_unstable();
        keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
    }
}

/// Scalars all mean "wrong type" for the visitors below; only their JSON kind matters.
macro_rules! scalars_are_wrong_type {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(self.wrong_type("null"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(self.wrong_type("boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(self.wrong_type("number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(self.wrong_type("string"))
        }
    };
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

// ---- chat (`fine-tune`) lines ---------------------------------------------------------------

/// A whole chat line. Only `messages` is hashed (like the Python dedup); other top-level
/// fields are allowed and skipped.
struct ChatLine<'c>(&'c mut Ctx);

impl ChatLine<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(Code::NotAnObject, String::new, || {
            format!("each line must be a JSON object, got {kind}")
        });
    }
}

impl<'de> Visitor<'de> for ChatLine<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut seen = false;
        while let Some(key) = map.next_key_seed(KeySeed { out: None })? {
            if key == "messages" {
                if seen {
                    return Err(A::Error::custom("duplicate key \"messages\""));
                }
                seen = true;
                map.next_value_seed(MessagesSeed(&mut *ctx))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen {
            missing_messages(ctx);
        }
        Ok(())
    }
}

/// The `messages` value: written as the hashed canonical list while each message is checked.
struct MessagesSeed<'c>(&'c mut Ctx);

impl MessagesSeed<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(
            Code::MessagesNotArray,
            || "messages".into(),
            || format!("\"messages\" must be an array, got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    scalars_are_wrong_type!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        drain_map(map)?;
        self.wrong_type("object");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.0;
        ctx.out.push(b'[');
        let mut index = 0;
        loop {
            let sep = ctx.out.len();
            if index > 0 {
                ctx.out.extend_from_slice(b", ");
            }
            let seed = MessageSeed {
                ctx: &mut *ctx,
                index,
            };
            if seq.next_element_seed(seed)?.is_none() {
                ctx.out.truncate(sep);
                break;
            }
            index += 1;
        }
        ctx.out.push(b']');
        end_messages(ctx, index);
        Ok(())
    }
}

/// One element of `messages`.
struct MessageSeed<'c> {
    ctx: &'c mut Ctx,
    index: usize,
}

impl MessageSeed<'_> {
    fn wrong_type(self, kind: &str) {
        let i = self.index;
        self.ctx.problem(
            Code::InvalidMessage,
            || format!("messages[{i}]"),
            || format!("each message must be an object, got {kind}"),
        );
    }
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // Keys are hashed in the order they appear in the line. The Python reference hashes
        // HF's Arrow-normalised rows instead: keys in the file's first-seen schema order, with
        // fields absent from a message added as null. The two agree whenever every message
        // has the same keys in the same order (what our generator and most exporters write);
        // matching Arrow exactly would need a first pass over the whole file.
        let mut watch = [
            ("role", None),
            ("content", None),
            ("weight", None),
            ("tool_calls", None),
        ];
        transcode_map(self.ctx, map, false, &mut watch)?;
        let [(_, role), (_, content), (_, weight), (_, tool_calls)] = watch;
        check_message(self.ctx, self.index, role, content, weight, tool_calls);
        Ok(())
    }
}

fn missing_messages(ctx: &mut Ctx) {
    ctx.problem(
        Code::MissingMessages,
        || "messages".into(),
        || "missing \"messages\" field".into(),
    );
}

/// After the `count` elements of `messages` were read.
fn end_messages(ctx: &mut Ctx, count: usize) {
    ctx.messages = count as u64;
    if count == 0 {
        ctx.problem(
            Code::EmptyMessages,
            || "messages".into(),
            || "\"messages\" must not be empty".into(),
        );
    }
}

fn check_message(
    ctx: &mut Ctx,
    i: usize,
    role: Option<Leaf>,
    content: Option<Leaf>,
    weight: Option<Leaf>,
    tool_calls: Option<Leaf>,
) {
    if ctx.problem.is_some() {
        return;
    }
    let param = |field: &'static str| move || format!("messages[{i}].{field}");
    let role = match &role {
        Some(Leaf::Str(s)) => match s.as_ref() {
            "system" => 0,
            "user" => 1,
            "assistant" => ASSISTANT,
            "tool" => 3,
            _ => {
                let msg = || format!("invalid role {s:?}: must be one of {}", ROLES.join(", "));
                return ctx.problem(Code::InvalidRole, param("role"), msg);
            }
        },
        None | Some(Leaf::Null) => {
            return ctx.problem(Code::InvalidRole, param("role"), || "missing role".into());
        }
        Some(other) => {
            let msg = || format!("role must be a string, got {}", other.kind());
            return ctx.problem(Code::InvalidRole, param("role"), msg);
        }
    };
    let has_tool_calls = matches!(tool_calls, Some(ref t) if !matches!(t, Leaf::Null));
    let chars = match &content {
        Some(Leaf::Str(s)) => ctx.char_count(s),
        None | Some(Leaf::Null) if has_tool_calls => 0,
        None | Some(Leaf::Null) => {
            let msg = || "content is missing or null, which only a message with tool_calls may do";
            return ctx.problem(Code::InvalidContent, param("content"), || msg().into());
        }
        Some(other) => {
            let msg = || format!("content must be a string, got {}", other.kind());
            return ctx.problem(Code::InvalidContent, param("content"), msg);
        }
    };
    // Absent and null mean "default" (Arrow writes null for absent fields).
    let weight = match &weight {
        None | Some(Leaf::Null) => None,
        Some(_) if role != ASSISTANT => {
            let msg = || "weight is only allowed on assistant messages".into();
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
        // 1.0 and 0.0 pass too: Python's trainer compares them equal to 1 and 0.
        Some(Leaf::Num(w)) if *w == 0.0 || *w == 1.0 => Some(*w),
        Some(Leaf::Num(w)) => {
            let msg = || format!("weight must be 0 or 1, got {w}");
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
        Some(other) => {
            let msg = || format!("weight must be 0 or 1, got {}", other.kind());
            return ctx.problem(Code::InvalidWeight, param("weight"), msg);
        }
    };
    ctx.chars += chars;
    ctx.roles[role] += 1;
    if role == ASSISTANT && weight != Some(0.0) {
        ctx.trained = true;
    }
}

// ---- pretraining lines ----------------------------------------------------------------------

/// A whole pretraining line, hashed like Python's `json.dumps(row, sort_keys=True)`: the whole
/// object, keys sorted at every level. (The reference hashes HF rows, which also carry null
/// for columns absent from this line; files with one key set per line hash identically.)
struct PretrainLine<'c>(&'c mut Ctx);

impl PretrainLine<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(Code::NotAnObject, String::new, || {
            format!("each line must be a JSON object, got {kind}")
        });
    }
}

impl<'de> Visitor<'de> for PretrainLine<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut watch = [("text", None)];
        transcode_map(ctx, map, true, &mut watch)?;
        let [(_, text)] = watch;
        check_text(ctx, text);
        Ok(())
    }
}

fn check_text(ctx: &mut Ctx, text: Option<Leaf>) {
    let param = || "text".to_string();
    match text {
        None => ctx.problem(Code::MissingText, param, || "missing \"text\" field".into()),
        Some(Leaf::Str(s)) if s.trim().is_empty() => ctx.problem(Code::EmptyText, param, || {
            "\"text\" is empty or whitespace only".into()
        }),
        Some(Leaf::Str(s)) => ctx.chars = ctx.char_count(&s),
        Some(other) => ctx.problem(Code::InvalidText, param, || {
            format!("\"text\" must be a string, got {}", other.kind())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::stats::Summary;

    fn run(purpose: Purpose, data: &[u8]) -> ValidationReport {
        let mut v = Validator::new(purpose);
        v.feed(data);
        v.finish()
    }

    /// (line, code, param) of the reported errors.
    fn errs(r: &ValidationReport) -> Vec<(u64, &str, &str)> {
        r.errors
            .iter()
            .map(|e| (e.line, e.code.as_str(), e.param.as_str()))
            .collect()
    }

    /// The canonical string and md5 of one line, as hashed for duplicates.
    fn canonical(purpose: Purpose, line: &str) -> (String, String) {
        let mut c = Checker {
            purpose,
            max_line: usize::MAX,
            ctx: Ctx::default(),
            res: check_piece(b"", purpose, 0),
        };
        c.line(line.as_bytes());
        assert!(
            c.res.errors.is_empty(),
            "{line}: {}",
            c.res.errors[0].message
        );
        let s = String::from_utf8(c.ctx.out.clone()).unwrap();
        (s, hex::encode(c.res.digests[0].0))
    }

    const U: &str = r#"{"role": "user", "content": "hi"}"#;
    const A: &str = r#"{"role": "assistant", "content": "hello"}"#;

    fn chat(msgs: &[&str]) -> String {
        format!("{{\"messages\": [{}]}}", msgs.join(", "))
    }

    fn hand_built() -> Vec<u8> {
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
                r#"{"role": "assistant", "tool_calls": [{"id": "1"}], "content": null}"#,
                r#"{"role": "tool", "content": "42"}"#,
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
    fn hand_built_file() {
        let r = run(Purpose::FineTune, &hand_built());
        assert_eq!(
            errs(&r),
            vec![
                (2, "invalid_role", "messages[0].role"),
                (3, "invalid_weight", "messages[1].weight"),
                (4, "invalid_weight", "messages[0].weight"),
                (5, "invalid_json", ""),
                (6, "invalid_utf8", ""),
                (8, "empty_messages", "messages"),
                (9, "no_trained_assistant", "messages"),
                (11, "invalid_content", "messages[1].content"),
                (14, "not_an_object", ""),
                (15, "missing_messages", "messages"),
                (16, "messages_not_array", "messages"),
                (17, "invalid_message", "messages[0]"),
                (18, "no_trained_assistant", "messages"),
                (20, "invalid_content", "messages[0].content"),
                (21, "invalid_json", ""),
                (22, "invalid_json", ""),
            ]
        );
        assert_eq!(r.total_lines, 23);
        assert_eq!(r.blank_lines, 1);
        assert_eq!(r.invalid_lines, 16);
        assert_eq!(r.valid_examples, 6);
        assert_eq!(r.duplicates, 3);
        assert_eq!(r.error_counts["invalid_json"], 3);
        assert_eq!(r.error_counts["invalid_weight"], 2);
        assert_eq!(r.error_counts.values().sum::<u64>(), 16);
        assert!(!r.is_ok());
        assert!(
            r.errors[1].message.contains("got 2"),
            "{}",
            r.errors[1].message
        );
        assert!(r.errors[0].message.contains("\"bot\""));
        assert_eq!(
            r.errors[3].message,
            "invalid JSON: expected value at column 15"
        );
        assert!(r.errors[14].message.contains("control character"));
        assert!(r.errors[15].message.contains("duplicate key \"content\""));
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

    fn feed_in(
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

    #[test]
    fn pretrain_lines() {
        let data = concat!(
            "{\"text\": \"hello world\"}\n",
            "{\"text\": \"\"}\n",
            "{\"text\": \" \\n\\t \"}\n",
            "{\"text\": 5}\n",
            "{\"body\": \"x\"}\n",
            "\"text\"\n",
            "{\"meta\": {\"b\": 1, \"a\": 2}, \"text\": \"héllo\"}\n",
            "{\"text\": \"hello world\"}\n",
            "{\"text\": \"hello world\", \"id\": 1}\n",
        );
        let r = run(Purpose::Pretrain, data.as_bytes());
        assert_eq!(
            errs(&r),
            vec![
                (2, "empty_text", "text"),
                (3, "empty_text", "text"),
                (4, "invalid_text", "text"),
                (5, "missing_text", "text"),
                (6, "not_an_object", ""),
            ]
        );
        assert_eq!((r.valid_examples, r.duplicates), (4, 1));
        assert_eq!(r.stats.messages_per_example, Summary::default());
        assert_eq!(r.stats.chars_per_example.min, 5);
        assert_eq!(r.stats.chars_per_example.max, 11);
        assert!(r.stats.role_counts.is_empty());
        // A chat line is not a pretraining example, and vice versa.
        assert_eq!(
            run(Purpose::Pretrain, chat(&[U, A]).as_bytes()).errors[1].code,
            "missing_text"
        );
    }

    #[test]
    fn stats_hand_computed() {
        let data = [
            // 3 messages, chars 2 + 5 + 0 = 7
            chat(&[U, A, r#"{"role": "assistant", "content": "", "weight": 0}"#]),
            // 1 message, chars 5
            chat(&[A]),
            // 4 messages, chars 3 + 2 + 5 + 2 = 12 ("日本語" is 3 chars)
            chat(&[
                r#"{"role": "system", "content": "日本語"}"#,
                U,
                A,
                r#"{"role": "tool", "content": "ok"}"#,
            ]),
            // duplicate of the second: still counted in stats
            chat(&[A]),
        ]
        .join("\n");
        let r = run(Purpose::FineTune, data.as_bytes());
        assert!(r.is_ok());
        let s = &r.stats;
        assert_eq!(s.examples, 4);
        assert_eq!(r.duplicates, 1);
        assert_eq!(
            s.messages_per_example,
            Summary {
                min: 1,
                mean: 9.0 / 4.0,
                max: 4
            }
        );
        assert_eq!(
            s.chars_per_example,
            Summary {
                min: 5,
                mean: 29.0 / 4.0,
                max: 12
            }
        );
        let roles: Vec<(&str, u64)> = s
            .role_counts
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            roles,
            vec![("assistant", 5), ("system", 1), ("tool", 1), ("user", 2)]
        );
        let hist: Vec<(u64, u64)> = s.length_histogram.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(hist, vec![(8, 3), (16, 1)]);
    }

    /// The expected digests were computed once with python3 (stdlib json + hashlib, the same
    /// calls as the seed's dedup in /work/shared/bench/dedup_bench.py) and pasted here:
    ///   chat:     hashlib.md5(json.dumps(json.loads(line)["messages"],
    ///                                    ensure_ascii=False).encode()).hexdigest()
    ///   pretrain: hashlib.md5(json.dumps(json.loads(line), ensure_ascii=False,
    ///                                    sort_keys=True).encode()).hexdigest()
    /// The lines cover non-ASCII text, every escape Python writes or drops (`\/`, `\u00e9`,
    /// surrogate pairs, DEL and U+2028 stay raw), extra keys in file order, nested tool calls,
    /// integers and floats in Python's repr, and whitespace between tokens.
    #[test]
    fn md5_matches_python() {
        let chat_cases: [(&str, &str); 6] = [
            (
                r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "café naïve 日本語 😀"}, {"role": "assistant", "content": "ok"}], "source": "forum"}"#,
                "2e4fefd14af28c8e65a014cda4151abb",
            ),
            (
                r#"{"messages":[{"role":"user","content":"a\n\nb\t\"q\" \\ \/ \u0001\u001f\u007f \b\f\r"},{"role":"assistant","content":"\u00e9\ud83d\ude00 \u2028"}]}"#,
                "f773f12d532c57916ba59df18d0919b4",
            ),
            (
                r#"{"messages": [{"content": "hi", "role": "user", "name": "bob"}, {"role": "assistant", "weight": 1, "content": "yo"}, {"role": "assistant", "content": "x", "weight": 0.0}]}"#,
                "ce0d45f4d0d0dfecfe9d6f2a57fe0a28",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2}"}, "z": [1, -2, 3.5, 1e16, 1e15, 0.0001, 1e-05, 1.5e-07, 123456789.125, -0.0, 1E2, true, false, null, {}, []]}]}, {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}]}"#,
                "2fdbdae79a8dab8ce160cf981e69eb42",
            ),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"k\\\"ey\": 1}, {\"role\": \"assistant\", \"content\": \"\u{7f}\u{85}\u{a0}\u{2028}\u{feff}\"}]}",
                "e85570e72635fd14e0139ec231328ef4",
            ),
            (
                r#"  { "messages" : [ { "role" : "user" , "content" : "spaces" } , { "role" : "assistant" , "content" : "around" } ] }  "#,
                "34c67ac7bc52f7166c62e7d73d4f1e98",
            ),
        ];
        let pretrain_cases: [(&str, &str); 3] = [
            (
                r#"{"text": "Once upon a time.\nThe end.", "source": "docs"}"#,
                "9ba3c83a85a18d7cc7dcf476aff5945a",
            ),
            (
                r#"{"z": {"b": [2, {"y": 1, "x": 0.5}], "a": null}, "text": "日本語 😀 \u0000", "A": 1, "é": 2, "e": 3}"#,
                "dd870bc536573667a34fa0d48bc8733e",
            ),
            (r#"{"text": "plain"}"#, "839a75e2ed18590a52500311f7eae50b"),
        ];
        let mut bad = Vec::new();
        for (purpose, cases) in [
            (Purpose::FineTune, &chat_cases[..]),
            (Purpose::Pretrain, &pretrain_cases[..]),
        ] {
            for (line, want) in cases {
                let (s, got) = canonical(purpose, line);
                if got != *want {
                    bad.push(format!(
                        "{purpose:?} {line}\n  ours: {s}\n  md5 {got} != {want}"
                    ));
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn python_float_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (1e-05, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (123456789.125, "123456789.125"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1234567890123456.7, "1234567890123456.8"),
            (12345678901234567.0, "1.2345678901234568e+16"),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            write_py_float(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{v:e}");
        }
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
            let mut mangled = Vec::new();
            for line in &base {
                let bytes = line.as_bytes();
                for cut in 0..bytes.len() {
                    mangled.extend_from_slice(&bytes[..cut]);
                    mangled.push(b'\n');
                    for &c in &subs {
                        mangled.extend_from_slice(&bytes[..cut]);
                        mangled.push(c);
                        mangled.extend_from_slice(&bytes[cut + 1..]);
                        mangled.push(b'\n');
                    }
                }
            }
            let res = check_piece(&mangled, purpose, usize::MAX);
            assert_eq!(
                res.lines,
                res.blank + res.invalid + res.digests.len() as u64
            );
            assert_eq!(res.invalid, res.code_counts.iter().sum::<u64>());
            assert!(res.invalid > 0 && !res.digests.is_empty());
        }
    }

    /// `WICK_VALIDATE_CORPUS=file.jsonl cargo test --release -- --ignored --nocapture` prints
    /// the md5 of the concatenated per-line digests of a real file (chat, or pretraining if
    /// the file name says `pretrain`), to compare with Python's:
    ///   a = hashlib.md5()
    ///   for line in open(path, encoding="utf-8"):
    ///       a.update(hashlib.md5(json.dumps(json.loads(line)["messages"],
    ///                                       ensure_ascii=False).encode()).digest())
    ///   print(a.hexdigest())
    /// (all lines valid). On the generator's chat_200k.jsonl both give
    /// 62035cafafb3dd8281156d6dd49799ca.
    #[test]
    #[ignore = "needs WICK_VALIDATE_CORPUS"]
    fn digests_of_a_real_file() {
        let path = std::env::var("WICK_VALIDATE_CORPUS").expect("WICK_VALIDATE_CORPUS");
        let purpose = if path.contains("pretrain") {
            Purpose::Pretrain
        } else {
            Purpose::FineTune
        };
        let data = std::fs::read(&path).unwrap();
        let res = check_piece(&data, purpose, usize::MAX);
        let mut all = Md5::new();
        for d in &res.digests {
            all.update(d.0);
        }
        eprintln!(
            "{} valid of {} lines; md5 of line digests: {}",
            res.digests.len(),
            res.lines,
            hex::encode(all.finalize())
        );
    }
}
