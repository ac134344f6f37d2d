//! Cursor pagination as OpenAI does it: `?after=<id>&limit=N`, answered with
//! `{"object": "list", "data": [...], "has_more": bool}`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub after: Option<String>,
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The limit asked for, checked against `1..=max`, or `default`.
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid_param(
                "limit",
                format!("limit must be between 1 and {max}, got {n}"),
            )),
        }
    }
}

/// Builds a list page from rows fetched with `limit + 1`, so `has_more` needs no second query.
pub fn page<T>(mut rows: Vec<T>, limit: i64, to_json: impl Fn(&T) -> Value) -> Value {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<Value> = rows.iter().map(to_json).collect();
    let first_id = data.first().and_then(|d| d.get("id")).cloned();
    let last_id = data.last().and_then(|d| d.get("id")).cloned();
    json!({"object": "list", "data": data, "has_more": has_more, "first_id": first_id, "last_id": last_id})
}
