//! Queue metrics recorded through the `metrics` facade, and the one Prometheus recorder both
//! binaries install (so an api and a worker in one process, as in tests, share it).
//!
//! Names are prefixed `orderly_`. What an autoscaler reads: `orderly_queue_jobs{state="waiting"}`
//! and `orderly_queue_oldest_waiting_seconds`, both read fresh from Redis at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{Outbox, QueueEngine, WorkerInfo};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: sub-millisecond to ten seconds (HTTP requests, jobs).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Outbox dispatch lag buckets in seconds: the push after commit takes milliseconds, the relay
/// picks up left-behind rows after its grace period (seconds), an outage can last minutes.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histogram samples are folded into their buckets (the exporter's own default).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("orderly_outbox_dispatch_lag_seconds".into()),
                    LAG_BUCKETS,
                )
                .expect("valid buckets")
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples are kept one by one until they are folded into their buckets;
            // a recorder that is built (not installed by the exporter) folds them only when
            // told. Without this, a process nobody scrapes keeps every request's latency: the
            // api grew by about 8 bytes per request under load.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            // Fails only if another recorder was installed outside this function; the handle
            // then renders nothing, which a metrics test would show at once.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts a finished attempt and records its duration. `outcome` is `completed`, `retried`
/// (failed, another attempt is scheduled), `dead` (failed for good) or `cancelled` (stopped on
/// request).
pub fn job_finished(queue: &str, kind: &str, outcome: &'static str, elapsed_ms: f64) {
    let labels = [
        ("queue", queue.to_owned()),
        ("kind", kind.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("orderly_jobs_total", &labels).increment(1);
    metrics::histogram!("orderly_job_duration_seconds", &labels).record(elapsed_ms / 1000.0);
    if outcome == "retried" {
        metrics::counter!("orderly_job_retries_total", "queue" => queue.to_owned(), "kind" => kind.to_owned())
            .increment(1);
    }
}

/// Records how long outbox rows waited between their commit and their push to Redis.
/// `path` is `commit` (pushed right after the commit) or `relay` (left behind, pushed later).
pub fn outbox_dispatched(path: &'static str, lags_seconds: &[f64]) {
    for lag in lags_seconds {
        metrics::histogram!("orderly_outbox_dispatch_lag_seconds", "path" => path)
            .record(lag.max(0.0));
    }
    metrics::counter!("orderly_outbox_dispatched_total", "path" => path)
        .increment(lags_seconds.len() as u64);
}

/// Sets the gauges of one worker process: `orderly_worker_up` (1 while it runs, 0 once it
/// stopped), and its running jobs and concurrency.
pub fn worker_process(info: &WorkerInfo, up: bool) {
    metrics::gauge!("orderly_worker_up", "worker" => info.id.clone()).set(if up {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("orderly_worker_running_jobs", "worker" => info.id.clone())
        .set(info.running as f64);
    metrics::gauge!("orderly_worker_concurrency", "worker" => info.id.clone())
        .set(info.concurrency as f64);
}

/// Sets the queue gauges (depth per state and priority, oldest waiting age, paused), worker
/// liveness per queue and the outbox backlog from a fresh read of `queues`; called at scrape time
/// so the values are never stale.
pub async fn record_queue_gauges(engine: &QueueEngine, outbox: &Outbox, queues: &[&str]) {
    for &queue in queues {
        let Ok(counts) = engine.counts(queue).await else {
            continue;
        };
        for (priority, waiting) in counts.waiting_by_priority.iter().enumerate() {
            metrics::gauge!("orderly_queue_jobs", "queue" => queue.to_owned(), "state" => "waiting", "priority" => priority.to_string())
                .set(*waiting as f64);
        }
        for (state, value) in [
            ("scheduled", counts.scheduled),
            ("active", counts.active),
            ("completed", counts.completed),
            ("dead", counts.dead),
            ("cancelled", counts.cancelled),
        ] {
            metrics::gauge!("orderly_queue_jobs", "queue" => queue.to_owned(), "state" => state, "priority" => "all")
                .set(value as f64);
        }
        metrics::gauge!("orderly_queue_oldest_waiting_seconds", "queue" => queue.to_owned())
            .set(counts.oldest_waiting_ms as f64 / 1000.0);
        metrics::gauge!("orderly_queue_paused", "queue" => queue.to_owned())
            .set(if counts.paused { 1.0 } else { 0.0 });
        let limits = engine.limits(queue);
        if let Some(rate) = limits.rate {
            metrics::gauge!("orderly_queue_rate_limit_per_second", "queue" => queue.to_owned())
                .set(rate.per_second());
        }
        if let Some(cap) = limits.concurrency {
            metrics::gauge!("orderly_queue_concurrency_limit", "queue" => queue.to_owned())
                .set(f64::from(cap));
        }
    }
    if let Ok(workers) = engine.workers().await {
        for &queue in queues {
            let live = workers
                .iter()
                .filter(|w| w.queues.iter().any(|q| q == queue))
                .count();
            metrics::gauge!("orderly_workers_live", "queue" => queue.to_owned()).set(live as f64);
        }
        metrics::gauge!("orderly_worker_processes_live").set(workers.len() as f64);
    }
    if let Ok(backlog) = outbox.backlog().await {
        metrics::gauge!("orderly_outbox_pending").set(backlog.pending as f64);
        metrics::gauge!("orderly_outbox_oldest_pending_seconds")
            .set(backlog.oldest_ms as f64 / 1000.0);
    }
}
