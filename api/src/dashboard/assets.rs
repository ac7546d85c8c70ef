//! The dashboard's static files, compiled into the binary: the stylesheet and the one script
//! (live updates, confirmations, keyboard shortcuts), served under `/admin/static/` with a
//! version in their URLs so browsers may cache them for a long time.

use std::sync::OnceLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

/// The stylesheet.
pub const CSS: &str = include_str!("static/dashboard.css");
/// The script (live updates, confirmations, keyboard shortcuts); the pages work without it.
pub const JS: &str = include_str!("static/dashboard.js");

/// A short hash of the static files, appended to their URLs so browsers may cache them for a
/// long time and still fetch a new version after a deploy.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new().chain_update(CSS).chain_update(JS).finalize();
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    })
}

/// A static file, cacheable for a year (its URL changes with its content).
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin/static/dashboard.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /admin/static/dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
