//! The quality filters: measures of an example's text (its length, how much of it repeats, how
//! much of it is symbols) and the first filter an example fails. The repetition measures follow
//! the Gopher rules (Rae et al. 2021, "Scaling Language Models", appendix A): the share of lines
//! that duplicate an earlier line, and the share of characters inside repeated word n-grams.

use std::collections::HashSet;

use super::options::Filters;

/// Default n of the repeated n-gram measure.
pub const DEFAULT_NGRAM: usize = 5;

/// The filter rules, as reports name them.
pub mod rule {
    pub const MIN_CHARS: &str = "min_chars";
    pub const MAX_CHARS: &str = "max_chars";
    pub const REPEATED_LINES: &str = "repeated_lines";
    pub const REPEATED_NGRAMS: &str = "repeated_ngrams";
    pub const NON_ALNUM: &str = "non_alnum";
}

/// Characters (Unicode scalar values) of `text`.
pub fn char_count(text: &str) -> u64 {
    text.chars().count() as u64
}

/// Share of the non-blank lines of `text` that repeat an earlier line (compared trimmed); 0 for
/// fewer than two lines.
pub fn repeated_line_share(text: &str) -> f64 {
    let mut seen = HashSet::new();
    let (mut lines, mut repeated) = (0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        lines += 1;
        if !seen.insert(line) {
            repeated += 1;
        }
    }
    if lines < 2 {
        0.0
    } else {
        repeated as f64 / lines as f64
    }
}

/// Share of the characters of the words of `text` (split at whitespace) that lie inside a word
/// n-gram occurring more than once in it; 0 when it has fewer than `n` words.
pub fn repeated_ngram_share(text: &str, n: usize) -> f64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    if n == 0 || words.len() < n {
        return 0.0;
    }
    let mut counts: std::collections::HashMap<&[&str], u32> = Default::default();
    for g in words.windows(n) {
        *counts.entry(g).or_default() += 1;
    }
    let mut covered = vec![false; words.len()];
    for (i, g) in words.windows(n).enumerate() {
        if counts[g] > 1 {
            covered[i..i + n].iter_mut().for_each(|c| *c = true);
        }
    }
    let chars = |w: &&str| w.chars().count();
    let total: usize = words.iter().map(chars).sum();
    let inside: usize = words
        .iter()
        .zip(&covered)
        .filter(|(_, c)| **c)
        .map(|(w, _)| chars(w))
        .sum();
    if total == 0 {
        0.0
    } else {
        inside as f64 / total as f64
    }
}

/// Share of the non-whitespace characters of `text` that are neither letters nor digits; 0 for
/// a text of whitespace only.
pub fn non_alnum_share(text: &str) -> f64 {
    let (mut all, mut other) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        all += 1;
        if !c.is_alphanumeric() {
            other += 1;
        }
    }
    if all == 0 {
        0.0
    } else {
        other as f64 / all as f64
    }
}

/// The first filter of `filters` that `text` fails, with what it measured; `None` when it
/// passes them all (the language filter is applied apart, see `super::language`).
pub fn first_failed(filters: &Filters, text: &str) -> Option<(&'static str, String)> {
    if filters.min_chars.is_some() || filters.max_chars.is_some() {
        let n = char_count(text);
        if let Some(min) = filters.min_chars
            && n < min
        {
            return Some((rule::MIN_CHARS, format!("{n} characters, fewer than {min}")));
        }
        if let Some(max) = filters.max_chars
            && n > max
        {
            return Some((rule::MAX_CHARS, format!("{n} characters, more than {max}")));
        }
    }
    if let Some(max) = filters.max_repeated_line_share {
        let s = repeated_line_share(text);
        if s > max {
            return Some((
                rule::REPEATED_LINES,
                format!(
                    "{:.0}% of its lines repeat, more than {:.0}%",
                    s * 100.0,
                    max * 100.0
                ),
            ));
        }
    }
    if let Some(max) = filters.max_repeated_ngram_share {
        let n = filters.repeated_ngram_size.unwrap_or(DEFAULT_NGRAM);
        let s = repeated_ngram_share(text, n);
        if s > max {
            return Some((
                rule::REPEATED_NGRAMS,
                format!(
                    "{:.0}% of its characters are in repeated {n}-grams, more than {:.0}%",
                    s * 100.0,
                    max * 100.0
                ),
            ));
        }
    }
    if let Some(max) = filters.max_non_alnum_share {
        let s = non_alnum_share(text);
        if s > max {
            return Some((
                rule::NON_ALNUM,
                format!(
                    "{:.0}% of its characters are not letters or digits, more than {:.0}%",
                    s * 100.0,
                    max * 100.0
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_hand_computed() {
        assert_eq!(char_count("héllo 日本"), 8);
        // 5 non-blank lines, "a" twice more and "b" once more: 3 of 5 repeat.
        assert_eq!(repeated_line_share("a\nb\n\na\n a \nb"), 3.0 / 5.0);
        assert_eq!(repeated_line_share("one line"), 0.0);
        // Words x y z x y, bigrams: xy yz zx xy → "x y" twice covers words 0,1,3,4 (4 of 5
        // chars, every word one character).
        assert_eq!(repeated_ngram_share("x y z x y", 2), 4.0 / 5.0);
        // Characters, not words: "aaaa b aaaa b c": bigram "aaaa b" twice covers 10 of 11.
        assert_eq!(repeated_ngram_share("aaaa b aaaa b c", 2), 10.0 / 11.0);
        assert_eq!(repeated_ngram_share("too few", 5), 0.0);
        // "a1 !!" : a, 1, !, ! → 2 of 4 are not alphanumeric.
        assert_eq!(non_alnum_share("a1 !!"), 0.5);
        assert_eq!(non_alnum_share("   "), 0.0);
    }

    #[test]
    fn each_filter_on_hand_made_lines() {
        let f = |json: &str| serde_json::from_str::<Filters>(json).unwrap();
        let rule_of = |filters: &Filters, text: &str| first_failed(filters, text).map(|(r, _)| r);
        let len = f(r#"{"min_chars": 5, "max_chars": 10}"#);
        assert_eq!(rule_of(&len, "abcd"), Some(rule::MIN_CHARS));
        assert_eq!(rule_of(&len, "abcde"), None);
        assert_eq!(rule_of(&len, "abcdefghij"), None);
        assert_eq!(rule_of(&len, "abcdefghijk"), Some(rule::MAX_CHARS));
        let lines = f(r#"{"max_repeated_line_share": 0.3}"#);
        assert_eq!(
            rule_of(&lines, "buy now\nbuy now\nbuy now\nok"),
            Some(rule::REPEATED_LINES)
        );
        assert_eq!(rule_of(&lines, "one\ntwo\nthree\none"), None); // 25%
        let grams = f(r#"{"max_repeated_ngram_share": 0.2, "repeated_ngram_size": 3}"#);
        assert_eq!(
            rule_of(
                &grams,
                "click here now click here now click here now please"
            ),
            Some(rule::REPEATED_NGRAMS)
        );
        assert_eq!(
            rule_of(&grams, "the quick brown fox jumps over the lazy dog"),
            None
        );
        let symbols = f(r#"{"max_non_alnum_share": 0.3}"#);
        assert_eq!(rule_of(&symbols, "$$$ !!! ### ok"), Some(rule::NON_ALNUM));
        assert_eq!(rule_of(&symbols, "Hello, world."), None);
        let (_, why) = first_failed(&len, "abc").unwrap();
        assert_eq!(why, "3 characters, fewer than 5");
    }
}
