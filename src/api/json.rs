//! A JSON body extractor whose errors name the offending field: serde's message plus the path
//! to the field (`method.supervised.hyperparameters.n_epochs`) as the error's `param`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but rejections are [`ApiError`]s in our shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            // Keep the rejection's status: a body over the limit is a 413, not a 400.
            let status = e.status();
            ApiError::Client {
                status,
                code: if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    "request_too_large"
                } else {
                    "invalid_request_error"
                },
                message: e.body_text(),
                param: None,
            }
        })?;
        // Postgres text cannot hold a NUL: refused here, naming the field, on every store.
        if super::nul::may_hold_nul(&bytes)
            && let Some(param) = serde_json::from_slice(&bytes)
                .ok()
                .and_then(|v| super::nul::nul_path(&v))
        {
            return Err(ApiError::invalid_param(
                param.clone(),
                format!("{param} contains a NUL character (\\u0000)"),
            ));
        }
        // Every body is an object; serde would otherwise read a struct from an array of its
        // fields' values in order (`[null, null]`), which no client means.
        if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
            && *first != b'{'
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::Client {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "invalid_request_error",
                message: "invalid request body: expected a JSON object".into(),
                param: None,
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(ApiJson(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let param = field_path(&path, &inner.to_string());
                let code = if inner.is_syntax() || inner.is_eof() {
                    "invalid_json"
                } else {
                    "invalid_request_error"
                };
                Err(ApiError::Client {
                    status: axum::http::StatusCode::BAD_REQUEST,
                    code,
                    message: format!("invalid request body: {inner}"),
                    param,
                })
            }
        }
    }
}

/// The dotted path of the field an error is about. serde reports a missing field at its parent's
/// path, naming the field only in the message, so that name is appended.
fn field_path(path: &str, message: &str) -> Option<String> {
    let parent = (path != ".").then_some(path);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (parent, missing) {
        (Some(p), Some(m)) => Some(format!("{p}.{m}")),
        (None, Some(m)) => Some(m.to_string()),
        (p, None) => p.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::field_path;

    #[test]
    fn missing_fields_are_named_under_their_parent() {
        assert_eq!(
            field_path(".", "missing field `model` at line 1 column 5").as_deref(),
            Some("model")
        );
        assert_eq!(
            field_path("method", "missing field `type`").as_deref(),
            Some("method.type")
        );
        assert_eq!(
            field_path("seed", "invalid type: string").as_deref(),
            Some("seed")
        );
        assert_eq!(field_path(".", "expected value").as_deref(), None);
    }
}
