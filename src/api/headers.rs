//! Security headers on every answer: no MIME sniffing (a JSONL download must never run as a
//! page), no framing (the dashboard holds an API key: no clickjacking), no referrer leaking ids;
//! and on the dashboard's page a Content Security Policy that lets it load only its own scripts,
//! styles and API, so injected markup cannot run code.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The dashboard's policy: its own files and API only; inline styles stay allowed (the charts
/// size their elements with style attributes); the favicon is a `data:` URL.
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' \
    'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the headers to whatever the routes answered (without replacing one a route set).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let h = res.headers_mut();
    let mut set = |name, value: &'static str| {
        h.entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    if is_html {
        set(header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP);
    }
    res
}
