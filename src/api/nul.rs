//! NUL characters are refused where a request enters: Postgres text cannot hold one (`invalid byte
//! sequence for encoding "UTF8": 0x00`), so an id, cursor, model name or metadata value carrying
//! one would otherwise reach the database and fail there as a 500. SQLite would store it; the
//! answer is the same 400 on both stores. Multipart fields and uploaded files are checked where
//! they are read (their own validation names the field or line).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;

/// Refuses a request whose path or query string has a NUL (`%00`; a raw NUL cannot be sent in a
/// request line), naming the query parameter that holds it.
pub async fn refuse_nul_in_uri(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if has_encoded_nul(uri.path()) {
        return ApiError::bad_request(
            "invalid_request_error",
            "the request path contains a NUL character (%00)",
            None,
        )
        .into_response();
    }
    if let Some(pair) = uri
        .query()
        .and_then(|q| q.split('&').find(|pair| has_encoded_nul(pair)))
    {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        return ApiError::invalid_param(
            name,
            format!("query parameter {name:?} contains a NUL character (%00)"),
        )
        .into_response();
    }
    next.run(req).await
}

fn has_encoded_nul(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| w == b"%00")
}

/// The path (`metadata.note`, `messages[2].content`) of the first string, or object key, in
/// `value` that contains a NUL character.
pub fn nul_path(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

/// Whether a JSON text may hold a NUL: the escape `\u0000` (a raw NUL byte is not valid JSON).
/// A cheap test before [`nul_path`] parses the body again.
pub fn may_hold_nul(json: &[u8]) -> bool {
    json.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_string_that_holds_a_nul() {
        let v: Value = serde_json::from_str(
            r#"{"model": "m", "messages": [{"role": "user", "content": "ok"},
                {"role": "user", "content": "a\u0000b"}], "metadata": {"k": "v"}}"#,
        )
        .unwrap();
        assert_eq!(nul_path(&v).as_deref(), Some("messages[1].content"));
        let v: Value = serde_json::from_str(r#"{"metadata": {"a\u0000": "v"}}"#).unwrap();
        assert_eq!(nul_path(&v).as_deref(), Some("metadata.a\\u0000"));
        let v: Value = serde_json::from_str(r#"["x", {"y": ["\u0000"]}]"#).unwrap();
        assert_eq!(nul_path(&v).as_deref(), Some("[1].y[0]"));
        let v: Value = serde_json::from_str(r#"{"a": "\\u0000 is only text"}"#).unwrap();
        assert!(may_hold_nul(br#"{"a": "\\u0000 is only text"}"#) && nul_path(&v).is_none());
        assert!(!may_hold_nul(br#"{"a": "\u0001"}"#));
    }

    #[test]
    fn only_an_encoded_nul_counts_in_the_uri() {
        assert!(has_encoded_nul("/v1/files/file-%00x"));
        assert!(!has_encoded_nul("/v1/files/file-%20%0a"));
    }
}
