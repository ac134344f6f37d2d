//! The UTF-8 byte order mark (U+FEFF, bytes `EF BB BF`) that Windows Notepad and some exporters
//! write at the start of a file. It is not part of the first line's JSON, so every reader of a
//! JSONL dataset (upload validation, cleaning, training) skips it at the very start of the file
//! and the file reads as it looks. Anywhere else it is an error that names it.

/// The mark's bytes.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading byte order mark.
#[must_use]
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// `text` without a leading byte order mark.
#[must_use]
pub fn strip_bom_str(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leading_mark_is_stripped() {
        assert_eq!(strip_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(strip_bom(b"{}\xEF\xBB\xBF"), b"{}\xEF\xBB\xBF");
        assert_eq!(strip_bom(b"\xEF\xBB"), b"\xEF\xBB");
        assert_eq!(strip_bom_str("\u{feff}{}"), "{}");
        assert_eq!(strip_bom_str("{}"), "{}");
        assert_eq!("\u{feff}".as_bytes(), UTF8_BOM);
    }
}
