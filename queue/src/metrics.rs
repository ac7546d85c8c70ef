//! Queue metrics recorded through the `metrics` facade, and the one Prometheus recorder both
//! binaries install (so an api and a worker in one process, as in tests, share it).
//!
//! Names are prefixed `orderly_`. What an autoscaler reads: `orderly_queue_jobs{state="waiting"}`
//! and `orderly_queue_oldest_waiting_seconds`, both read fresh from Redis at scrape time.
//!
//! Per-group gauges (`orderly_queue_group_waiting`, `orderly_queue_group_running`) name only the
//! [`GROUP_SERIES`] groups with the largest backlogs and sum the rest in one series, so a queue
//! with thousands of groups (webhook endpoints) still makes a handful of series. They are written
//! as text at scrape time ([`group_gauges`]) rather than recorded: the recorder keeps every series
//! it was ever given, so a group that left the top would go on being reported with a stale value.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{Outbox, QueueEngine, WorkerInfo, inspect::GroupsOverview};

/// Groups of a queue named in the per-group gauges: the largest backlogs.
pub const GROUP_SERIES: usize = 10;

/// The `group` label of the series that sums the backlog of every group not named.
pub const OTHER_GROUPS: &str = "_other";

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

/// Counts a statement sent by a [`crate::GroupCommit`] and the operations in it: their ratio is
/// how many operations one commit carries. `outcome` is `committed` or `failed` (the
/// operations of a failed group are sent again alone).
///
/// `waits` are how long each operation waited in line for a statement; `statement` how long the
/// statement took, from taking its pooled connection to PostgreSQL's answer (its commit
/// included), recorded once per operation it carried, so both histograms are per operation and
/// their means add up to what an operation spends in [`crate::GroupCommit::execute`] before it
/// is told (the rest is its task's wait to run again): an operator sees at once whether the
/// line (too few statements in flight, or CPU) or the database is the wait.
pub fn group_committed(
    committed: bool,
    waits: impl ExactSizeIterator<Item = std::time::Duration>,
    statement: std::time::Duration,
) {
    let outcome = if committed { "committed" } else { "failed" };
    metrics::counter!("orderly_group_commit_statements_total", "outcome" => outcome).increment(1);
    metrics::counter!("orderly_group_commit_operations_total", "outcome" => outcome)
        .increment(waits.len() as u64);
    metrics::histogram!("orderly_group_commit_statement_seconds")
        .record_many(statement.as_secs_f64(), waits.len());
    let line = metrics::histogram!("orderly_group_commit_wait_seconds");
    for wait in waits {
        line.record(wait.as_secs_f64());
    }
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
        // Jobs waiting in groups have their priority within their group only: one series, so
        // that summing `waiting` over priorities gives every waiting job.
        metrics::gauge!("orderly_queue_jobs", "queue" => queue.to_owned(), "state" => "waiting", "priority" => "grouped")
            .set(counts.waiting_in_groups as f64);
        metrics::gauge!("orderly_queue_breakers_open", "queue" => queue.to_owned())
            .set(counts.open_breakers as f64);
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

/// A whole scrape of `queues`: the queue gauges read fresh ([`record_queue_gauges`]), everything
/// the process recorded, then the per-group gauges ([`group_gauges`]); what `/metrics` answers on
/// the api and on every worker.
pub async fn scrape(engine: &QueueEngine, outbox: &Outbox, queues: &[&str]) -> String {
    let (_, groups) = tokio::join!(
        record_queue_gauges(engine, outbox, queues),
        group_gauges(engine, queues)
    );
    let mut text = prometheus().render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&groups);
    text
}

