//! The dashboard: the files under `web/`, embedded in the binary so one binary is the whole
//! product. (In debug builds rust-embed reads them from disk, so editing a page needs no rebuild.)

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Embed)]
#[folder = "web/"]
struct Assets;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    match Assets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_string();
            // Pages change with the binary; vendored libraries could be cached longer, but one
            // short policy keeps a fresh deploy from showing stale code.
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                ],
                file.data,
            )
                .into_response()
        }
        None => ApiError::Client {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no dashboard file {path:?}"),
            param: None,
        }
        .into_response(),
    }
}
