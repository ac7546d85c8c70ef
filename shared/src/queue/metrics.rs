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

/// Sets the queue gauges (depth per state and priority, oldest waiting age, paused) and the
/// outbox backlog from a fresh read; called at scrape time so the values are never stale.
pub async fn record_queue_gauges(
    engine: &crate::queue::QueueEngine,
    outbox: &crate::queue::Outbox,
) {
    for queue in crate::jobs::QUEUES {
        let Ok(counts) = engine.counts(queue).await else {
            continue;
        };
        for (priority, waiting) in counts.waiting_by_priority.iter().enumerate() {
            metrics::gauge!("orderly_queue_jobs", "queue" => queue, "state" => "waiting", "priority" => priority.to_string())
                .set(*waiting as f64);
        }
        for (state, value) in [
            ("scheduled", counts.scheduled),
            ("active", counts.active),
            ("completed", counts.completed),
            ("dead", counts.dead),
        ] {
            metrics::gauge!("orderly_queue_jobs", "queue" => queue, "state" => state, "priority" => "all").set(value as f64);
        }
        metrics::gauge!("orderly_queue_oldest_waiting_seconds", "queue" => queue)
            .set(counts.oldest_waiting_ms as f64 / 1000.0);
        metrics::gauge!("orderly_queue_paused", "queue" => queue).set(if counts.paused {
            1.0
        } else {
            0.0
        });
    }
    if let Ok(backlog) = outbox.backlog().await {
        metrics::gauge!("orderly_outbox_pending").set(backlog.pending as f64);
        metrics::gauge!("orderly_outbox_oldest_pending_seconds")
            .set(backlog.oldest_ms as f64 / 1000.0);
    }
}
