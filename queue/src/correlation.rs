//! The correlation id that travels with jobs: whatever a task was working for when it staged a
//! job (an HTTP request, another job) is recorded on the job, and the job runs under it again,
//! so one id ties an order's request to every job it caused and every job those caused.
//!
//! The engine treats it as opaque text and keeps it in a task-local of its own, so it needs
//! nothing from the application: the application's telemetry reads and sets this same
//! task-local (the shop calls it the request id) instead of the engine reaching into the
//! application's logging.

use std::future::Future;

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// Runs `fut` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    CORRELATION_ID.scope(id, fut).await
}

/// The correlation id of the work this task is doing, if any.
pub fn current() -> Option<String> {
    CORRELATION_ID.try_with(Clone::clone).ok()
}
