//! A query-string extractor whose rejections are [`ApiError`]s in our JSON shape, with the
//! offending parameter named.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::extract::Query`, but a bad query answers `{"error": {...}}` with a 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => {
                let text = e.body_text();
                let param = param_of(&text);
                Err(ApiError::Client {
                    status: axum::http::StatusCode::BAD_REQUEST,
                    code: "invalid_request_error",
                    message: text,
                    param,
                })
            }
        }
    }
}

/// The parameter a rejection is about. axum writes `...query string: limit: invalid digit...`
/// for a bad value and ``...missing field `after` `` for an absent one.
fn param_of(text: &str) -> Option<String> {
    let detail = text
        .split_once("query string: ")
        .map(|(_, d)| d)
        .unwrap_or(text);
    if let Some((field, _)) = detail.split_once(": ")
        && !field.is_empty()
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some(field.to_string());
    }
    detail.split('`').nth(1).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::param_of;

    #[test]
    fn names_the_parameter() {
        let bad = "Failed to deserialize query string: limit: invalid digit found in string";
        assert_eq!(param_of(bad).as_deref(), Some("limit"));
        let missing = "Failed to deserialize query string: missing field `after`";
        assert_eq!(param_of(missing).as_deref(), Some("after"));
    }
}
