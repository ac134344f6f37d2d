//! Reproduces Python's `json.dumps(.., ensure_ascii=False)` (with `sort_keys=True` where asked)
//! byte for byte, written while serde_json parses a line, so that duplicate detection matches
//! Hugging Face `datasets`' dedup, which hashes the md5 of each row's canonical JSON.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::ctx::Ctx;

/// What a transcoded value was, enough to validate a field without keeping a tree.
pub(super) enum Leaf<'de> {
    Null,
    Bool,
    Num(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Leaf<'_> {
    pub(super) fn kind(&self) -> &'static str {
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
/// Caveats, all about numbers that datasets rarely hold: serde_json's default float parser
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
pub(super) struct KeySeed<'c> {
    pub(super) out: Option<&'c mut Vec<u8>>,
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
pub(super) struct Py<'c> {
    pub(super) ctx: &'c mut Ctx,
    pub(super) sort: bool,
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
pub(super) fn transcode_map<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx,
    map: A,
    sort: bool,
    watch: &mut [(&'static str, Option<Leaf<'de>>)],
) -> Result<(), A::Error> {
    transcode_map_with(ctx, map, sort, |ctx, key, map| {
        watched_value(ctx, key, map, sort, watch)
    })
}

/// Writes the value of `key` with [`Py`], for a `value` closure of [`transcode_map_with`]: into
/// its slot of `watch` when the key is watched (a watched key seen twice is a duplicate, found
/// here), and returns whether it is not (those are compared when the object ends).
pub(super) fn watched_value<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx,
    key: &str,
    map: &mut A,
    sort: bool,
    watch: &mut [(&'static str, Option<Leaf<'de>>)],
) -> Result<bool, A::Error> {
    let slot = watch_slot(watch, key).map_err(A::Error::custom)?;
    let leaf = map.next_value_seed(Py { ctx, sort })?;
    if let Some(i) = slot {
        watch[i].1 = Some(leaf);
    }
    Ok(slot.is_none())
}

/// Writes an object in Python's form like [`transcode_map`], but `value` reads each value
/// (after its key and `": "` are written): it must call `map.next_value_seed` with a seed
/// that writes the value into `ctx.out` (e.g. [`Py`]), and returns whether the key is one it
/// does not check for duplicates itself. Those are compared when the object ends, when more
/// than one (unsorted objects; sorted ones compare all keys while sorting).
pub(super) fn transcode_map_with<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx,
    mut map: A,
    sort: bool,
    mut value: impl FnMut(&mut Ctx, &str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    let body = ctx.out.len() + 1;
    ctx.out.push(b'{');
    let base = ctx.entries.len();
    // Decoded keys, only needed to sort like Python (escaped forms do not sort the same).
    let mut names: Vec<Cow<'de, str>> = Vec::new();
    // Keys `value` leaves to the end-of-object comparison.
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
        if value(&mut *ctx, &key, &mut map)? {
            unwatched += 1;
        }
        ctx.entries.push((key_start, key_end, ctx.out.len()));
        if sort {
            names.push(key);
        }
    }
    finish_map(ctx, base, body, &names, sort, unwatched).map_err(A::Error::custom)
}

/// Which watched key `key` is; a watched key seen twice is a duplicate.
fn watch_slot(watch: &[(&'static str, Option<Leaf>)], key: &str) -> Result<Option<usize>, String> {
    match watch.iter().position(|(name, _)| *name == key) {
        Some(i) if watch[i].1.is_some() => Err(format!("duplicate key {key:?}")),
        found => Ok(found),
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

#[cfg(test)]
mod tests {
    use md5::{Digest as _, Md5};

    use super::*;
    use crate::datasets::validate::line::Checker;
    use crate::datasets::validate::{Purpose, check_piece};

    /// The canonical string and md5 of one line, as hashed for duplicates.
    fn canonical(purpose: Purpose, line: &str) -> (String, String) {
        let mut c = Checker::new(purpose, None, 0, usize::MAX);
        c.line(line.as_bytes());
        assert!(
            c.res.errors.is_empty(),
            "{line}: {}",
            c.res.errors[0].message
        );
        let s = String::from_utf8(c.ctx.out.clone()).unwrap();
        (s, hex::encode(c.res.digests[0].0))
    }

    /// The expected digests were computed once with python3 (stdlib json + hashlib, the same
    /// calls as Hugging Face `datasets`' dedup: md5 of the `json.dumps` of each row) and pasted
    /// here:
    ///   chat:     hashlib.md5(json.dumps(json.loads(line)["messages"],
    ///                                    ensure_ascii=False).encode()).hexdigest()
    ///   pretrain: hashlib.md5(json.dumps(json.loads(line), ensure_ascii=False,
    ///                                    sort_keys=True).encode()).hexdigest()
    ///   preference: row = json.loads(line)
    ///             key = {k: row[k] for k in ("input", "preferred_output", "non_preferred_output")}
    ///             hashlib.md5(json.dumps(key, ensure_ascii=False, sort_keys=True).encode())
    ///                 .hexdigest()
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
                r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2}"}, "z": [1, -2, 3.5, 1e16, 1e15, 0.0001, 1e-05, 1.5e-07, 123456789.125, -0.0, 1E2, true, false, null, {}, []]}]}, {"role": "tool", "tool_call_id": "c1", "content": "4"}, {"role": "assistant", "content": "4"}]}"#,
                "2babb652c9f497255c83b32e072ec379",
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
        let preference_cases: [(&str, &str); 2] = [
            (
                r#"{"input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "café naïve 日本語 😀 \"q\" \\ \u0001"}], "tools": [{"type": "function", "function": {"name": "add", "parameters": {"b": 1, "a": [1.5, null, 1e16, -0.0]}}}], "parallel_tool_calls": false}, "preferred_output": [{"role": "assistant", "content": "ok\n\u00e9\ud83d\ude00"}], "non_preferred_output": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2}"}}]}], "meta": {"z": 1}}"#,
                "808f0d1d33927aa497a4e300a5733203",
            ),
            (
                r#"  {"non_preferred_output":[{"content":"no","role":"assistant"}],"id":3,"preferred_output":[{"content":"yes","role":"assistant"}],"input":{"parallel_tool_calls":true,"messages":[{"content":"hi","role":"user","name":"bob"}],"A":1,"é":2,"e":3}}  "#,
                "2366dd3299ef7b05ab2aa79ef40b7483",
            ),
        ];
        let mut bad = Vec::new();
        for (purpose, cases) in [
            (Purpose::FineTune, &chat_cases[..]),
            (Purpose::Pretrain, &pretrain_cases[..]),
            (Purpose::FineTune, &preference_cases[..]),
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
    /// `WICK_VALIDATE_CORPUS=file.jsonl cargo test --release -- --ignored --nocapture` prints
    /// the md5 of the concatenated per-line digests of a real file (chat, or pretraining if
    /// the file name says `pretrain`), to compare with Python's:
    ///   a = hashlib.md5()
    ///   for line in open(path, encoding="utf-8"):
    ///       a.update(hashlib.md5(json.dumps(json.loads(line)["messages"],
    ///                                       ensure_ascii=False).encode()).digest())
    ///   print(a.hexdigest())
    /// (all lines valid). On the generated 200,000-row chat file that `benches/upload.rs`
    /// measures (`chat_200k.jsonl`) both give 62035cafafb3dd8281156d6dd49799ca.
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
        let res = check_piece(&data, purpose, None, usize::MAX);
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
