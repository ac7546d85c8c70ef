//! Prometheus metrics of the api: request counts and latency by route and status, plus queue
//! depth, age and outbox backlog read from Redis and PostgreSQL at scrape time (what an
//! autoscaler scales workers on).

use std::sync::OnceLock;

use axum::{extract::State, http::Method, response::IntoResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: sub-millisecond to ten seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (several apps in one test process);
            // then this handle renders nothing new, which tests of metrics avoid.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Records one finished request.
pub fn record_request(method: &Method, route: &str, status: u16, latency_ms: f64) {
    let labels = [
        ("method", method.to_string()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("orderly_http_requests_total", &labels).increment(1);
    metrics::histogram!("orderly_http_request_duration_seconds", &labels)
        .record(latency_ms / 1000.0);
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    orderly::queue::metrics::record_queue_gauges(&state.services.queue, &state.services.outbox)
        .await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
}
