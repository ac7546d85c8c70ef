//! # orderly-api
//!
//! The HTTP face of Orderly: REST under `/api/v1`, organised by domain (`users`, `products`,
//! `orders`, `webhooks`), each a folder with `routes.rs` (handlers: HTTP only, one service call
//! each) and `dto.rs` (validated request and response shapes, documented with utoipa).
//!
//! - [`app`]: router assembly, middleware stack, OpenAPI document, serving with graceful shutdown.
//! - [`state`]: the one `AppState`.
//! - [`extract`], [`auth`], [`idempotency`]: extractors (our error shape on rejection, bearer
//!   tokens, `Idempotency-Key`).
//! - [`middleware`]: request id, access log, error shape, timeout, rate limit, panics.
//! - [`health`], [`metrics`]: `/health`, `/health/live`, `/metrics`.

pub mod app;
pub mod auth;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod orders;
pub mod products;
pub mod state;
pub mod users;
pub mod webhooks;

pub use state::AppState;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
