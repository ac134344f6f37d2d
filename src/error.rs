//! The one error type that crosses HTTP.
//!
//! Client mistakes become a 4xx with `{"error": {"code", "message", "param"}}` saying exactly what
//! was wrong; anything else becomes an opaque 500 whose detail is logged, never sent.

use axum::Json;
use axum::http::StatusCode;
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

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        ApiError::Internal(e.into())
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
