//! The job-queue dashboard for operators, under `/admin` (admins only): an overview of every
//! queue (counts per state and priority, retries apart from first runs, oldest waiting age,
//! throughput over an hour, a day or a week, live workers, outbox backlog), a page per queue
//! with its job kinds (failure rate, run-time percentiles), its jobs per list (filtered by kind
//! and text) and its job groups, a page per group and per job (the ids in its payload linked to
//! what they name), the recurring schedules, and the operator actions (retry, retry all dead,
//! delete, run now, pause/resume, purge, close a group's breaker, retry or delete a selection or
//! everything a filter matches), each behind a confirmation and a CSRF token. Laid out for a
//! laptop and for a phone (420 px wide: tables scroll in their own box, the page never does).
//!
//! Server-rendered HTML (minijinja templates compiled into the binary) with one small script of
//! our own for live updates (one Server-Sent Events stream per open page, sending the page's
//! live part when it changes), confirmation dialogs and keyboard shortcuts; everything works
//! without it, only less live. No CDN, nothing fetched at build or run time.
//!
//! HTTP only: reads and actions are the queue engine's (`orderly::queue`). One module per page,
//! each with its handlers and the display models its templates need:
//!
//! - [`overview`]: every queue, the throughput chart (`?range=1h|24h|7d`), live workers, the
//!   outbox backlog.
//! - [`queue`]: one queue's job kinds and jobs per list (waiting, scheduled, retries, running,
//!   ...), filtered by kind and text; bulk actions on a selection or on every match; the actions
//!   on the whole queue.
//! - [`groups`]: a queue's job groups (limits, backlogs, breakers), one group's page, closing a
//!   breaker.
//! - [`job`]: one job, and the actions on it.
//! - [`links`]: what the ids in a job's payload name (an order, a webhook endpoint, a report,
//!   an upload), with their API URLs.
//! - [`schedules`]: every recurring schedule, its next and last run, run now, pause/resume.
//! - [`search`]: find a job by id.
//! - [`login`]: sign in and out.
//! - [`api`]: the JSON read API for scripts.
//!
//! And what they share: [`live`] (the live-update stream of every page, and the one watcher per
//! process that wakes it), [`frame`] (navigation, CSRF token, notice, live URL), [`list`] (job
//! lists: rows and pager), [`actions`] (the action buttons, the CSRF check and confirmation in
//! front of every action), [`chart`] (the throughput chart and its ranges), [`format`]
//! (durations, run times, times, ids),
//! [`render`] (templates, security headers, the error page), [`assets`] (the stylesheet and
//! script), [`session`] (cookie login, admin check, CSRF).
//!
//! JSON for scripts: `/admin/api/overview`, `/admin/api/queues/{queue}/jobs?state=…`,
//! `/admin/api/queues/{queue}/jobs/{id}`, `/admin/api/queues/{queue}/kinds`,
//! `/admin/api/queues/{queue}/groups`,
//! `/admin/api/queues/{queue}/groups/{key}`, `/admin/api/schedules` (cookie or admin bearer
//! token; errors in the one error shape).

pub mod actions;
pub mod api;
pub mod assets;
pub mod chart;
pub mod format;
pub mod frame;
pub mod groups;
pub mod hub;
pub mod job;
pub mod links;
pub mod list;
pub mod live;
pub mod login;
pub mod overview;
pub mod queue;
pub mod render;
pub mod schedules;
pub mod search;
pub mod session;

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
        .route("/admin/login", get(login::login_form).post(login::login))
        .layer(from_fn_with_state(
            state.clone(),
            crate::middleware::rate_limit,
        ));
    Router::new()
        .route("/admin", get(overview::index))
        .route("/admin/", get(overview::index))
        .route("/admin/logout", post(login::logout))
        .route("/admin/queues", get(overview::overview))
        .route("/admin/search", get(search::search))
        .route("/admin/live", get(live::live_stream))
        .route("/admin/queues/{queue}", get(queue::queue_page))
        .route("/admin/queues/{queue}/bulk", post(queue::bulk_action))
        .route("/admin/queues/{queue}/{action}", post(queue::queue_action))
        .route("/admin/queues/{queue}/jobs/{id}", get(job::job_page))
        .route(
            "/admin/queues/{queue}/groups/{key}",
            get(groups::group_page),
        )
        .route(
            "/admin/queues/{queue}/groups/{key}/{action}",
            post(groups::group_action),
        )
        .route(
            "/admin/queues/{queue}/jobs/{id}/{action}",
            post(job::job_action),
        )
        .route("/admin/schedules", get(schedules::schedules_page))
        .route(
            "/admin/schedules/{name}/{action}",
            post(schedules::schedule_action),
        )
        .route("/admin/api/overview", get(api::api_overview))
        .route("/admin/api/queues/{queue}/jobs", get(api::api_jobs))
        .route("/admin/api/queues/{queue}/jobs/{id}", get(api::api_job))
        .route("/admin/api/queues/{queue}/kinds", get(api::api_kinds))
        .route("/admin/api/queues/{queue}/groups", get(api::api_groups))
        .route(
            "/admin/api/queues/{queue}/groups/{key}",
            get(api::api_group),
        )
        .route("/admin/api/schedules", get(api::api_schedules))
        .route("/admin/static/dashboard.css", get(assets::stylesheet))
        .route("/admin/static/dashboard.js", get(assets::script))
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
