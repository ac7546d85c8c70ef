//! Prometheus metrics of the api: request counts and latency by route and status, plus queue
//! depth, age, per-group backlogs, open breakers, worker liveness and outbox backlog read from
//! Redis and PostgreSQL at scrape time (what an autoscaler scales workers on). The recorder itself is shared with the worker
//! (`orderly::queue::metrics::prometheus`).

use axum::{extract::State, http::Method, response::IntoResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    orderly::queue::metrics::prometheus()
}

/// Records one finished request. `route` is the matched route template (`/admin/queues/{queue}`),
/// never the raw path, so ids do not explode the label set.
///
/// No label value comes from the request as the client wrote it: a method outside the standard
/// set counts as `other`, and a path no route matched is the single route `unmatched`, so a
/// client making up methods or paths cannot grow the number of series.
pub fn record_request(method: &Method, route: &str, status: u16, latency_ms: f64) {
    let labels = [
        ("method", method_label(method).to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("orderly_http_requests_total", &labels).increment(1);
    metrics::histogram!("orderly_http_request_duration_seconds", &labels)
        .record(latency_ms / 1000.0);
}

/// The method as a label: one of the standard methods, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let body = orderly::queue::metrics::scrape(
        &state.services.queue,
        &state.services.outbox,
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
