//! The job-queue dashboard for operators, under `/admin` (admins only): an overview of every
//! queue (counts per state and priority, oldest waiting age, an hour of throughput, live
//! workers, outbox backlog), a page per queue with its jobs per state, a page per job, and the
//! operator actions (retry, retry all dead, delete, run now, pause/resume, purge), each behind a
//! confirmation and a CSRF token.
//!
//! Server-rendered HTML (minijinja templates compiled into the binary) with one small script of
//! our own for live updates (short polling of the same page's live part every few seconds),
//! confirmation dialogs and keyboard shortcuts; everything works without it, only less live.
//! No CDN, nothing fetched at build or run time.
//!
//! - [`routes`]: handlers. [`session`]: cookie login, admin check, CSRF. [`views`]: display
//!   models. [`pages`]: templates, static files, security headers.
//!
//! JSON for scripts: `/admin/api/overview`, `/admin/api/queues/{queue}/jobs?state=…`,
//! `/admin/api/queues/{queue}/jobs/{id}` (cookie or admin bearer token; errors in the one error
//! shape).

pub mod pages;
pub mod routes;
pub mod session;
pub mod views;

use std::time::Instant;

use axum::{
    Router,
    extract::Request,
    http::HeaderValue,
    middleware::{Next, from_fn, from_fn_with_state},
    response::Response,
    routing::{get, post},
};

use crate::state::AppState;

/// Every dashboard route.
pub fn router(state: &AppState) -> Router<AppState> {
    // Password guessing is slowed by the same per-client budget as the rest of the api.
    let login = Router::new()
        .route("/admin/login", get(routes::login_form).post(routes::login))
        .layer(from_fn_with_state(
            state.clone(),
            crate::middleware::rate_limit,
        ));
    Router::new()
        .route("/admin", get(routes::index))
        .route("/admin/", get(routes::index))
        .route("/admin/logout", post(routes::logout))
        .route("/admin/queues", get(routes::overview))
        .route("/admin/search", get(routes::search))
        .route("/admin/queues/{queue}", get(routes::queue_page))
        .route("/admin/queues/{queue}/{action}", post(routes::queue_action))
        .route("/admin/queues/{queue}/jobs/{id}", get(routes::job_page))
        .route(
            "/admin/queues/{queue}/jobs/{id}/{action}",
            post(routes::job_action),
        )
        .route("/admin/api/overview", get(routes::api_overview))
        .route("/admin/api/queues/{queue}/jobs", get(routes::api_jobs))
        .route("/admin/api/queues/{queue}/jobs/{id}", get(routes::api_job))
        .route("/admin/static/dashboard.css", get(routes::stylesheet))
        .route("/admin/static/dashboard.js", get(routes::script))
        .merge(login)
        .layer(from_fn(server_timing))
}

/// Adds `Server-Timing: app;dur=<ms>` so the browser's devtools (and the browser test) show
/// how long the server took for each dashboard response.
async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}
