//! Bearer-key authentication: every `/v1` route takes an [`Auth`] extractor, which resolves the
//! key to its organization or answers 401, then takes the request from the key's rate bucket
//! ([`crate::tenants`]) or answers 429 with `Retry-After`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::keys::{Caller, find_caller};
use crate::tenants::AdmitError;

/// The authenticated caller of a request.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send 'Authorization: Bearer <key>'",
            )
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <key>'")
            })?;
        match find_caller(&state.db, key).await? {
            Some(caller) => {
                tracing::Span::current().record("org", caller.org_id.as_str());
                match state
                    .tenants
                    .admit(&state.db, &caller.org_id, &caller.key_id)
                    .await
                {
                    Ok(()) => Ok(Auth(caller)),
                    Err(AdmitError::Limited(retry_after)) => {
                        Err(ApiError::RateLimited { retry_after })
                    }
                    Err(AdmitError::Store(e)) => Err(e.into()),
                }
            }
            None => Err(ApiError::unauthorized("incorrect API key provided")),
        }
    }
}
