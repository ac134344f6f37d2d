//! The one error type that crosses HTTP.
//!
//! Client mistakes become a 4xx with `{"error": {"code", "message", "param"}}` saying exactly what
//! was wrong; anything else becomes an opaque 500 whose detail is logged, never sent.

use std::time::Duration;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// A client mistake: status, machine-readable code, human message, offending field.
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The caller's key made requests faster than its organization's limit: 429
    /// `rate_limit_exceeded` with `Retry-After` (whole seconds, at least 1).
    RateLimited { retry_after: Duration },
    /// Our fault. The detail is logged; the client sees only that something failed.
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Self {
        ApiError::Client {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// 400 for a field that failed validation.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_error",
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::Client {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no {what} with id {id:?}"),
            param: Some("id".into()),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client {
            status: StatusCode::CONFLICT,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Client {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_api_key",
            message: message.into(),
            param: None,
        }
    }

    pub fn too_large(limit: u64) -> Self {
        ApiError::Client {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "file_too_large",
            message: format!("the upload exceeds the limit of {limit} bytes"),
            param: Some("file".into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client {
                status,
                code,
                message,
                param,
            } => {
                let body = json!({"error": {"code": code, "message": message, "param": param}});
                (status, Json(body)).into_response()
            }
            ApiError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let body = json!({"error": {
                    "code": "rate_limit_exceeded",
                    "message": format!("this key is over its organization's request rate; retry in {secs} s"),
                    "param": null}});
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, secs.to_string())],
                    Json(body),
                )
                    .into_response()
            }
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                let body = json!({"error": {
                    "code": "internal_error",
                    "message": "the server failed to handle this request; it has been logged",
                    "param": null}});
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Unique violations are the client's (a duplicate name, say), not ours.
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return ApiError::conflict(
                "already_exists",
                "an object with that identity already exists",
            );
        }
        ApiError::Internal(e.into())
    }
}

/// A model id a request named that cannot be used: a 400 on `model`.
impl From<crate::catalog::ResolveError> for ApiError {
    fn from(e: crate::catalog::ResolveError) -> Self {
        match e {
            crate::catalog::ResolveError::Store(e) => e.into(),
            other => ApiError::invalid_param("model", other.to_string()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

/// A blob store failure: a full local disk is 507 `insufficient_storage`, any other failure of
/// the store (an S3 server down or refusing, a network error) 503 `storage_unavailable`; both are
/// logged with their cause, and the caller has already removed what it had written. A missing
/// object the store of record names stays a 500: that is our inconsistency, not the store's.
impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        if matches!(e, object_store::Error::NotFound { .. }) {
            return ApiError::Internal(e.into());
        }
        tracing::error!(error = %e, "blob store failure");
        if crate::blob::is_storage_full(&e) {
            ApiError::Client {
                status: StatusCode::INSUFFICIENT_STORAGE,
                code: "insufficient_storage",
                message: "the server's storage is full; nothing was kept. Try again later".into(),
                param: None,
            }
        } else {
            ApiError::Client {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "storage_unavailable",
                message:
                    "the blob store did not complete the request; nothing was kept. Try again later"
                        .into(),
                param: None,
            }
        }
    }
}

/// Answers requests for unknown routes in our error shape rather than axum's empty 404.
pub async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::Client {
        status: StatusCode::NOT_FOUND,
        code: "unknown_route",
        message: format!("no route for {}", uri.path()),
        param: None,
    }
}

/// The [`ApiError`] for an error answer that our handlers did not write: axum's empty 405 for a
/// known path asked with another method, tower-http's empty 408 for a request that outlived
/// `timeout`, a plain-text rejection from one of axum's own extractors. `body` is the text the
/// framework answered (often none); it becomes the message, except for 5xx, whose detail is
/// never sent.
pub fn framework_error(
    status: StatusCode,
    method: &Method,
    path: &str,
    body: &str,
    timeout: Duration,
) -> ApiError {
    let (code, default_message) = match status {
        StatusCode::NOT_FOUND => ("unknown_route", format!("no route for {path}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "{method} is not allowed on {path}; the Allow header lists the methods that are"
            ),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            format!(
                "the request did not complete within the server's limit of {} s",
                timeout.as_secs()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("request_too_large", "the request body is too large".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request's Content-Type is not accepted here".into(),
        ),
        s if s.is_server_error() => {
            // Keep the status (a 503 stays a 503) but, as for `Internal`, log the detail only.
            tracing::error!(%method, path, status = %s, body, "error answered outside our handlers");
            return ApiError::Client {
                status: s,
                code: "internal_error",
                message: "the server failed to handle this request; it has been logged".into(),
                param: None,
            };
        }
        s => (
            "invalid_request_error",
            s.canonical_reason()
                .unwrap_or("invalid request")
                .to_string(),
        ),
    };
    let message = if body.is_empty() {
        default_message
    } else {
        body.to_string()
    };
    ApiError::Client {
        status,
        code,
        message,
        param: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_507_for_a_full_disk_503_otherwise_500_for_a_missing_object() {
        let io = |kind| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::new(kind, "write failed")),
        };
        let status = |e: object_store::Error| ApiError::from(e).status();
        assert_eq!(
            status(io(std::io::ErrorKind::StorageFull)),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status(io(std::io::ErrorKind::QuotaExceeded)),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status(io(std::io::ErrorKind::ConnectionRefused)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let missing = object_store::Error::NotFound {
            path: "files/x".into(),
            source: "gone".into(),
        };
        assert_eq!(status(missing), StatusCode::INTERNAL_SERVER_ERROR);
    }

    fn shape(status: StatusCode, body: &str) -> (StatusCode, &'static str, String) {
        let e = framework_error(
            status,
            &Method::POST,
            "/v1/models",
            body,
            Duration::from_secs(7),
        );
        match e {
            ApiError::Client {
                status,
                code,
                message,
                param: None,
            } => (status, code, message),
            other => panic!("not a client error: {other:?}"),
        }
    }

    #[test]
    fn empty_framework_errors_get_a_code_and_a_message() {
        let (s, code, msg) = shape(StatusCode::REQUEST_TIMEOUT, "");
        assert_eq!((s, code), (StatusCode::REQUEST_TIMEOUT, "request_timeout"));
        assert!(msg.contains("7 s"), "{msg}");
        let (s, code, msg) = shape(StatusCode::METHOD_NOT_ALLOWED, "");
        assert_eq!(
            (s, code),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
        assert!(
            msg.starts_with("POST is not allowed on /v1/models"),
            "{msg}"
        );
    }

    #[test]
    fn plain_text_rejections_keep_their_text() {
        let text = "Invalid URL: Cannot parse `\"\\xFF\"` to a `String`";
        assert_eq!(
            shape(StatusCode::BAD_REQUEST, text),
            (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                text.to_string()
            )
        );
    }

    #[test]
    fn server_errors_keep_their_detail_to_the_log() {
        let e = framework_error(
            StatusCode::BAD_GATEWAY,
            &Method::GET,
            "/x",
            "secret detail",
            Duration::from_secs(1),
        );
        let ApiError::Client {
            status, message, ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(!message.contains("secret"), "{message}");
    }
}
