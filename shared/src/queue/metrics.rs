//! Job metrics recorded through the `metrics` facade; the binaries install the Prometheus
//! exporter that serves them on `/metrics`.

/// Counts a finished attempt and records its duration.
pub fn job_finished(queue: &str, kind: &str, outcome: &'static str, elapsed_ms: f64) {
    let labels = [
        ("queue", queue.to_owned()),
        ("kind", kind.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("orderly_jobs_total", &labels).increment(1);
    metrics::histogram!("orderly_job_duration_seconds", &labels).record(elapsed_ms / 1000.0);
}
