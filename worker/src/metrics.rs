//! The worker's `/metrics` endpoint (Prometheus text format) on `WORKER_METRICS_PORT`: job
//! outcomes, retries and durations of this process, its liveness (`orderly_worker_up`), outbox
//! dispatch lag of its relay, and the queue gauges read fresh from Redis at scrape time.

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use orderly::Services;
use tokio_util::sync::CancellationToken;

/// Serves `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, services: Services, stop: CancellationToken) {
    // Installing the recorder before the first scrape means counters recorded by jobs that ran
    // before it are kept.
    orderly::queue::metrics::prometheus();
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health/live", get(|| async { "ok" }))
        .with_state(services);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::warn!(%error, "metrics server stopped");
    }
}

async fn render(State(services): State<Services>) -> impl IntoResponse {
    let body = orderly::queue::metrics::scrape(
        &services.queue,
        &services.outbox,
        &orderly::jobs::QUEUE_NAMES,
    )
    .await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
