//! # orderly-api
//!
//! The HTTP face of Orderly: REST under `/api/v1`, organised by domain (`users`, `products`,
//! `orders`, `reports`, `webhooks`, `uploads`), each a folder with `routes.rs` (handlers: HTTP
//! only, one service call each) and `dto.rs` (validated request and response shapes, documented
//! with utoipa).
//!
//! - [`app`]: router assembly, middleware stack, OpenAPI document, serving with graceful shutdown.
//! - [`state`]: the one `AppState`.
//! - [`extract`], [`auth`], [`idempotency`]: extractors (our error shape on rejection, bearer
//!   tokens, `Idempotency-Key`).
//! - [`middleware`]: request id, access log, error shape, timeout, rate limit, panics.
//! - [`client_ip`]: the client address behind trusted proxies, and its budget key.
//! - [`health`], [`metrics`]: `/health`, `/health/live`, `/metrics`.
//! - [`server`]: the accept loop, and the limits on slow and idle clients (head, body and
//!   keep-alive deadlines, connection cap).
//! - [`dashboard`]: the job-queue dashboard for operators under `/admin`.
//! - [`live`]: Server-Sent Events for clients following a report or an upload.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod dashboard;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod orders;
pub mod products;
pub mod reports;
pub mod server;
pub mod state;
pub mod uploads;
pub mod users;
pub mod webhooks;

pub use state::AppState;

/// Resolves on SIGTERM or SIGINT; see [`orderly::shutdown::signal`].
pub use orderly::shutdown::signal as shutdown_signal;
