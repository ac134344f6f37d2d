//! Finds and masks personal data (PII) and credentials in training text.
//!
//! Part of dataset cleaning: [`PiiScanner::mask`] replaces every e-mail address, phone number,
//! IP address, payment-card number, IBAN, mainland-China resident ID and well-known API secret
//! with a typed placeholder such as `<EMAIL>`, and [`PiiScanner::may_contain`] lets a caller skip
//! whole raw JSONL lines cheaply before parsing them.
//!
//! # How a scan works (and why it is fast)
//!
//! 1. One combined regex, `candidates`, holds a *necessary condition* for every kind but e-mail:
//!    a short pattern that matches at the first byte of every real match of that kind (for
//!    example `\b[0-9]{13,19}\b` for contiguous card numbers). It uses ASCII-only classes, ASCII
//!    word boundaries and no capture groups, so the `regex` crate runs it as one lazy-DFA pass
//!    over the text; ordinary prose never leaves that pass.
//! 2. At each position where it matches, hand-written parsers for the kinds that can start with
//!    that byte read the exact span and verify it in plain Rust: Luhn and issuer prefixes for
//!    cards, ISO 13616 mod-97 and per-country lengths for IBANs, calendar date and ISO 7064
//!    MOD 11-2 for resident IDs, octet ranges for IPv4, `Ipv6Addr` parsing for IPv6, shapes and
//!    boundaries for everything else. The search then resumes one byte after the candidate start,
//!    so every position where some kind could start is visited exactly once. Every parser caps
//!    how far it reads, so the work per candidate is bounded.
//! 3. E-mail addresses are found from each `@` (located with `memchr`): the domain is read
//!    forward and the local part backward, which stays linear where a forward search would
//!    restart at every dot of `a.a.a.….a@x.com`.
//! 4. Overlapping verified spans are resolved: the longer wins, ties go to a fixed priority
//!    (secret, resident ID, IBAN, card, IP, e-mail, phone).
//!
//! [`PiiScanner::may_contain`] runs a second, looser set of necessary conditions without
//! boundary assertions over raw bytes. Every verified match except a PEM block consists only of
//! characters that JSON never has to escape (`[A-Za-z0-9]`, `@ . _ % + - ( ) :` and space), so it
//! appears verbatim in the raw line, and a PEM block's header does; the one way to hide a byte is
//! a `\u00XX` escape of an ASCII character, and any such escape makes the prefilter answer
//! `true`. Escapes of non-ASCII characters (`\u4e2d`, as Python's default `ensure_ascii` output
//! has everywhere) do not. Without boundaries the prefilter also holds for any substring of the
//! content, at the price of answering `true` for `std::vector` (`d::`) and long digit runs.
//!
//! # Limits a caller should know
//!
//! * Detection is ASCII: digits, letters and separators must be ASCII (full-width digits are not
//!   read). Non-ASCII characters count as boundaries, so `电话13800138000` is found.
//! * IBANs must be upper case; lower-case `gb82west…` is not read.
//! * Plain 4-part numbers such as `1.0.0.1` are valid IPv4 addresses and are masked even when
//!   they are meant as versions; versions with a part above 255 or a leading zero are kept.
//! * IPv6 needs three groups, or two with one of three or more hex digits (`fe80::1`); `::1`,
//!   `::` and Python slices like `a[1::2]` are kept.
//! * Phone numbers need a `+` country code, a North-American `(555) 123-4567` / `555-123-4567` /
//!   `555.123.4567` form, or a mainland-China mobile / landline form; other national formats
//!   written without `+` (for example `020 7946 0958`) are not detected.
//! * Card numbers must end a run of digit groups: `4111 1111 1111 1111 2024` (a fifth 4-digit
//!   group) is taken as a table of numbers and kept; a following expiry or CVV is fine.
//! * Length caps: e-mail local parts over 64 bytes and domains over 253 (RFC limits), JWT headers
//!   over 1 KiB or segments over 16 KiB, other variable-length tokens over 1 KiB, and PEM blocks
//!   whose footer is more than 32 KiB after the header (then only the header and the base64
//!   lines right after it are masked) are not read in full.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use regex::Regex;
use regex::bytes::Regex as BytesRegex;

/// A kind of personal data or secret that [`PiiScanner`] detects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// E-mail address with a dotted domain whose last label is 2+ letters and not a file
    /// extension (`icon@2x.png` is kept).
    Email,
    /// Phone number: `+` international, North-American national, or mainland-China format.
    Phone,
    /// IPv4 dotted quad or IPv6 address.
    IpAddress,
    /// Payment-card number passing Luhn with a known issuer prefix and length.
    CreditCard,
    /// International bank account number passing mod-97 with its country's length.
    Iban,
    /// Mainland-China 18-character resident ID with a valid birth date and check character.
    CnResidentId,
    /// API key, token or PEM private-key block of a well-known shape.
    Secret,
}

impl PiiKind {
    /// Every kind, in the order of [`PiiKind::index`] (and of the `counts` array of
    /// [`PiiScanner::mask`]).
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::IpAddress,
        PiiKind::CreditCard,
        PiiKind::Iban,
        PiiKind::CnResidentId,
        PiiKind::Secret,
    ];

    /// Stable snake-case name, for reports and metrics (`"email"`, `"ip_address"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::IpAddress => "ip_address",
            PiiKind::CreditCard => "credit_card",
            PiiKind::Iban => "iban",
            PiiKind::CnResidentId => "cn_resident_id",
            PiiKind::Secret => "secret",
        }
    }

    /// The text that replaces a match of this kind when masking (`"<EMAIL>"`, ...).
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "<EMAIL>",
            PiiKind::Phone => "<PHONE>",
            PiiKind::IpAddress => "<IP_ADDRESS>",
            PiiKind::CreditCard => "<CREDIT_CARD>",
            PiiKind::Iban => "<IBAN>",
            PiiKind::CnResidentId => "<CN_RESIDENT_ID>",
            PiiKind::Secret => "<SECRET>",
        }
    }

    /// Position of this kind in [`PiiKind::ALL`].
    pub fn index(self) -> usize {
        // The variants are declared in the order of `ALL`; a test checks it.
        self as usize
    }

    /// Which kind wins when two verified spans of equal length overlap (lower wins): the kinds
    /// with the strongest verification first, so a checksum-backed reading beats a shape-only one.
    fn tie_rank(self) -> u8 {
        match self {
            PiiKind::Secret => 0,
            PiiKind::CnResidentId => 1,
            PiiKind::Iban => 2,
            PiiKind::CreditCard => 3,
            PiiKind::IpAddress => 4,
            PiiKind::Email => 5,
            PiiKind::Phone => 6,
        }
    }
}

/// One verified match: `text[start..end]` (byte offsets, on character boundaries) is personal
/// data of kind `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PiiMatch {
    /// What was found.
    pub kind: PiiKind,
    /// Byte offset of the first byte of the match.
    pub start: usize,
    /// Byte offset one past the last byte of the match.
    pub end: usize,
}

/// Finds and masks personal data. Built once (compiles the regexes), shared across threads
/// (it is `Send + Sync`; each thread gets its own regex scratch space internally).
pub struct PiiScanner {
    /// Necessary conditions of every kind, with boundaries: where it matches, a kind may start.
    candidates: Regex,
    /// Looser conditions without boundaries (plus ASCII `\u00XX` escapes), over raw bytes.
    prefilter: BytesRegex,
}

/// Necessary conditions, one or more per kind except e-mail (found from each `@`, see
/// [`emails_around`]): each matches at the first byte of every match its kind's parser accepts.
/// `{B}` stands for an ASCII word boundary and `{NB}` for its negation; the boundaries also keep
/// each shape from restarting inside a run of digits or letters, which keeps the lazy DFA small.
/// Every shape has a bounded length: the search restarts one byte after each candidate, and an
/// unbounded shape (`eyJ[…]*\.eyJ`) could make each restart rescan the same long run.
const CANDIDATE_SHAPES: &[&str] = &[
    // Phone, international: '+', a non-zero digit and 7 more digits, each after at most three
    // separator bytes (") (" is the longest separator the parser takes).
    r"\+[1-9](?:[ .()-]{0,3}[0-9]){7}",
    // Phone, North American: [1-]555-123-4567, 555.123.4567, (555) 123-4567.
    r"{B}(?:1[-.])?[2-9][0-9]{2}[-.][0-9]{3}[-.][0-9]{4}",
    r"\([2-9][0-9]{2}\) ?[0-9]{3}[-. ][0-9]{4}",
    // Phone, China mobile: [0086]13800138000, 138 0013 8000, 138-0013-8000.
    r"{B}(?:0086[ -]?)?1[3-9][0-9](?:[0-9]{8}| [0-9]{4} [0-9]{4}|-[0-9]{4}-[0-9]{4})",
    // Phone, China landline: 010-12345678, 0755 1234567, (021) 12345678.
    r"{B}0[1-9][0-9]{1,2}[- ][0-9]{7}",
    r"\(0[1-9][0-9]{1,2}\) ?[0-9]{7}",
    // IPv4: four dot-separated runs of one to three digits.
    r"{B}[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
    // IPv6: groups then "::", or six groups and more, or "::" not glued to a word (so the
    // "::" of `std::vector` or `Foo::bar` is not a candidate).
    r"{B}[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}::",
    r"{B}[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){5}:[0-9A-Fa-f]",
    r"{NB}::[0-9A-Fa-f]",
    // Card: 13-19 contiguous digits, or 4-4-4-x[-x], 4-6-5, 4-6-4 groups.
    r"{B}[0-9]{13,19}{B}",
    r"{B}[0-9]{4}[ -][0-9]{4,6}[ -][0-9]{4,5}",
    // Resident ID: 17 digits (the first 1-8) and a digit or X.
    r"{B}[1-8][0-9]{16}[0-9Xx]{B}",
    // IBAN: country letters, check digits, then four more characters (grouped or not).
    r"{B}[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}",
    // Secrets, by prefix.
    r"{B}(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"{B}gh[pousr]_[A-Za-z0-9]{36}",
    r"{B}github_pat_[A-Za-z0-9_]{82}",
    r"{B}sk-[A-Za-z0-9_-]{20}",
    r"{B}xox[baprs]-[A-Za-z0-9-]{10}",
    r"{B}AIza[0-9A-Za-z_-]{35}",
    r"{B}[rs]k_(?:live|test)_[A-Za-z0-9]{24}",
    r"{B}hf_[A-Za-z0-9]{34}",
    r"{B}eyJ[A-Za-z0-9_-]",
    r"-----BEGIN [A-Z0-9 ]{0,52}PRIVATE KEY-----",
];

/// Necessary conditions for [`PiiScanner::may_contain`], over raw JSON bytes: every verified
/// match of some kind contains a match of one of these. They have no boundary assertions, because
/// the byte before a match in a raw line may be the letter of an escape such as `\n`, and
/// because `find` may be given any substring. Written separately from [`CANDIDATE_SHAPES`] and
/// looser, so that the unanchored DFA stays small: a shape such as `[1-8][0-9]{16}` without a
/// boundary could start anew at every digit and track every subset of start offsets.
const PREFILTER_SHAPES: &[&str] = &[
    // E-mail: the last local-part byte (never '.'), '@', a label, a dot, one more byte.
    r"[A-Za-z0-9_%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9]",
    // Phone: international (starts with '+'), North American, China (contiguous mobiles are
    // 11-digit runs, below), landlines.
    r"\+[1-9](?:[ .()-]{0,3}[0-9]){7}",
    r"[0-9]{3}[-.][0-9]{3}[-.][0-9]{4}",
    r"\([0-9]{3,4}\) ?[0-9]{3}",
    r"[0-9]{3}[ -][0-9]{4}[ -][0-9]{4}",
    r"[0-9]{3,4}[- ][0-9]{7}",
    // Runs of 11+ digits: China mobiles, contiguous cards, all-digit resident IDs.
    r"[0-9]{11}",
    // IPv4, IPv6 ("::" next to a hex digit, or seven colons' worth of groups).
    r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
    r"[0-9A-Fa-f]::|::[0-9A-Fa-f]",
    r"(?:[0-9A-Fa-f]{1,4}:){6}[0-9A-Fa-f]",
    // Grouped cards; resident IDs ending in X.
    r"[0-9]{4}[ -][0-9]{4,6}[ -][0-9]{4}",
    r"[0-9]{17}[Xx]",
    // IBAN.
    r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}",
    // Secrets, by prefix.
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"gh[pousr]_[A-Za-z0-9]{36}",
    r"github_pat_[A-Za-z0-9_]{82}",
    r"sk-[A-Za-z0-9_-]{20}",
    r"xox[baprs]-[A-Za-z0-9-]{10}",
    r"AIza[0-9A-Za-z_-]{35}",
    r"[rs]k_(?:live|test)_[A-Za-z0-9]{24}",
    r"hf_[A-Za-z0-9]{34}",
    r"eyJ[A-Za-z0-9_-]*\.eyJ",
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----",
    // A JSON `\u00XX` escape of an ASCII character can hide any byte of a match
    // (`bob\u0040example.com`), so a line holding one always takes the slow path.
    r"\\u00[0-7][0-9A-Fa-f]",
];