/// The per-group gauges of `queues` in the Prometheus text format, read fresh: for each queue
/// with groups (or group limits), `orderly_queue_group_waiting{queue,group}` and
/// `orderly_queue_group_running{queue,group}` of the [`GROUP_SERIES`] groups with the largest
/// backlogs, and `orderly_queue_group_waiting{group="_other"}` summing the backlog of all the
/// others. A queue that could not be read is left out of this scrape.
pub async fn group_gauges(engine: &QueueEngine, queues: &[&str]) -> String {
    let reads = queues
        .iter()
        .map(|&queue| async move { (queue, engine.groups(queue, GROUP_SERIES).await) });
    let mut read = Vec::with_capacity(queues.len());
    for (queue, groups) in futures::future::join_all(reads).await {
        match groups {
            Ok(groups) => {
                let has_groups = !groups.top.is_empty()
                    || groups.groups_with_backlog > 0
                    || engine.limits(queue).group.is_limited();
                if has_groups {
                    read.push((queue, groups));
                }
            }
            Err(error) => tracing::debug!(%error, queue, "queue groups could not be read"),
        }
    }
    render_group_gauges(&read)
}

/// The text of [`group_gauges`] for the groups read of each queue.
fn render_group_gauges(queues: &[(&str, GroupsOverview)]) -> String {
    use std::fmt::Write as _;
    if queues.is_empty() {
        return String::new();
    }
    let mut waiting = String::from(
        "# HELP orderly_queue_group_waiting Jobs waiting in a group: the groups with the largest \
         backlogs by name, all others summed as the group _other.\n\
         # TYPE orderly_queue_group_waiting gauge\n",
    );
    let mut running = String::from(
        "# HELP orderly_queue_group_running Jobs of a group running now, for the groups named in \
         orderly_queue_group_waiting.\n\
         # TYPE orderly_queue_group_running gauge\n",
    );
    for (queue, groups) in queues {
        let queue = escape_label(queue);
        let mut named = 0u64;
        for group in groups.top.iter().take(GROUP_SERIES) {
            // A group really called `_other` is summed with the others: one series per label.
            if group.key == OTHER_GROUPS {
                continue;
            }
            named += group.waiting;
            let key = escape_label(&group.key);
            let _ = writeln!(
                waiting,
                "orderly_queue_group_waiting{{queue=\"{queue}\",group=\"{key}\"}} {}",
                group.waiting
            );
            let _ = writeln!(
                running,
                "orderly_queue_group_running{{queue=\"{queue}\",group=\"{key}\"}} {}",
                group.running
            );
        }
        let others = groups.waiting.saturating_sub(named);
        let _ = writeln!(
            waiting,
            "orderly_queue_group_waiting{{queue=\"{queue}\",group=\"{OTHER_GROUPS}\"}} {others}"
        );
    }
    waiting + &running
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::GroupStatus;

    fn group(key: &str, waiting: u64, running: u64) -> GroupStatus {
        GroupStatus {
            key: key.to_owned(),
            waiting,
            running,
            state: "ready".to_owned(),
            waiting_until_ms: None,
            breaker: None,
        }
    }

    #[test]
    fn group_gauges_name_the_top_groups_and_sum_the_rest() {
        let groups = GroupsOverview {
            groups_with_backlog: 4,
            waiting: 20,
            top: vec![group("a\"b", 9, 2), group(OTHER_GROUPS, 4, 0)],
            others_waiting: 7,
            open_breakers: Vec::new(),
        };
        let text = render_group_gauges(&[("webhooks", groups)]);
        assert!(
            text.contains("# TYPE orderly_queue_group_waiting gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("orderly_queue_group_waiting{queue=\"webhooks\",group=\"a\\\"b\"} 9\n"),
            "{text}"
        );
        assert!(
            text.contains("orderly_queue_group_running{queue=\"webhooks\",group=\"a\\\"b\"} 2\n"),
            "{text}"
        );
        // The real group called `_other` is summed with the groups not named.
        assert!(
            text.contains("orderly_queue_group_waiting{queue=\"webhooks\",group=\"_other\"} 11\n"),
            "{text}"
        );
        assert_eq!(text.matches("group=\"_other\"").count(), 1, "{text}");
        assert_eq!(render_group_gauges(&[]), "");
    }
}