/// Lazy-DFA cache per regex and thread; the default 2 MiB is enough for prose, this leaves room
/// for text that visits many states (long digit and hex runs) without falling back to slower
/// engines.
const DFA_CACHE_BYTES: usize = 8 << 20;

/// One alternation of `shapes`, with `{B}` / `{NB}` spelled as ASCII (non-)word boundaries.
fn alternation(shapes: &[&str]) -> String {
    shapes
        .iter()
        .map(|shape| {
            let shape = shape
                .replace("{NB}", r"(?-u:\B)")
                .replace("{B}", r"(?-u:\b)");
            format!("(?:{shape})")
        })
        .collect::<Vec<_>>()
        .join("|")
}

impl Default for PiiScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl PiiScanner {
    /// Compiles the scanner's regexes (a few milliseconds); build one and share it.
    pub fn new() -> Self {
        let candidates = regex::RegexBuilder::new(&alternation(CANDIDATE_SHAPES))
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .expect("PII candidate regex compiles");
        let prefilter = regex::bytes::RegexBuilder::new(&alternation(PREFILTER_SHAPES))
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .expect("PII prefilter regex compiles");
        PiiScanner {
            candidates,
            prefilter,
        }
    }

    /// Cheap check on raw bytes (e.g. a whole JSONL line, possibly with JSON escapes): false means
    /// `find` on any substring of it would find nothing, so the caller may skip parsing the line.
    /// It may say true for lines without PII (a prefilter), never false for a line with some.
    /// Any `\u00XX` escape of an ASCII character makes it say true.
    pub fn may_contain(&self, bytes: &[u8]) -> bool {
        self.prefilter.is_match(bytes)
    }

    /// Verified, non-overlapping matches in order (where two kinds overlap, keep the longer; on
    /// ties a fixed priority: secret, resident ID, IBAN, card, IP, e-mail, phone).
    pub fn find(&self, text: &str) -> Vec<PiiMatch> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for at in memchr::memchr_iter(b'@', bytes) {
            emails_around(bytes, at, &mut found);
        }
        let emails = found.len();
        let mut pos = 0;
        while let Some(candidate) = self.candidates.find_at(text, pos) {
            let start = candidate.start();
            verified_at(bytes, start, &mut found);
            // Every shape starts with an ASCII byte, so `start + 1` is a character boundary. The
            // next search may find another start inside this candidate (`555-123-4567` inside
            // `1-555-123-4567`); overlaps are settled below.
            pos = start + 1;
        }
        if emails > 0 && found.len() > emails {
            // Both parts are in start order; merge them (stable, so ties keep e-mails first).
            found.sort_by_key(|m| m.start);
        }
        resolve_overlaps(found)
    }

    /// `text` with every match replaced by its placeholder, adding one to `counts[kind.index()]`
    /// per replacement; `None` (and counts untouched) when nothing matched.
    pub fn mask(&self, text: &str, counts: &mut [u64; 7]) -> Option<String> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for m in &found {
            out.push_str(&text[copied..m.start]);
            out.push_str(m.kind.placeholder());
            counts[m.kind.index()] += 1;
            copied = m.end;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }
}

/// Runs the parsers of every kind (but e-mail) that can start with `t[s]` and pushes the
/// verified spans.
fn verified_at(t: &[u8], s: usize, out: &mut Vec<PiiMatch>) {
    let mut push = |kind: PiiKind, end: Option<usize>| {
        if let Some(end) = end {
            out.push(PiiMatch {
                kind,
                start: s,
                end,
            });
        }
    };
    match t[s] {
        b'+' => push(PiiKind::Phone, phone_international_at(t, s)),
        b'(' => push(PiiKind::Phone, phone_parenthesized_at(t, s)),
        b'-' => push(PiiKind::Secret, pem_block_at(t, s)),
        b':' => push(PiiKind::IpAddress, ipv6_at(t, s)),
        b'0'..=b'9' => {
            push(PiiKind::Phone, phone_national_at(t, s));
            push(PiiKind::IpAddress, longest(ipv4_at(t, s), ipv6_at(t, s)));
            push(PiiKind::CreditCard, card_at(t, s));
            push(PiiKind::CnResidentId, cn_resident_id_at(t, s));
        }
        b'A'..=b'Z' | b'a'..=b'z' => {
            push(PiiKind::Iban, iban_at(t, s));
            push(PiiKind::Secret, secret_token_at(t, s));
            push(PiiKind::IpAddress, ipv6_at(t, s));
        }
        _ => {}
    }
}

/// Keeps a non-overlapping subset of `found` (sorted by start): within each group of
/// transitively overlapping spans, longest first, ties by [`PiiKind::tie_rank`], then leftmost.
fn resolve_overlaps(mut found: Vec<PiiMatch>) -> Vec<PiiMatch> {
    if found.len() < 2 {
        return found;
    }
    let mut kept = Vec::with_capacity(found.len());
    let mut i = 0;
    while i < found.len() {
        let mut j = i + 1;
        let mut group_end = found[i].end;
        while j < found.len() && found[j].start < group_end {
            group_end = group_end.max(found[j].end);
            j += 1;
        }
        let group = &mut found[i..j];
        if group.len() == 1 {
            kept.push(group[0]);
        } else {
            group.sort_by(|a, b| {
                (b.end - b.start)
                    .cmp(&(a.end - a.start))
                    .then(a.kind.tie_rank().cmp(&b.kind.tie_rank()))
                    .then(a.start.cmp(&b.start))
            });
            // Kept spans of this group by start; they are disjoint, so a new span overlaps one
            // exactly when the kept span starting last before its end reaches past its start.
            // (A group can be long: `a@bb.cc@bb.cc@…` chains every address to the next.)
            let mut chosen: BTreeMap<usize, PiiMatch> = BTreeMap::new();
            for m in group.iter() {
                let overlaps = chosen
                    .range(..m.end)
                    .next_back()
                    .is_some_and(|(_, k)| k.end > m.start);
                if !overlaps {
                    chosen.insert(m.start, *m);
                }
            }
            kept.extend(chosen.into_values());
        }
        i = j;
    }
    kept
}

// ---------------------------------------------------------------------------------------------
// Byte helpers and boundaries
// ---------------------------------------------------------------------------------------------

/// `t[i]`, or 0 (a byte no rule accepts) past the end, so parsers need no bounds checks.
fn byte_at(t: &[u8], i: usize) -> u8 {
    t.get(i).copied().unwrap_or(0)
}

/// ASCII word character, as `(?-u:\b)` sees it.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length of the run of bytes in `class` starting at `i`, counting at most `max`. Every caller
/// caps its runs, so that the parsers' work per candidate is bounded even on a megabyte of
/// digits or base64 (`max` itself then means "too long").
fn run_len(t: &[u8], i: usize, max: usize, class: impl Fn(u8) -> bool) -> usize {
    t.get(i..).map_or(0, |rest| {
        rest.iter().take(max).take_while(|&&b| class(b)).count()
    })
}

/// Longest digit run any parser needs to measure exactly; longer runs read as this.
const DIGIT_RUN_CAP: usize = 32;

/// Length of the run of ASCII digits starting at `i`, at most [`DIGIT_RUN_CAP`] (no numeric
/// shape is that long, so a capped run is rejected like any other wrong length).
fn digit_run(t: &[u8], i: usize) -> usize {
    run_len(t, i, DIGIT_RUN_CAP, |b| b.is_ascii_digit())
}

/// The later of two optional ends.
fn longest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    a.max(b)
}

/// Bytes that join digits into one larger number-like token: `3.14`, `1,000`, `2024-01`, `1/2`,
/// `12:30`. A number-shaped match next to one of these followed by a digit is part of something
/// longer (a date, a decimal, a longer id) and is not read.
const NUMBER_JOINERS: &[u8] = b".,-/:";

/// Whether a numeric token starting at `s` is glued to what precedes it.
fn glued_left(t: &[u8], s: usize) -> bool {
    if s == 0 {
        return false;
    }
    let prev = t[s - 1];
    is_word(prev) || (NUMBER_JOINERS.contains(&prev) && s >= 2 && t[s - 2].is_ascii_digit())
}

/// Whether a numeric token ending at `e` is glued to what follows it.
fn glued_right(t: &[u8], e: usize) -> bool {
    let next = byte_at(t, e);
    is_word(next) || (NUMBER_JOINERS.contains(&next) && byte_at(t, e + 1).is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// E-mail
// ---------------------------------------------------------------------------------------------

/// Characters of an e-mail local part (the unquoted common subset of RFC 5322).
fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Last labels that mark a file name (`icon@2x.png`, `logo@3x.webp`) rather than a domain.
/// Two-letter country TLDs that double as extensions (`.py`, `.md`, `.rs`) are left out.
const FILE_EXTENSIONS: &[&[u8]] = &[
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"bmp", b"ico", b"tif", b"tiff", b"heic",
    b"heif", b"avif", b"pdf", b"psd", b"eps", b"css", b"js", b"mjs", b"cjs", b"jsx", b"tsx",
    b"json", b"xml", b"html", b"htm", b"txt", b"csv", b"log", b"mp3", b"mp4", b"m4a", b"wav",
    b"ogg", b"webm", b"mov", b"avi", b"mkv", b"flac", b"woff", b"woff2", b"ttf", b"otf", b"eot",
    b"zip", b"gz", b"tgz", b"rar", b"yml", b"yaml", b"toml", b"lock",
];

fn is_file_extension(label: &[u8]) -> bool {
    FILE_EXTENSIONS
        .iter()
        .any(|ext| ext.eq_ignore_ascii_case(label))
}

/// Longest local part (RFC 5321).
const EMAIL_LOCAL_MAX: usize = 64;

/// Longest domain (RFC 1035), and longest label.
const EMAIL_DOMAIN_MAX: usize = 253;
const EMAIL_LABEL_MAX: usize = 63;

/// An e-mail address starting at `s`: `local@label.label…tld`. The local part starts with a
/// word character not preceded by one, has no `..` and does not end with `.`.
///
/// This is the definition; [`emails_around`] finds the same addresses from the `@` outward.
#[cfg(test)]
fn email_at(t: &[u8], s: usize) -> Option<usize> {
    if !is_word(t[s]) || (s > 0 && is_word(t[s - 1])) {
        return None;
    }
    let at = s + run_len(t, s, EMAIL_LOCAL_MAX + 1, is_email_local);
    let local = &t[s..at];
    if byte_at(t, at) != b'@'
        || local.len() > EMAIL_LOCAL_MAX
        || local.ends_with(b".")
        || local.windows(2).any(|w| w == b"..")
    {
        return None;
    }
    email_domain_end(t, at + 1)
}

/// Every e-mail address whose `@` is at `at`, as `email_at` (the definition, kept for tests)
/// would find them at each start: one domain, read forward, and each valid start of the local
/// part, read backward. Finding addresses from the `@` (found by `memchr`) keeps the work per
/// `@` bounded even in `a.a.a.….a@x.com`, where a forward search would restart at every dot.
fn emails_around(t: &[u8], at: usize, out: &mut Vec<PiiMatch>) {
    if at == 0 || t[at - 1] == b'.' {
        return;
    }
    let Some(end) = email_domain_end(t, at + 1) else {
        return;
    };
    let mut lo = at;
    while lo > 0 && at - lo < EMAIL_LOCAL_MAX && is_email_local(t[lo - 1]) {
        lo -= 1;
    }
    // A start before a ".." would include it.
    if let Some(dots) = (lo..at - 1)
        .rev()
        .find(|&i| t[i] == b'.' && t[i + 1] == b'.')
    {
        lo = dots + 2;
    }
    for start in lo..at {
        if is_word(t[start]) && (start == 0 || !is_word(t[start - 1])) {
            out.push(PiiMatch {
                kind: PiiKind::Email,
                start,
                end,
            });
        }
    }
}

/// End of the e-mail domain starting at `i`: two or more labels of letters, digits and inner
/// hyphens, the last all letters (2+) and not a file extension, not glued to a word.
fn email_domain_end(t: &[u8], domain_start: usize) -> Option<usize> {
    let mut i = domain_start;
    let mut labels = 0;
    let mut last_label;
    loop {
        let n = run_len(t, i, EMAIL_LABEL_MAX + 1, |b| {
            b.is_ascii_alphanumeric() || b == b'-'
        });
        if n == 0 || n > EMAIL_LABEL_MAX || t[i] == b'-' || t[i + n - 1] == b'-' {
            return None;
        }
        labels += 1;
        last_label = (i, i + n);
        i += n;
        if i - domain_start > EMAIL_DOMAIN_MAX {
            return None;
        }
        if byte_at(t, i) == b'.' && byte_at(t, i + 1).is_ascii_alphanumeric() {
            i += 1;
        } else {
            break;
        }
    }
    let tld = &t[last_label.0..last_label.1];
    let ok = labels >= 2
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !is_file_extension(tld)
        && !is_word(byte_at(t, i));
    ok.then_some(i)
}

// ---------------------------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------------------------

/// `+` country code and subscriber number: digit groups separated by one of ` `, `-`, `.`,
/// optionally with one group in parentheses (`+1 (555) 123-4567`, `+44 (0) 20 7946 0958`),
/// 8 to 15 digits in all (E.164 allows at most 15). Where the groups run on past 15 digits the
/// longest prefix of whole groups that fits is taken, unless it is glued to the rest.
fn phone_international_at(t: &[u8], s: usize) -> Option<usize> {
    if (s > 0 && is_word(t[s - 1])) || !matches!(byte_at(t, s + 1), b'1'..=b'9') {
        return None;
    }
    let mut i = s + 1;
    let mut digits = 0;
    let mut open = false;
    let mut used_paren = false;
    let mut best = None;
    loop {
        let n = digit_run(t, i);
        digits += n;
        i += n;
        if digits > 15 {
            break;
        }
        if !open && digits >= 8 && !glued_right(t, i) {
            best = Some(i);
        }
        // Separator: [')'] [' ' | '-' | '.'] ['('], not empty, then a digit.
        let mut j = i;
        let mut now_open = open;
        if byte_at(t, j) == b')' {
            if !open {
                break;
            }
            now_open = false;
            j += 1;
        } else if open {
            // A parenthesized group is a single group.
            break;
        }
        if matches!(byte_at(t, j), b' ' | b'-' | b'.') {
            j += 1;
        }
        if byte_at(t, j) == b'(' && !now_open && !used_paren {
            now_open = true;
            used_paren = true;
            j += 1;
        }
        if j == i || !byte_at(t, j).is_ascii_digit() {
            break;
        }
        open = now_open;
        i = j;
    }
    best
}

/// Phone numbers starting with a digit: North-American, China mobile, China landline.
fn phone_national_at(t: &[u8], s: usize) -> Option<usize> {
    if glued_left(t, s) {
        return None;
    }
    longest(
        phone_north_american_at(t, s),
        longest(cn_mobile_at(t, s), cn_landline_at(t, s)),
    )
}

/// `555-123-4567` or `555.123.4567` (same separator twice), optionally after a `1-` / `1.`
/// trunk prefix; the area code starts with 2-9 as in the North American Numbering Plan.
fn phone_north_american_at(t: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    let mut sep = None;
    if t[i] == b'1' && matches!(byte_at(t, i + 1), b'-' | b'.') {
        sep = Some(t[i + 1]);
        i += 2;
    }
    if digit_run(t, i) != 3 || !matches!(t[i], b'2'..=b'9') {
        return None;
    }
    i += 3;
    let sep = match (sep, byte_at(t, i)) {
        (None, c @ (b'-' | b'.')) => c,
        (Some(p), c) if c == p => c,
        _ => return None,
    };
    i += 1;
    if digit_run(t, i) != 3 || byte_at(t, i + 3) != sep || digit_run(t, i + 4) != 4 {
        return None;
    }
    let end = i + 8;
    (!glued_right(t, end)).then_some(end)
}

/// China mobile: `1[3-9]` and 9 more digits, contiguous or split 3-4-4 by spaces or dashes,
/// optionally after `0086`.
fn cn_mobile_at(t: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    if t[s..].starts_with(b"0086") {
        i += 4;
        if matches!(byte_at(t, i), b' ' | b'-') {
            i += 1;
        }
    }
    if byte_at(t, i) != b'1' || !matches!(byte_at(t, i + 1), b'3'..=b'9') {
        return None;
    }
    let end = match digit_run(t, i) {
        11 => i + 11,
        3 => {
            let sep = byte_at(t, i + 3);
            let split = matches!(sep, b' ' | b'-')
                && digit_run(t, i + 4) == 4
                && byte_at(t, i + 8) == sep
                && digit_run(t, i + 9) == 4;
            if !split {
                return None;
            }
            i + 13
        }
        _ => return None,
    };
    (!glued_right(t, end)).then_some(end)
}

/// Whether an area code of `area_len` digits (a leading 0 included) and a local number of
/// `local_len` digits form a mainland-China landline: 3-digit codes (010, 02x) have 8-digit
/// numbers, 4-digit codes 7 or 8.
fn cn_landline_lengths_ok(area_len: usize, local_len: usize) -> bool {
    matches!((area_len, local_len), (3, 8) | (4, 7) | (4, 8))
}

/// China landline `010-12345678`, `0755 1234567`.
fn cn_landline_at(t: &[u8], s: usize) -> Option<usize> {
    let area = digit_run(t, s);
    if t[s] != b'0' || !matches!(byte_at(t, s + 1), b'1'..=b'9') || !matches!(area, 3 | 4) {
        return None;
    }
    if !matches!(byte_at(t, s + area), b'-' | b' ') {
        return None;
    }
    let local = digit_run(t, s + area + 1);
    let end = s + area + 1 + local;
    (cn_landline_lengths_ok(area, local) && !glued_right(t, end)).then_some(end)
}

/// `(555) 123-4567` (North American) or `(021) 12345678` (China landline).
fn phone_parenthesized_at(t: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_word(t[s - 1]) {
        return None;
    }
    let area = digit_run(t, s + 1);
    if byte_at(t, s + 1 + area) != b')' {
        return None;
    }
    let mut i = s + 2 + area;
    if byte_at(t, i) == b' ' {
        i += 1;
    }
    let end = if area == 3 && matches!(t[s + 1], b'2'..=b'9') {
        let ok = digit_run(t, i) == 3
            && matches!(byte_at(t, i + 3), b'-' | b'.' | b' ')
            && digit_run(t, i + 4) == 4;
        if !ok {
            return None;
        }
        i + 8
    } else if t[s + 1] == b'0' && matches!(byte_at(t, s + 2), b'1'..=b'9') {
        let local = digit_run(t, i);
        if !cn_landline_lengths_ok(area, local) {
            return None;
        }
        i + local
    } else {
        return None;
    };
    (!glued_right(t, end)).then_some(end)
}

// ---------------------------------------------------------------------------------------------
// IP addresses
// ---------------------------------------------------------------------------------------------

/// IPv4 dotted quad: octets 0-255 without leading zeros, not part of a longer dotted run
/// (`1.2.3.4.5`) nor glued to a word. A following `:port` or `/prefix` is fine.
fn ipv4_at(t: &[u8], s: usize) -> Option<usize> {
    if s > 0 && (is_word(t[s - 1]) || t[s - 1] == b'.') {
        return None;
    }
    let mut i = s;
    for octet in 0..4 {
        let n = digit_run(t, i);
        if n == 0 || n > 3 || (n > 1 && t[i] == b'0') {
            return None;
        }
        let value = t[i..i + n]
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        if value > 255 {
            return None;
        }
        i += n;
        if octet < 3 {
            if byte_at(t, i) != b'.' {
                return None;
            }
            i += 1;
        }
    }
    let glued = is_word(byte_at(t, i)) || (byte_at(t, i) == b'.' && is_word(byte_at(t, i + 1)));
    (!glued).then_some(i)
}

/// Longest IPv6 text, `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const IPV6_MAX_TEXT: usize = 45;

/// IPv6 address, full or compressed, with an embedded IPv4 tail allowed; validated by the
/// standard library's parser. See the module notes for which short forms are kept.
fn ipv6_at(t: &[u8], s: usize) -> Option<usize> {
    if s > 0 && (is_word(t[s - 1]) || matches!(t[s - 1], b':' | b'.')) {
        return None;
    }
    let run = run_len(t, s, IPV6_MAX_TEXT + 3, |b| {
        b.is_ascii_hexdigit() || b == b':' || b == b'.'
    });
    if run > IPV6_MAX_TEXT + 2 || is_word(byte_at(t, s + run)) {
        return None;
    }
    // Sentence punctuation after the address: trailing dots, one trailing colon.
    let mut end = s + run;
    while end > s && t[end - 1] == b'.' {
        end -= 1;
    }
    if end >= s + 2 && t[end - 1] == b':' && t[end - 2] != b':' {
        end -= 1;
    }
    let text = std::str::from_utf8(&t[s..end]).ok()?;
    text.parse::<Ipv6Addr>().ok()?;
    // Require some substance: `::1`, `1::2` (a Python slice) and `a::b` are kept.
    let mut groups = 0;
    let mut longest_group = 0;
    for part in text.split(':').filter(|p| !p.is_empty()) {
        groups += if part.contains('.') { 2 } else { 1 };
        longest_group = longest_group.max(part.len());
    }
    (groups >= 3 || (groups == 2 && longest_group >= 3)).then_some(end)
}

// ---------------------------------------------------------------------------------------------
// Payment cards
// ---------------------------------------------------------------------------------------------

/// Card number: 13-19 contiguous digits or 4-4-4-1..4[-1..3] / 4-6-5 / 4-6-4 groups with one
/// consistent separator (space or dash), passing Luhn with a known issuer prefix and length.
/// The groups must be the whole run of digit groups, except that a following space and a group
/// of other than 4 digits (an expiry `12/25`, a CVV) may follow.
fn card_at(t: &[u8], s: usize) -> Option<usize> {
    if glued_left(t, s) {
        return None;
    }
    // (start, length) of each digit group; six is more than any card shape has.
    let mut groups = [(0usize, 0usize); 6];
    let mut count = 0;
    let mut sep = 0u8;
    let mut i = s;
    loop {
        let n = digit_run(t, i);
        groups[count] = (i, n);
        count += 1;
        i += n;
        let c = byte_at(t, i);
        if count == groups.len()
            || !matches!(c, b' ' | b'-')
            || (sep != 0 && sep != c)
            || !byte_at(t, i + 1).is_ascii_digit()
        {
            break;
        }
        sep = c;
        i += 1;
    }
    for k in (1..=count).rev() {
        let shape = &groups[..k];
        if !card_shape_ok(shape) {
            continue;
        }
        let end = shape[k - 1].0 + shape[k - 1].1;
        if k < count {
            // Only a space may separate the card from what follows, and not a fifth 4-digit
            // group (a table of numbers rather than one card).
            if sep != b' ' || groups[k].1 == 4 {
                continue;
            }
        } else if glued_right(t, end) {
            continue;
        }
        // Grouped digits right after "<digit> " continue a longer digit table.
        if k > 1 && s >= 2 && t[s - 1] == b' ' && t[s - 2].is_ascii_digit() {
            continue;
        }
        let mut digits = [0u8; 19];
        let mut n = 0;
        for &(g, len) in shape {
            digits[n..n + len].copy_from_slice(&t[g..g + len]);
            n += len;
        }
        let digits = &digits[..n];
        if card_issuer_ok(digits) && luhn_valid(digits) {
            return Some(end);
        }
    }
    None
}

/// Whether digit-group lengths form a card layout.
fn card_shape_ok(groups: &[(usize, usize)]) -> bool {
    let len = |i: usize| groups[i].1;
    match groups.len() {
        1 => (13..=19).contains(&len(0)),
        3 => len(0) == 4 && len(1) == 6 && matches!(len(2), 4 | 5),
        4 => groups[..3].iter().all(|g| g.1 == 4) && (1..=4).contains(&len(3)),
        5 => groups[..4].iter().all(|g| g.1 == 4) && (1..=3).contains(&len(4)),
        _ => false,
    }
}

/// Luhn (mod 10) check over ASCII digits, the last being the check digit.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let v = u32::from(d - b'0');
            if i % 2 == 1 {
                let doubled = v * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the leading digits name a known issuer that issues numbers of this length: Visa,
/// Mastercard, American Express, Discover, JCB, UnionPay, Diners Club.
fn card_issuer_ok(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'))
    };
    let len = digits.len();
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    match digits[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => (51..=55).contains(&p2) && len == 16,
        b'2' => (2221..=2720).contains(&p4) && len == 16,
        b'3' => {
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38) && (14..=19).contains(&len))
        }
        b'6' => {
            (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// IBAN
// ---------------------------------------------------------------------------------------------

/// Total IBAN length for a country code (ISO 13616 / SWIFT IBAN registry): the SEPA countries
/// and others in common use. Unknown codes are refused.
fn iban_length(country: [u8; 2]) -> Option<usize> {
    let len = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(len)
}

/// Longest IBAN of [`iban_length`].
const IBAN_MAX_LEN: usize = 32;

/// IBAN starting at `s`, contiguous (`DE89370400440532013000`) or in groups of four separated
/// by single spaces (`GB82 WEST 1234 5698 7654 32`); exactly the country's length is read.
fn iban_at(t: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_word(t[s - 1]) {
        return None;
    }
    let len = iban_length([byte_at(t, s), byte_at(t, s + 1)])?;
    if !byte_at(t, s + 2).is_ascii_digit() || !byte_at(t, s + 3).is_ascii_digit() {
        return None;
    }
    let grouped = byte_at(t, s + 4) == b' ';
    let mut iban = [0u8; IBAN_MAX_LEN];
    iban[..4].copy_from_slice(&t[s..s + 4]);
    let mut i = s + 4;
    for slot in iban.iter_mut().take(len).skip(4) {
        let n = i - s; // characters read so far, spaces included
        if grouped && n % 5 == 4 {
            if byte_at(t, i) != b' ' {
                return None;
            }
            i += 1;
        }
        let c = byte_at(t, i);
        if !(c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return None;
        }
        *slot = c;
        i += 1;
    }
    (!is_word(byte_at(t, i)) && iban_checksum_ok(&iban[..len])).then_some(i)
}

/// ISO 13616 check: move the first four characters to the end, read letters as 10..35, and the
/// resulting number mod 97 must be 1. `iban` is compact (no spaces), upper case.
fn iban_checksum_ok(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

// ---------------------------------------------------------------------------------------------
// Mainland-China resident ID
// ---------------------------------------------------------------------------------------------

/// 18-character resident ID starting at `s`, not glued to other digits or words.
fn cn_resident_id_at(t: &[u8], s: usize) -> Option<usize> {
    if !matches!(t[s], b'1'..=b'8') || glued_left(t, s) {
        return None;
    }
    let shape_ok = match digit_run(t, s) {
        18 => true,
        17 => matches!(byte_at(t, s + 17), b'X' | b'x'),
        _ => false,
    };
    let end = s + 18;
    (shape_ok && !glued_right(t, end) && cn_resident_id_valid(&t[s..end])).then_some(end)
}

/// ISO 7064 MOD 11-2 weights of the first 17 digits.
const CN_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check character for each weighted-sum remainder mod 11.
const CN_ID_CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// Whether 18 bytes form a valid resident ID: area code starting 1-8, a real birth date in
/// 1900-2099, and the right check character (`X` or `x` for ten).
fn cn_resident_id_valid(id: &[u8]) -> bool {
    if id.len() != 18 || !matches!(id[0], b'1'..=b'8') || !id[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let number = |r: std::ops::Range<usize>| {
        id[r]
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (number(6..10), number(10..12), number(12..14));
    if !(1900..=2099).contains(&year) || !(1..=12).contains(&month) {
        return false;
    }
    if day == 0 || day > days_in_month(year, month) {
        return false;
    }
    let sum: u32 = id[..17]
        .iter()
        .zip(CN_ID_WEIGHTS)
        .map(|(&d, w)| u32::from(d - b'0') * w)
        .sum();
    CN_ID_CHECK_CHARS[(sum % 11) as usize] == id[17].to_ascii_uppercase()
}

/// Days in `month` (1-12) of `year`, Gregorian.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Base64url alphabet (JWT segments, several key formats).
fn is_base64url(b: u8) -> bool {
    is_word(b) || b == b'-'
}

/// `t[start..]` holds exactly `n` bytes of `class` (the run is not longer), not followed by a
/// word character.
fn exact_run(t: &[u8], start: usize, n: usize, class: impl Fn(u8) -> bool) -> Option<usize> {
    let len = run_len(t, start, n + 1, class);
    (len == n && !is_word(byte_at(t, start + n))).then_some(start + n)
}

/// Longest variable-length token read; real keys are well under 300 bytes, and a longer run is
/// some other blob.
const SECRET_MAX_LEN: usize = 1024;

/// `t[start..]` holds at least `min` bytes of `class`; the match takes the whole run, which must
/// not be followed by a word character.
fn long_run(t: &[u8], start: usize, min: usize, class: impl Fn(u8) -> bool) -> Option<usize> {
    let len = run_len(t, start, SECRET_MAX_LEN, class);
    (len >= min && len < SECRET_MAX_LEN && !is_word(byte_at(t, start + len))).then_some(start + len)
}

/// API keys and tokens recognised by their documented prefixes and lengths.
fn secret_token_at(t: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_word(t[s - 1]) {
        return None;
    }
    let rest = &t[s..];
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
        // AWS access key id.
        return exact_run(t, s + 4, 16, |b| {
            b.is_ascii_uppercase() || b.is_ascii_digit()
        });
    }
    if rest.starts_with(b"gh") && matches!(byte_at(t, s + 2), b'p' | b'o' | b'u' | b's' | b'r') {
        // GitHub classic tokens.
        return if byte_at(t, s + 3) == b'_' {
            exact_run(t, s + 4, 36, alnum)
        } else {
            None
        };
    }
    if rest.starts_with(b"github_pat_") {
        // GitHub fine-grained personal access token.
        return exact_run(t, s + 11, 82, is_word);
    }
    for prefix in [&b"sk-ant-"[..], b"sk-proj-", b"sk-svcacct-"] {
        if rest.starts_with(prefix) {
            // Anthropic and OpenAI project / service-account keys.
            return long_run(t, s + prefix.len(), 20, is_base64url);
        }
    }
    if rest.starts_with(b"sk-") {
        // OpenAI legacy user key.
        return long_run(t, s + 3, 20, alnum);
    }
    if rest.starts_with(b"xox")
        && matches!(byte_at(t, s + 3), b'b' | b'a' | b'p' | b'r' | b's')
        && byte_at(t, s + 4) == b'-'
    {
        // Slack tokens.
        return long_run(t, s + 5, 10, |b| alnum(b) || b == b'-');
    }
    if rest.starts_with(b"AIza") {
        // Google API key.
        return exact_run(t, s + 4, 35, is_base64url);
    }
    for prefix in [&b"sk_live_"[..], b"rk_live_", b"sk_test_"] {
        if rest.starts_with(prefix) {
            // Stripe secret and restricted keys.
            return long_run(t, s + prefix.len(), 24, alnum);
        }
    }
    if rest.starts_with(b"hf_") {
        // Hugging Face access token.
        return exact_run(t, s + 3, 34, alnum);
    }
    if rest.starts_with(b"eyJ") {
        return jwt_at(t, s);
    }
    None
}

/// Longest JWT header and payload/signature segments read. Headers are short JSON (`alg`,
/// `typ`, `kid`), usually under 200 bytes; the tighter cap bounds the work per candidate in
/// base64 text where `-eyJ` repeats (every one is a candidate start that reads to the run end).
const JWT_MAX_HEADER: usize = 1 << 10;
const JWT_MAX_SEGMENT: usize = 16 << 10;

/// JSON Web Token: `eyJ…` header, `.`, `eyJ…` payload (both base64url of a JSON object, which
/// always starts `{"`), `.`, signature.
fn jwt_at(t: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    for segment in 0..3 {
        let max = if segment == 0 {
            JWT_MAX_HEADER
        } else {
            JWT_MAX_SEGMENT
        };
        let n = run_len(t, i, max, is_base64url);
        if n == max {
            return None;
        }
        if segment < 2 {
            if !t[i..].starts_with(b"eyJ") || n < 4 || byte_at(t, i + n) != b'.' {
                return None;
            }
            i += n + 1;
        } else {
            if n == 0 {
                return None;
            }
            i += n;
        }
    }
    Some(i)
}

/// How far after a PEM header its footer is looked for; a 16384-bit RSA key is about 12 KiB.
const PEM_MAX_BODY: usize = 32 << 10;

/// Label lengths from here up are refused (`ENCRYPTED PRIVATE KEY` is 21); the candidate
/// shape allows 52 bytes before `PRIVATE KEY`, 63 in all.
const PEM_MAX_LABEL: usize = 64;

/// Longest base64 line taken from a PEM body without a footer (PEM writes 64, some tools 76).
const PEM_MAX_LINE: usize = 128;

/// PEM private-key block `-----BEGIN <label> PRIVATE KEY-----` … `-----END <same label>-----`,
/// all one secret. Without a footer (truncated text) the header and the base64 lines right after
/// it are taken.
fn pem_block_at(t: &[u8], s: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if !t[s..].starts_with(BEGIN) {
        return None;
    }
    let label_start = s + BEGIN.len();
    let label_len = run_len(t, label_start, PEM_MAX_LABEL, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
    });
    let label = &t[label_start..label_start + label_len];
    let label_end = label_start + label_len;
    if label_len == PEM_MAX_LABEL
        || !label.ends_with(b"PRIVATE KEY")
        || !t[label_end..].starts_with(b"-----")
    {
        return None;
    }
    let header_end = label_end + 5;
    let footer = [&b"-----END "[..], label, b"-----"].concat();
    let window = &t[header_end..t.len().min(header_end + PEM_MAX_BODY)];
    if let Some(offset) = memchr::memmem::find(window, &footer) {
        return Some(header_end + offset + footer.len());
    }
    let mut end = header_end;
    loop {
        let mut line = end;
        if byte_at(t, line) == b'\r' {
            line += 1;
        }
        if byte_at(t, line) != b'\n' {
            break;
        }
        line += 1;
        let n = run_len(t, line, PEM_MAX_LINE + 1, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
        });
        if n == 0 || n > PEM_MAX_LINE || !matches!(byte_at(t, line + n), b'\r' | b'\n' | 0) {
            break;
        }
        end = line + n;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Instant;

    fn scanner() -> &'static PiiScanner {
        static SCANNER: OnceLock<PiiScanner> = OnceLock::new();
        SCANNER.get_or_init(PiiScanner::new)
    }

    /// Asserts that `find` returns exactly `expected`, each given as its kind and its text
    /// (located with `str::find`, so each must be unique in `text`), and that the prefilter
    /// agrees.
    fn assert_finds(text: &str, expected: &[(PiiKind, &str)]) {
        let want: Vec<PiiMatch> = expected
            .iter()
            .map(|&(kind, needle)| {
                let start = text
                    .find(needle)
                    .unwrap_or_else(|| panic!("{needle:?} is not in {text:?}"));
                PiiMatch {
                    kind,
                    start,
                    end: start + needle.len(),
                }
            })
            .collect();
        let got = scanner().find(text);
        let show = |ms: &[PiiMatch]| {
            ms.iter()
                .map(|m| format!("{}:{:?}", m.kind.as_str(), &text[m.start..m.end]))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&got), show(&want), "in {text:?}");
        assert_eq!(got, want, "in {text:?}");
        assert!(
            scanner().may_contain(text.as_bytes()),
            "prefilter missed {text:?}"
        );
    }

    /// Asserts that nothing in `text` is masked.
    fn assert_kept(text: &str) {
        let got = scanner().find(text);
        let shown: Vec<_> = got
            .iter()
            .map(|m| format!("{}:{:?}", m.kind.as_str(), &text[m.start..m.end]))
            .collect();
        assert!(got.is_empty(), "{text:?} should be kept, found {shown:?}");
        let mut counts = [0; 7];
        assert_eq!(scanner().mask(text, &mut counts), None);
        assert_eq!(counts, [0; 7]);
    }

    // -----------------------------------------------------------------------------------------
    // Kinds and API shape
    // -----------------------------------------------------------------------------------------

    #[test]
    fn kinds_are_listed_in_index_order_with_names_and_placeholders() {
        let names: Vec<_> = PiiKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "email",
                "phone",
                "ip_address",
                "credit_card",
                "iban",
                "cn_resident_id",
                "secret"
            ]
        );
        for (i, kind) in PiiKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(
                kind.placeholder(),
                format!("<{}>", kind.as_str().to_uppercase())
            );
        }
    }

    #[test]
    fn scanner_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PiiScanner>();
    }

    #[test]
    fn empty_and_plain_text_find_nothing() {
        assert_kept("");
        assert_kept("The quick brown fox jumps over the lazy dog.");
        assert_kept("Unicode prose: 中文文本，没有个人信息。 Ünïcödé ok.");
    }

    // -----------------------------------------------------------------------------------------
    // Checksum helpers on published examples and one-character changes
    // -----------------------------------------------------------------------------------------

    fn compact(s: &str) -> Vec<u8> {
        s.bytes().filter(|b| !matches!(b, b' ' | b'-')).collect()
    }

    #[test]
    fn luhn_accepts_published_test_cards_and_rejects_changed_digits() {
        for card in [
            "4111 1111 1111 1111",
            "5555 5555 5555 4444",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "3530 1113 3330 0000",
            "2223 0031 2200 3222",
            "3056 9309 0259 04",
            "4222222222222",
        ] {
            let digits = compact(card);
            assert!(luhn_valid(&digits), "{card}");
            assert!(card_issuer_ok(&digits), "{card}");
            for i in 0..digits.len() {
                let mut changed = digits.clone();
                changed[i] = if changed[i] == b'9' {
                    b'0'
                } else {
                    changed[i] + 1
                };
                assert!(!luhn_valid(&changed), "{card} with digit {i} changed");
            }
        }
    }

    #[test]
    fn card_issuers_need_their_prefix_and_length() {
        assert!(card_issuer_ok(b"4111111111111111"));
        assert!(!card_issuer_ok(b"411111111111111")); // Visa has no 15-digit numbers
        assert!(card_issuer_ok(b"378282246310005"));
        assert!(!card_issuer_ok(b"3782822463100050")); // Amex is 15 digits
        assert!(card_issuer_ok(b"2720990000000007"));
        assert!(!card_issuer_ok(b"2721000000000000"));
        assert!(!card_issuer_ok(b"9111111111111110"));
        assert!(!card_issuer_ok(b"1234567890123452"));
    }

    #[test]
    fn iban_checksum_accepts_published_examples_and_rejects_changed_characters() {
        for iban in [
            "GB82 WEST 1234 5698 7654 32",
            "DE89 3704 0044 0532 0130 00",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91 ABNA 0417 1643 00",
            "BE68 5390 0754 7034",
        ] {
            let chars = compact(iban);
            assert!(iban_checksum_ok(&chars), "{iban}");
            let country = [chars[0], chars[1]];
            assert_eq!(iban_length(country), Some(chars.len()), "{iban}");
            for i in 2..chars.len() {
                let mut changed = chars.clone();
                changed[i] = match changed[i] {
                    b'9' => b'0',
                    b'Z' => b'A',
                    c => c + 1,
                };
                assert!(!iban_checksum_ok(&changed), "{iban} with char {i} changed");
            }
        }
        assert_eq!(iban_length(*b"XX"), None);
        assert_eq!(iban_length(*b"US"), None);
    }

    #[test]
    fn cn_resident_id_check_accepts_standard_example_and_rejects_changed_digits() {
        assert!(cn_resident_id_valid(b"11010519491231002X"));
        assert!(cn_resident_id_valid(b"11010519491231002x"));
        assert!(cn_resident_id_valid(b"440308199901011234"));
        let id = b"11010519491231002X";
        for i in 0..17 {
            let mut changed = *id;
            changed[i] = if changed[i] == b'9' {
                b'0'
            } else {
                changed[i] + 1
            };
            assert!(!cn_resident_id_valid(&changed), "digit {i} changed");
        }
        assert!(!cn_resident_id_valid(b"110105194912310021"));
        // Right check character, impossible dates: 30 February, month 13, 1899, 1900-02-29.
        assert!(!cn_resident_id_valid(b"110105194902300020"));
        assert!(!cn_resident_id_valid(b"110105194913310021"));
        assert!(!cn_resident_id_valid(b"110105189912310023"));
        assert!(!cn_resident_id_valid(b"110105190002290025"));
        // Area code starting with 9.
        assert!(!cn_resident_id_valid(b"910105194912310029"));
    }

    #[test]
    fn leap_days_follow_the_gregorian_rules() {
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(2023, 4), 30);
        assert_eq!(days_in_month(2023, 12), 31);
    }

    // -----------------------------------------------------------------------------------------
    // Recall: planted examples of every kind, exact spans
    // -----------------------------------------------------------------------------------------

    use PiiKind::*;

    #[test]
    fn planted_emails_are_found_with_exact_spans() {
        assert_finds(
            "Contact john.smith@example.com for details.",
            &[(Email, "john.smith@example.com")],
        );
        assert_finds(
            "jane_doe+newsletter@mail.example.co.uk",
            &[(Email, "jane_doe+newsletter@mail.example.co.uk")],
        );
        assert_finds(
            "(write to ops%team@corp-mail.org)",
            &[(Email, "ops%team@corp-mail.org")],
        );
        assert_finds("\"X9@domain.io\",", &[(Email, "X9@domain.io")]);
        assert_finds(
            "Email:alice-b@sub.domain.travel.",
            &[(Email, "alice-b@sub.domain.travel")],
        );
        assert_finds("<bob@example.de>", &[(Email, "bob@example.de")]);
        assert_finds(
            "first line\nuser123@host-name.example.museum\nlast",
            &[(Email, "user123@host-name.example.museum")],
        );
        assert_finds(
            "mail UPPER.CASE@EXAMPLE.COM now",
            &[(Email, "UPPER.CASE@EXAMPLE.COM")],
        );
        assert_finds(
            "请联系li.lei@example.cn谢谢",
            &[(Email, "li.lei@example.cn")],
        );
        assert_finds("avatar@2x.example.com", &[(Email, "avatar@2x.example.com")]);
        assert_finds(
            "a@b.co and c@d.org.",
            &[(Email, "a@b.co"), (Email, "c@d.org")],
        );
    }

    #[test]
    fn planted_phone_numbers_are_found_with_exact_spans() {
        assert_finds(
            "Call +1 (555) 123-4567 today.",
            &[(Phone, "+1 (555) 123-4567")],
        );
        assert_finds(
            "London office: +44 20 7946 0958",
            &[(Phone, "+44 20 7946 0958")],
        );
        assert_finds(
            "+86 138 0013 8000 is my number",
            &[(Phone, "+86 138 0013 8000")],
        );
        assert_finds("Berlin (+49 30 901820)", &[(Phone, "+49 30 901820")]);
        assert_finds("Paris: +33 1 23 45 67 89.", &[(Phone, "+33 1 23 45 67 89")]);
        assert_finds(
            "US: (555) 123-4567, or 555-123-4567, or 555.123.4567.",
            &[
                (Phone, "(555) 123-4567"),
                (Phone, "555-123-4567"),
                (Phone, "555.123.4567"),
            ],
        );
        assert_finds("手机13800138000，请回电", &[(Phone, "13800138000")]);
        assert_finds(
            "mobile 138 0013 8000 / 139-1234-5678",
            &[(Phone, "138 0013 8000"), (Phone, "139-1234-5678")],
        );
        assert_finds(
            "+8613800138000 and 0086 13912345678",
            &[(Phone, "+8613800138000"), (Phone, "0086 13912345678")],
        );
        assert_finds(
            "Beijing 010-12345678, Shenzhen 0755-1234567, Shanghai (021) 12345678",
            &[
                (Phone, "010-12345678"),
                (Phone, "0755-1234567"),
                (Phone, "(021) 12345678"),
            ],
        );
        assert_finds("\"1-800-555-1234\"", &[(Phone, "1-800-555-1234")]);
        assert_finds(
            "UK +44 (0) 20 7946 0958.",
            &[(Phone, "+44 (0) 20 7946 0958")],
        );
    }

    #[test]
    fn planted_ip_addresses_are_found_with_exact_spans() {
        assert_finds(
            "Server at 192.168.1.1 responded",
            &[(IpAddress, "192.168.1.1")],
        );
        assert_finds("(10.0.0.1)", &[(IpAddress, "10.0.0.1")]);
        assert_finds("8.8.8.8", &[(IpAddress, "8.8.8.8")]);
        assert_finds("ip=255.255.255.255;", &[(IpAddress, "255.255.255.255")]);
        assert_finds(
            "connect to 172.16.254.1:8080 now",
            &[(IpAddress, "172.16.254.1")],
        );
        assert_finds(
            "route 0.0.0.0/0 via 10.0.0.254.",
            &[(IpAddress, "0.0.0.0"), (IpAddress, "10.0.0.254")],
        );
        assert_finds(
            "v6 2001:db8::8a2e:370:7334.",
            &[(IpAddress, "2001:db8::8a2e:370:7334")],
        );
        assert_finds(
            "link-local fe80::1ff:fe23:4567:890a, mapped ::ffff:192.0.2.1",
            &[
                (IpAddress, "fe80::1ff:fe23:4567:890a"),
                (IpAddress, "::ffff:192.0.2.1"),
            ],
        );
        assert_finds(
            "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443",
            &[(IpAddress, "2001:0db8:85a3:0000:0000:8a2e:0370:7334")],
        );
        assert_finds("gateway fe80::1 is up", &[(IpAddress, "fe80::1")]);
        assert_finds(
            "\"2001:DB8:0:0:8:800:200C:417A\"",
            &[(IpAddress, "2001:DB8:0:0:8:800:200C:417A")],
        );
    }

    #[test]
    fn planted_card_numbers_are_found_with_exact_spans() {
        assert_finds(
            "Visa 4111 1111 1111 1111 on file",
            &[(CreditCard, "4111 1111 1111 1111")],
        );
        assert_finds(
            "4111-1111-1111-1111",
            &[(CreditCard, "4111-1111-1111-1111")],
        );
        assert_finds(
            "card:4111111111111111.",
            &[(CreditCard, "4111111111111111")],
        );
        assert_finds(
            "MC (5555 5555 5555 4444)",
            &[(CreditCard, "5555 5555 5555 4444")],
        );
        assert_finds(
            "Amex 3782 822463 10005",
            &[(CreditCard, "3782 822463 10005")],
        );
        assert_finds(
            "Amex 378282246310005 end",
            &[(CreditCard, "378282246310005")],
        );
        assert_finds(
            "Discover 6011 1111 1111 1117, JCB 3530 1113 3330 0000",
            &[
                (CreditCard, "6011 1111 1111 1117"),
                (CreditCard, "3530 1113 3330 0000"),
            ],
        );
        assert_finds(
            "'2223 0031 2200 3222'",
            &[(CreditCard, "2223 0031 2200 3222")],
        );
        assert_finds(
            "UnionPay 6200 0000 0000 0005",
            &[(CreditCard, "6200 0000 0000 0005")],
        );
        assert_finds(
            "Diners 3056 9309 0259 04",
            &[(CreditCard, "3056 9309 0259 04")],
        );
        assert_finds("Visa-13 4222222222222", &[(CreditCard, "4222222222222")]);
        assert_finds(
            "19-digit 4111111111111111110.",
            &[(CreditCard, "4111111111111111110")],
        );
        assert_finds(
            "4111 1111 1111 1111 12/25 123",
            &[(CreditCard, "4111 1111 1111 1111")],
        );
    }

    #[test]
    fn planted_ibans_are_found_with_exact_spans() {
        assert_finds(
            "Pay to GB82 WEST 1234 5698 7654 32 by Friday",
            &[(Iban, "GB82 WEST 1234 5698 7654 32")],
        );
        assert_finds(
            "IBAN:DE89370400440532013000.",
            &[(Iban, "DE89370400440532013000")],
        );
        assert_finds(
            "(DE89 3704 0044 0532 0130 00)",
            &[(Iban, "DE89 3704 0044 0532 0130 00")],
        );
        assert_finds(
            "FR14 2004 1010 0505 0001 3M02 606",
            &[(Iban, "FR14 2004 1010 0505 0001 3M02 606")],
        );
        assert_finds("NL91ABNA0417164300", &[(Iban, "NL91ABNA0417164300")]);
        assert_finds(
            "Belgium BE68 5390 0754 7034, Norway NO93 8601 1117 947",
            &[(Iban, "BE68 5390 0754 7034"), (Iban, "NO93 8601 1117 947")],
        );
        assert_finds(
            "CH93 0076 2011 6238 5295 7",
            &[(Iban, "CH93 0076 2011 6238 5295 7")],
        );
        assert_finds(
            "\"IT60 X054 2811 1010 0000 0123 456\"",
            &[(Iban, "IT60 X054 2811 1010 0000 0123 456")],
        );
        assert_finds(
            "PL61 1090 1014 0000 0712 1981 2874 EUR",
            &[(Iban, "PL61 1090 1014 0000 0712 1981 2874")],
        );
        assert_finds(
            "acct GB33BUKB20201555555555",
            &[(Iban, "GB33BUKB20201555555555")],
        );
    }

    #[test]
    fn planted_cn_resident_ids_are_found_with_exact_spans() {
        assert_finds(
            "身份证号11010519491231002X。",
            &[(CnResidentId, "11010519491231002X")],
        );
        assert_finds(
            "ID: 11010519491231002x",
            &[(CnResidentId, "11010519491231002x")],
        );
        assert_finds(
            "440308199901011234 registered",
            &[(CnResidentId, "440308199901011234")],
        );
        assert_finds(
            "(310115200002294567)",
            &[(CnResidentId, "310115200002294567")],
        );
        assert_finds(
            "no. 51010719850610789X end",
            &[(CnResidentId, "51010719850610789X")],
        );
        assert_finds(
            "id=650102197001010018",
            &[(CnResidentId, "650102197001010018")],
        );
        assert_finds(
            "'810000200012315673'",
            &[(CnResidentId, "810000200012315673")],
        );
        assert_finds(
            "360102198808088882,",
            &[(CnResidentId, "360102198808088882")],
        );
    }

    /// Deterministic token bodies, so the tests hold no real-looking credentials verbatim.
    fn body(alphabet: &[u8], n: usize, seed: u64) -> String {
        let mut rng = Rng(seed | 1);
        (0..n)
            .map(|_| alphabet[rng.below(alphabet.len())] as char)
            .collect()
    }
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    fn pem_block() -> String {
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n{}=\n-----END RSA PRIVATE KEY-----",
            body(ALNUM, 64, 1),
            body(ALNUM, 64, 2),
            body(ALNUM, 20, 3)
        )
    }

    #[test]
    fn planted_secrets_are_found_with_exact_spans() {
        let tokens = [
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            format!("ASIA{}", body(UPPER_DIGIT, 16, 4)),
            format!("ghp_{}", body(ALNUM, 36, 5)),
            format!("gho_{}", body(ALNUM, 36, 6)),
            format!("github_pat_{}", body(b"abcXYZ019_", 82, 7)),
            format!("sk-{}", body(ALNUM, 48, 8)),
            format!("sk-proj-{}", body(B64URL, 60, 9)),
            format!("sk-svcacct-{}", body(B64URL, 40, 10)),
            format!("sk-ant-api03-{}", body(B64URL, 80, 11)),
            format!("xoxb-123456789012-{}", body(ALNUM, 24, 12)),
            format!("AIza{}", body(B64URL, 35, 13)),
            format!("sk_live_{}", body(ALNUM, 24, 14)),
            format!("rk_live_{}", body(ALNUM, 30, 15)),
            format!("sk_test_{}", body(ALNUM, 24, 16)),
            format!("hf_{}", body(ALNUM, 34, 17)),
            JWT.to_string(),
        ];
        for token in &tokens {
            assert_finds(token, &[(Secret, token)]);
            assert_finds(&format!("export KEY={token}\n"), &[(Secret, token)]);
            assert_finds(&format!("(\"{token}\")."), &[(Secret, token)]);
        }
        let pem = pem_block();
        assert_finds(&format!("key:\n{pem}\nthanks"), &[(Secret, &pem)]);
        let ec = pem.replace("RSA", "EC");
        assert_finds(&ec, &[(Secret, &ec)]);
    }

    #[test]
    fn truncated_pem_block_is_masked_through_its_base64_lines() {
        let body = format!("{}\n{}", body(ALNUM, 64, 21), body(ALNUM, 30, 22));
        let text = format!("-----BEGIN PRIVATE KEY-----\n{body}\n\nprose after");
        let block = format!("-----BEGIN PRIVATE KEY-----\n{body}");
        assert_finds(&text, &[(Secret, &block)]);
    }

    #[test]
    fn pem_footer_must_match_the_header_label() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\nok";
        // No matching footer: header and the base64 line after it.
        assert_finds(text, &[(Secret, "-----BEGIN RSA PRIVATE KEY-----\nAAAA")]);
    }

    // -----------------------------------------------------------------------------------------
    // Masking
    // -----------------------------------------------------------------------------------------

    #[test]
    fn mask_replaces_each_match_with_its_placeholder_and_counts_it() {
        let mut counts = [0; 7];
        let masked = scanner().mask(
            "Mail john@example.com or call +1 (555) 123-4567, from 192.168.0.7.",
            &mut counts,
        );
        assert_eq!(
            masked.as_deref(),
            Some("Mail <EMAIL> or call <PHONE>, from <IP_ADDRESS>.")
        );
        assert_eq!(counts, [1, 1, 1, 0, 0, 0, 0]);

        let masked = scanner().mask(
            "card 4111 1111 1111 1111, iban DE89370400440532013000, id 11010519491231002X, key AKIAIOSFODNN7EXAMPLE, mail a@b.io",
            &mut counts,
        );
        assert_eq!(
            masked.as_deref(),
            Some(
                "card <CREDIT_CARD>, iban <IBAN>, id <CN_RESIDENT_ID>, key <SECRET>, mail <EMAIL>"
            )
        );
        assert_eq!(counts, [2, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn mask_of_text_without_pii_is_none_and_leaves_counts() {
        let mut counts = [3, 0, 0, 0, 0, 0, 9];
        assert_eq!(
            scanner().mask("Released v1.2.3 on 2024-01-15 at 12:30:45.", &mut counts),
            None
        );
        assert_eq!(counts, [3, 0, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn mask_keeps_multibyte_text_around_matches() {
        let mut counts = [0; 7];
        assert_eq!(
            scanner()
                .mask(
                    "电话：13800138000，邮箱：王@例子 or wang@example.cn。",
                    &mut counts
                )
                .as_deref(),
            Some("电话：<PHONE>，邮箱：王@例子 or <EMAIL>。")
        );
    }

    #[test]
    fn overlapping_kinds_keep_the_longer_match() {
        // The IPv4 tail of a mapped IPv6 address is one IP, not two.
        assert_finds("::ffff:10.1.2.3", &[(IpAddress, "::ffff:10.1.2.3")]);
        // The local part after a dot could start a shorter e-mail; the longer one wins.
        assert_finds(
            "x first.last@example.org",
            &[(Email, "first.last@example.org")],
        );
        // A North-American number after a trunk prefix is one number.
        assert_finds("1-555-123-4567", &[(Phone, "1-555-123-4567")]);
        // Digits inside an IBAN are not a card or phone.
        assert_finds(
            "DE89 3704 0044 0532 0130 00",
            &[(Iban, "DE89 3704 0044 0532 0130 00")],
        );
    }

    #[test]
    fn equal_length_overlaps_go_to_the_fixed_priority() {
        let a = PiiMatch {
            kind: Phone,
            start: 0,
            end: 18,
        };
        let b = PiiMatch {
            kind: CnResidentId,
            start: 0,
            end: 18,
        };
        let c = PiiMatch {
            kind: CreditCard,
            start: 0,
            end: 18,
        };
        assert_eq!(resolve_overlaps(vec![a, c, b]), vec![b]);
        assert_eq!(resolve_overlaps(vec![a, c]), vec![c]);
        let long = PiiMatch {
            kind: Phone,
            start: 2,
            end: 30,
        };
        assert_eq!(resolve_overlaps(vec![b, long]), vec![long]);
        let after = PiiMatch {
            kind: Email,
            start: 30,
            end: 40,
        };
        assert_eq!(resolve_overlaps(vec![b, long, after]), vec![long, after]);
    }

    #[test]
    fn pathological_inputs_are_scanned_quickly() {
        let cases: Vec<(&str, String)> = vec![
            (
                "dotted local part",
                format!("{}a@example.com", "a.".repeat(200_000)),
            ),
            (
                "chained addresses",
                format!("a@bb.cc{}", "@bb.cc".repeat(60_000)),
            ),
            ("jwt headers", format!("{}.eyJa.b", "eyJ-".repeat(100_000))),
            ("sk prefixes", "sk-".repeat(130_000)),
            ("colon run", "1:".repeat(200_000)),
            ("digit run", "1".repeat(400_000)),
            ("digit groups", "4111 ".repeat(80_000)),
            ("dotted quads", "1.2.3.4.".repeat(50_000)),
            ("plus signs", "+1 ".repeat(130_000)),
            ("iban heads", "GB82 ".repeat(80_000)),
            (
                "pem headers",
                "-----BEGIN RSA PRIVATE KEY-----\n".repeat(10_000),
            ),
            ("base64", body(B64URL, 400_000, 99)),
        ];
        for (name, text) in &cases {
            let t = Instant::now();
            let found = scanner().find(text).len();
            scanner().may_contain(text.as_bytes());
            let secs = t.elapsed().as_secs_f64();
            // Quadratic work on these ~400 KB inputs takes minutes; the parsers' length caps keep
            // it to milliseconds (the JWT case, 100k candidate starts each reading up to
            // JWT_MAX_HEADER bytes, is the slowest at about 0.1 s in release).
            assert!(secs < 5.0, "{name}: {secs:.2} s ({found} matches)");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Look-alikes that must be kept verbatim, one test each
    // -----------------------------------------------------------------------------------------

    macro_rules! kept_verbatim {
        ($($name:ident: $text:expr,)*) => {
            $(
                #[test]
                fn $name() {
                    assert_kept($text);
                }
            )*
        };
    }

    kept_verbatim! {
        version_v1_2_3_is_kept: "Upgrade to v1.2.3 now.",
        version_2_10_1_is_kept: "pip install requests==2.10.1",
        version_prerelease_is_kept: "release 1.0.0-beta.2 is out",
        version_windows_build_is_kept: "Windows 10.0.19041.1 build",
        version_python_is_kept: "Python 3.11.7 (main, Dec 2023)",
        version_with_v_and_four_parts_is_kept: "driver v1.0.0.1 installed",
        dotted_run_of_five_numbers_is_kept: "section 1.2.3.4.5 says",
        ipv4_with_leading_zero_octet_is_kept: "192.168.01.1",
        ipv4_with_octet_over_255_is_kept: "256.1.1.1 and 1.2.3.999",
        date_iso_is_kept: "on 2024-01-15 we met",
        date_european_is_kept: "15/01/2024",
        date_dotted_is_kept: "2024.01.15",
        time_is_kept: "at 12:30:45 UTC",
        timestamp_iso_is_kept: "2024-01-15T12:30:45Z",
        timestamp_with_offset_is_kept: "2024-01-15T12:30:45+05:30",
        date_compact_is_kept: "20240115",
        date_and_time_is_kept: "1999-12-31 23:59:59",
        unix_seconds_are_kept: "ts 1705312245",
        unix_milliseconds_are_kept: "ts 1705312245123",
        md5_is_kept: "d41d8cd98f00b204e9800998ecf8427e",
        sha1_is_kept: "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        sha256_is_kept: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        git_short_sha_is_kept: "commit 1a2b3c4 fixed it",
        uuid_is_kept: "123e4567-e89b-12d3-a456-426614174000",
        isbn13_hyphenated_is_kept: "ISBN 978-3-16-148410-0",
        isbn13_plain_is_kept: "ISBN 9783161484100",
        isbn10_is_kept: "ISBN 0-306-40615-2",
        card_failing_luhn_is_kept: "4111 1111 1111 1112",
        card_failing_luhn_contiguous_is_kept: "4111111111111112",
        luhn_valid_number_without_issuer_is_kept: "9111111111111110 and 1234567890123452",
        visa_prefix_with_wrong_length_is_kept: "411111111111111 (15 digits)",
        table_of_four_digit_groups_is_kept: "4111 1111 1111 1111 2024",
        cn_id_with_wrong_check_digit_is_kept: "110105194912310021",
        cn_id_with_february_30_is_kept: "110105194902300020",
        cn_id_with_month_13_is_kept: "110105194913310021",
        cn_id_born_1899_is_kept: "110105189912310023",
        cn_id_on_missing_leap_day_is_kept: "110105190002290025",
        cn_id_glued_to_digits_is_kept: "911010519491231002X",
        iban_with_wrong_check_is_kept: "GB82 WEST 1234 5698 7654 33",
        iban_contiguous_with_wrong_check_is_kept: "DE89370400440532013001",
        iban_with_unknown_country_is_kept: "QQ44WEST12345698765432",
        iban_of_a_country_without_ibans_is_kept: "US02WEST12345698765432",
        iban_lowercase_is_kept: "gb82west12345698765432",
        zip_plus_four_is_kept: "Springfield, IL 62704-1234",
        price_is_kept: "$1,234,567.89",
        long_integer_is_kept: "123456789012345678901234",
        decimal_digits_are_kept: "pi = 3.14159265358979323846",
        mac_address_is_kept: "00:1A:2B:3C:4D:5E",
        mac_address_with_dashes_is_kept: "00-1A-2B-3C-4D-5E",
        cpp_scope_is_kept: "std::vector<int> v; std::abs(x); Foo::bar();",
        rust_path_is_kept: "use std::collections::HashMap; a::b::c",
        python_slice_is_kept: "a[1::2] and b[::3]",
        ipv6_loopback_short_is_kept: "::1",
        double_colon_alone_is_kept: "a :: b",
        retina_file_name_is_kept: "name@2x.png and logo@3x.webp",
        mention_is_kept: "thanks @alice and @bob_2",
        localhost_address_is_kept: "user@localhost",
        phone_too_short_is_kept: "+1 555 and +49 30",
        arithmetic_is_kept: "x + 12345 = 67890",
        page_range_is_kept: "pages 100-200 and 555-1234",
        phone_glued_to_more_digits_is_kept: "555-123-4567-8901",
        mobile_shape_inside_longer_number_is_kept: "138001380001",
        order_number_is_kept: "Order #12345678",
        words_with_sk_are_kept: "task-force sk-learn risk-free",
        short_aws_prefix_is_kept: "AKIA1234 is not a key",
        single_jwt_segment_is_kept: "eyJhbGciOiJIUzI1NiJ9 alone",
        certificate_block_is_kept: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        public_key_block_is_kept: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        hex_color_is_kept: "color: #ff00ff;",
        semver_range_is_kept: ">=1.2.3, <2.0.0",
    }

    // -----------------------------------------------------------------------------------------
    // Generated text: realistic filler, valid PII of every kind, JSON escaping
    // -----------------------------------------------------------------------------------------

    /// xorshift64* — deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
        fn digits(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect()
        }
        fn from(&mut self, alphabet: &[u8], n: usize) -> String {
            (0..n)
                .map(|_| char::from(alphabet[self.below(alphabet.len())]))
                .collect()
        }
    }

    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "had",
        "they",
        "you",
        "were",
        "their",
        "one",
        "all",
        "we",
        "can",
        "her",
        "has",
        "there",
        "been",
        "if",
        "more",
        "when",
        "will",
        "would",
        "who",
        "so",
        "no",
        "model",
        "training",
        "data",
        "language",
        "network",
        "system",
        "research",
        "results",
        "people",
        "government",
        "between",
        "important",
        "example",
        "following",
        "however",
        "information",
        "development",
        "process",
        "function",
        "value",
        "number",
        "order",
        "should",
        "because",
        "through",
        "during",
        "without",
        "another",
        "different",
        "small",
        "large",
        "public",
        "report",
        "section",
        "table",
        "figure",
        "version",
        "release",
        "server",
        "client",
        "request",
        "response",
        "update",
        "install",
        "package",
        "library",
        "Paris",
        "London",
        "January",
        "Monday",
        "Python",
        "Rust",
        "Linux",
        "Windows",
        "GitHub",
        "accuracy",
        "loss",
        "epoch",
        "batch",
        "gradient",
        "tokens",
        "dataset",
        "benchmark",
    ];

    /// A token that looks like PII to a careless regex but is not.
    fn lookalike(rng: &mut Rng) -> String {
        // Numbers, dates, times, versions, prices and hashes most of the time; the rarer
        // traps (code, MAC addresses, long digit runs, ISBNs, ...) one time in six.
        let pick = if rng.chance(83) {
            [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 17, 19][rng.below(12)]
        } else {
            [6, 11, 12, 13, 14, 15, 16, 18, 20, 21, 22, 23][rng.below(12)]
        };
        match pick {
            0 => format!(
                "20{}-{:02}-{:02}",
                rng.digits(2),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            1 => format!(
                "{:02}/{:02}/20{}",
                1 + rng.below(28),
                1 + rng.below(12),
                rng.digits(2)
            ),
            2 => format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            3 => format!("v{}.{}.{}", rng.below(10), rng.below(30), rng.below(100)),
            4 => format!("{}.{}.{}", rng.below(4), rng.below(20), rng.below(20)),
            5 => {
                let n = [7, 32, 40, 64][rng.below(4)];
                rng.from(b"0123456789abcdef", n)
            }
            6 => format!(
                "{}-{}-{}-{}-{}",
                rng.from(b"0123456789abcdef", 8),
                rng.from(b"0123456789abcdef", 4),
                rng.from(b"0123456789abcdef", 4),
                rng.from(b"0123456789abcdef", 4),
                rng.from(b"0123456789abcdef", 12)
            ),
            7 => format!(
                "${},{}.{}",
                1 + rng.below(999),
                rng.digits(3),
                rng.digits(2)
            ),
            8 => format!("{}%", rng.below(100)),
            9 => {
                let n = 1 + rng.below(6);
                rng.digits(n)
            }
            10 => {
                let n = 1 + rng.below(4);
                format!("{}.{}", rng.below(1000), rng.digits(n))
            }
            11 => format!(
                "978-{}-{}-{}-{}",
                rng.digits(1),
                rng.digits(2),
                rng.digits(6),
                rng.digits(1)
            ),
            12 => format!("{}-{}", rng.digits(5), rng.digits(4)),
            13 => "std::vector<int>".to_string(),
            14 => format!("@{}", rng.pick(WORDS)),
            15 => format!("icon@{}x.png", 1 + rng.below(3)),
            16 => format!(
                "{}:{}:{}:{}:{}:{}",
                rng.from(b"0123456789ABCDEF", 2),
                rng.from(b"0123456789ABCDEF", 2),
                rng.from(b"0123456789ABCDEF", 2),
                rng.from(b"0123456789ABCDEF", 2),
                rng.from(b"0123456789ABCDEF", 2),
                rng.from(b"0123456789ABCDEF", 2)
            ),
            17 => format!("Python 3.{}.{}", rng.below(13), rng.below(10)),
            18 => format!("10.0.{}.{}", 10000 + rng.below(9000), rng.below(10)),
            19 => format!(
                "20{}{:02}{:02}",
                rng.digits(2),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            20 => {
                let n = 13 + rng.below(12);
                rng.digits(n)
            }
            21 => format!("x[{}::{}]", rng.below(5), 1 + rng.below(5)),
            22 => format!("{}-{}", rng.digits(3), rng.digits(4)),
            _ => format!("({})", rng.digits(3)),
        }
    }

    fn luhn_complete(rng: &mut Rng, prefix: &str, len: usize) -> String {
        let mut s = format!("{prefix}{}", rng.digits(len - prefix.len() - 1));
        for d in b'0'..=b'9' {
            let candidate = format!("{s}{}", d as char);
            if luhn_valid(candidate.as_bytes()) {
                s = candidate;
                break;
            }
        }
        s
    }

    fn group(s: &str, sizes: &[usize], sep: &str) -> String {
        let mut parts = Vec::new();
        let mut i = 0;
        for &n in sizes {
            parts.push(&s[i..i + n]);
            i += n;
        }
        parts.join(sep)
    }

    /// A valid value of one kind, in one of its written forms.
    fn pii(rng: &mut Rng) -> (PiiKind, String) {
        let kind = PiiKind::ALL[rng.below(7)];
        let text = match kind {
            Email => format!(
                "{}{}{}@{}.{}",
                rng.pick(&["john", "a", "li", "maria", "dev", "x9", "sales"]),
                rng.pick(&["", ".", "_", "-", "+"]),
                rng.pick(&["smith", "wang", "ops", "2024", "q"]),
                rng.pick(&["example", "mail.example", "corp-mail", "uni"]),
                rng.pick(&["com", "org", "io", "co.uk", "de", "cn"])
            ),
            Phone => {
                let area = format!("{}{}", 2 + rng.below(8), rng.digits(2));
                match rng.below(12) {
                    0 => format!("+1 ({area}) {}-{}", rng.digits(3), rng.digits(4)),
                    1 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
                    2 => format!(
                        "+86 1{}{} {} {}",
                        3 + rng.below(7),
                        rng.digits(1),
                        rng.digits(4),
                        rng.digits(4)
                    ),
                    3 => format!("+49 30 {}", rng.digits(6)),
                    4 => format!(
                        "+33 1 {} {} {} {}",
                        rng.digits(2),
                        rng.digits(2),
                        rng.digits(2),
                        rng.digits(2)
                    ),
                    5 => format!("({area}) {}-{}", rng.digits(3), rng.digits(4)),
                    6 => format!("{area}-{}-{}", rng.digits(3), rng.digits(4)),
                    7 => format!("{area}.{}.{}", rng.digits(3), rng.digits(4)),
                    8 => format!("1{}{}", 3 + rng.below(7), rng.digits(9)),
                    9 => format!(
                        "1{}{} {} {}",
                        3 + rng.below(7),
                        rng.digits(1),
                        rng.digits(4),
                        rng.digits(4)
                    ),
                    10 => format!("010-{}", rng.digits(8)),
                    _ => format!("(0755) {}", rng.digits(7)),
                }
            }
            IpAddress => {
                if rng.chance(60) {
                    format!(
                        "{}.{}.{}.{}",
                        rng.below(256),
                        rng.below(256),
                        rng.below(256),
                        rng.below(256)
                    )
                } else {
                    let mut g = [0u16; 8];
                    g[0] = 0x2001;
                    g[1] = 0xdb8;
                    for x in g.iter_mut().skip(2) {
                        *x = if rng.chance(30) {
                            0
                        } else {
                            1 + rng.below(0xfffe) as u16
                        };
                    }
                    Ipv6Addr::from(g).to_string()
                }
            }
            CreditCard => {
                let (prefix, len) = *[
                    ("4", 16),
                    ("51", 16),
                    ("55", 16),
                    ("2221", 16),
                    ("34", 15),
                    ("37", 15),
                    ("6011", 16),
                    ("65", 16),
                    ("3530", 16),
                    ("62", 16),
                    ("4", 13),
                ]
                .get(rng.below(11))
                .unwrap();
                let number = luhn_complete(rng, prefix, len);
                match (len, rng.below(3)) {
                    (16, 0) => group(&number, &[4, 4, 4, 4], " "),
                    (16, 1) => group(&number, &[4, 4, 4, 4], "-"),
                    (15, 0) => group(&number, &[4, 6, 5], " "),
                    _ => number,
                }
            }
            Iban => {
                let (country, bban) = match rng.below(4) {
                    0 => ("DE", rng.digits(18)),
                    1 => (
                        "GB",
                        format!(
                            "{}{}",
                            rng.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                            rng.digits(14)
                        ),
                    ),
                    2 => (
                        "NL",
                        format!(
                            "{}{}",
                            rng.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                            rng.digits(10)
                        ),
                    ),
                    _ => ("FR", format!("{}{}", rng.digits(21), rng.digits(2))),
                };
                let mut probe = format!("{country}00{bban}").into_bytes();
                let mut check = 0;
                for c in 2..=98 {
                    probe[2] = b'0' + (c / 10) as u8;
                    probe[3] = b'0' + (c % 10) as u8;
                    if iban_checksum_ok(&probe) {
                        check = c;
                        break;
                    }
                }
                let iban = format!("{country}{check:02}{bban}");
                if rng.chance(50) {
                    let sizes: Vec<usize> = (0..iban.len())
                        .step_by(4)
                        .map(|i| (iban.len() - i).min(4))
                        .collect();
                    group(&iban, &sizes, " ")
                } else {
                    iban
                }
            }
            CnResidentId => {
                let year = 1900 + rng.below(200);
                let month = 1 + rng.below(12);
                let day = 1 + rng.below(days_in_month(year as u32, month as u32) as usize);
                let first17 = format!(
                    "{}{}{year}{month:02}{day:02}{}",
                    1 + rng.below(8),
                    rng.digits(5),
                    rng.digits(3)
                );
                let sum: u32 = first17
                    .bytes()
                    .zip(CN_ID_WEIGHTS)
                    .map(|(d, w)| u32::from(d - b'0') * w)
                    .sum();
                format!(
                    "{first17}{}",
                    CN_ID_CHECK_CHARS[(sum % 11) as usize] as char
                )
            }
            Secret => match rng.below(8) {
                0 => format!("AKIA{}", rng.from(UPPER_DIGIT, 16)),
                1 => format!("ghp_{}", rng.from(ALNUM, 36)),
                2 => format!("sk-{}", rng.from(ALNUM, 48)),
                3 => format!("sk-proj-{}", rng.from(B64URL, 40)),
                4 => format!("xoxb-{}-{}", rng.digits(12), rng.from(ALNUM, 24)),
                5 => format!("hf_{}", rng.from(ALNUM, 34)),
                6 => JWT.to_string(),
                _ => format!("sk_live_{}", rng.from(ALNUM, 24)),
            },
        };
        (kind, text)
    }

    /// One line of English-ish text; with `pii_percent` chance it carries one to three values.
    fn line(rng: &mut Rng, pii_percent: usize) -> String {
        let n = 12 + rng.below(40);
        let mut words: Vec<String> = Vec::with_capacity(n + 4);
        for i in 0..n {
            let mut w = if rng.chance(8) {
                lookalike(rng)
            } else {
                rng.pick(WORDS).to_string()
            };
            if i == 0 {
                w = w[..1].to_uppercase() + &w[1..];
            }
            if rng.chance(6) {
                w.push(*[',', '.', ';', ':'].get(rng.below(4)).unwrap());
            }
            words.push(w);
        }
        if rng.chance(pii_percent) {
            for _ in 0..1 + rng.below(3) {
                let (_, value) = pii(rng);
                let at = rng.below(words.len() + 1);
                let wrapped = match rng.below(5) {
                    0 => format!("({value})"),
                    1 => format!("\"{value}\""),
                    2 => format!("{value},"),
                    _ => value,
                };
                words.insert(at, wrapped);
            }
        }
        let mut out = words.join(" ");
        out.push('.');
        out
    }

    /// Escapes `s` as JSON string content the way different writers do: control characters as
    /// `\n` or `\u00XX`, optionally `\/`, optionally every non-ASCII character as `\uXXXX`.
    fn json_escape(s: &str, rng: &mut Rng) -> String {
        let escape_slash = rng.chance(30);
        let ascii_only = rng.chance(50);
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '/' if escape_slash => out.push_str("\\/"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if ascii_only && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// Reference `find`: every parser at every character boundary, no candidate regex and no
    /// search from each `@`.
    fn find_everywhere(text: &str) -> Vec<PiiMatch> {
        let mut found = Vec::new();
        for s in 0..text.len() {
            if text.is_char_boundary(s) {
                verified_at(text.as_bytes(), s, &mut found);
                if let Some(end) = email_at(text.as_bytes(), s) {
                    found.push(PiiMatch {
                        kind: Email,
                        start: s,
                        end,
                    });
                }
            }
        }
        resolve_overlaps(found)
    }

    /// Text from fragments of PII, look-alikes and separators glued at random: it reaches the
    /// corners of the boundary rules that whole lines rarely do.
    fn nasty(rng: &mut Rng) -> String {
        let mut s = String::new();
        for _ in 0..1 + rng.below(6) {
            let piece = match rng.below(4) {
                0 => pii(rng).1,
                1 => lookalike(rng),
                2 => rng
                    .pick(&[
                        " ", ".", "-", ":", "+", "(", ")", "@", "_", "x", "9", "/", ",", "中",
                        "\n", "::", "0086",
                    ])
                    .to_string(),
                _ => {
                    let n = 1 + rng.below(8);
                    rng.from(b"0123456789 .-:+()@abcdefXx", n)
                }
            };
            if rng.chance(30) && piece.len() > 2 && piece.is_ascii() {
                let a = rng.below(piece.len());
                let b = a + rng.below(piece.len() - a) + 1;
                s.push_str(&piece[a..b]);
            } else {
                s.push_str(&piece);
            }
        }
        s
    }

    #[test]
    fn generated_pii_values_are_found_as_their_kind() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let (kind, value) = pii(&mut rng);
            let text = format!("see {value} here");
            let got = scanner().find(&text);
            assert_eq!(
                got,
                vec![PiiMatch {
                    kind,
                    start: 4,
                    end: 4 + value.len()
                }],
                "{text:?}"
            );
        }
    }

    #[test]
    fn candidate_regex_finds_what_every_position_parsing_finds() {
        let mut rng = Rng(42);
        let mut matches = 0;
        for i in 0..23000 {
            let text = if i < 3000 {
                line(&mut rng, 40)
            } else {
                nasty(&mut rng)
            };
            let found = scanner().find(&text);
            assert_eq!(found, find_everywhere(&text), "{text:?}");
            assert!(
                found.windows(2).all(|w| w[0].end <= w[1].start),
                "overlapping or unordered in {text:?}"
            );
            matches += found.len();
        }
        assert!(
            matches > 5000,
            "only {matches} matches in the generated text"
        );
    }

    #[test]
    fn may_contain_is_true_whenever_find_finds_something() {
        let mut rng = Rng(7);
        let mut checked = 0;
        for i in 0..6000 {
            let text = if i % 2 == 0 {
                line(&mut rng, 40)
            } else {
                nasty(&mut rng)
            };
            let raw = format!(
                "{{\"id\":{i},\"text\":\"{}\"}}",
                json_escape(&text, &mut rng)
            );
            if !scanner().find(&text).is_empty() {
                assert!(scanner().may_contain(raw.as_bytes()), "{raw}");
                checked += 1;
            }
            // Any substring of the content, as a caller might pass one field of several.
            for _ in 0..3 {
                let mut a = rng.below(text.len() + 1);
                let mut b = rng.below(text.len() + 1);
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                while !text.is_char_boundary(a) {
                    a -= 1;
                }
                while !text.is_char_boundary(b) {
                    b += 1;
                }
                if !scanner().find(&text[a..b]).is_empty() {
                    assert!(
                        scanner().may_contain(raw.as_bytes()),
                        "{:?} in {raw}",
                        &text[a..b]
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 3000, "only {checked} lines with PII were checked");
    }

    #[test]
    fn may_contain_sees_pii_hidden_by_ascii_json_escapes() {
        assert!(scanner().may_contain(br#"{"text":"mail bob\u0040example.com"}"#));
        assert!(scanner().may_contain(br#"{"text":"call 555\u002d123-4567"}"#));
        assert!(scanner().may_contain(
            br#"{"t":"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"}"#
        ));
        assert!(scanner().may_contain(br#"{"t":"line\n4111111111111111"}"#));
    }

    #[test]
    fn may_contain_is_false_for_plain_lines_even_with_non_ascii_escapes() {
        assert!(
            !scanner().may_contain(br#"{"text":"Released v1.2.3 on 2024-01-15 at 12:30:45."}"#)
        );
        assert!(!scanner().may_contain(br#"{"text":"\u4e2d\u6587 prose, 3.14 and $1,234.56\n"}"#));
        assert!(!scanner().may_contain(b"thanks @alice, see icon@2x and Foo::new"));
    }

    /// Throughput on ~100 MB of generated text; run with
    /// `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        use rayon::prelude::*;

        let mut rng = Rng(2024);
        let mut lines = Vec::new();
        let mut bytes = 0usize;
        while bytes < 100_000_000 {
            let l = line(&mut rng, 1);
            bytes += l.len();
            lines.push(l);
        }
        let mb = bytes as f64 / 1e6;
        println!(
            "{} lines, {:.1} MB, {:.0} bytes/line",
            lines.len(),
            mb,
            bytes as f64 / lines.len() as f64
        );
        let scanner = PiiScanner::new();

        let t = Instant::now();
        let flagged = lines
            .iter()
            .filter(|l| scanner.may_contain(l.as_bytes()))
            .count();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "(a) may_contain, 1 thread: {:.0} MB/s ({flagged} of {} lines flagged)",
            mb / secs,
            lines.len()
        );

        let t = Instant::now();
        let mut counts = [0u64; 7];
        let mut masked = 0;
        for l in &lines {
            if scanner.mask(l, &mut counts).is_some() {
                masked += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "(b) mask all lines, 1 thread: {:.0} MB/s ({masked} lines masked, counts {counts:?})",
            mb / secs
        );

        let t = Instant::now();
        let mut counts_gated = [0u64; 7];
        for l in &lines {
            if scanner.may_contain(l.as_bytes()) {
                scanner.mask(l, &mut counts_gated);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(counts_gated, counts);
        println!(
            "(b') may_contain then mask, 1 thread: {:.0} MB/s",
            mb / secs
        );

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let t = Instant::now();
        let counts_par = pool.install(|| {
            lines
                .par_iter()
                .map(|l| {
                    let mut c = [0u64; 7];
                    scanner.mask(l, &mut c);
                    c
                })
                .reduce(
                    || [0u64; 7],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x += y;
                        }
                        a
                    },
                )
        });
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(counts_par, counts);
        println!(
            "(c) mask all lines, 2 threads (rayon): {:.0} MB/s",
            mb / secs
        );

        // Harder mixes, 20 MB each: every line carries PII; every token is a look-alike.
        let dense_pii: Vec<String> = (0..100_000).map(|_| line(&mut rng, 100)).collect();
        let dense_traps: Vec<String> = (0..100_000)
            .map(|_| {
                (0..30)
                    .map(|_| lookalike(&mut rng))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        for (name, set) in [
            ("every line with PII", &dense_pii),
            ("all look-alikes", &dense_traps),
        ] {
            let mb = set.iter().map(|l| l.len()).sum::<usize>() as f64 / 1e6;
            let t = Instant::now();
            let mut counts = [0u64; 7];
            for l in set {
                scanner.mask(l, &mut counts);
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "(d) mask, {name}, 1 thread: {:.0} MB/s on {mb:.1} MB ({} replacements)",
                mb / secs,
                counts.iter().sum::<u64>()
            );
        }
    }
}
