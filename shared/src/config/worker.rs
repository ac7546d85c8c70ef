//! The queue engine and the worker process (`WorkerConfig`).

use std::time::Duration;

use orderly_queue::{
    Partitions, QueueLimits, RateLimit,
    limits::{parse_cap, parse_per_queue},
    partitions::parse_count,
};

use super::{ConfigError, Source, millis, secs};

/// Queue engine and worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues this worker process serves, as listed in `WORKER_QUEUES` (comma-separated; empty:
    /// every queue). Configuration does not know which queues exist: the worker checks the
    /// names against the shop's job declarations (`jobs::queues_to_serve`) before it starts.
    pub queues: Vec<String>,
    /// Jobs run at once per queue in one process (`WORKER_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claimed job stays leased without renewal (`JOB_LEASE_MS`).
    pub lease: Duration,
    /// How long running jobs may finish after SIGTERM before they are put back (`WORKER_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Port of the worker's `/metrics` endpoint (`WORKER_METRICS_PORT`; unset disables it).
    pub metrics_port: Option<u16>,
    /// Completed jobs kept per queue for the dashboard (`QUEUE_COMPLETED_KEEP`).
    pub completed_keep: u64,
    /// Longest a completed job is kept (`QUEUE_COMPLETED_MAX_AGE_SECS`).
    pub completed_max_age: Duration,
    /// Outbox rows marked dispatched (by earlier versions; this one deletes a pushed row) are
    /// deleted once marked longer ago than this (`OUTBOX_RETENTION_SECS`).
    pub outbox_retention: Duration,
    /// How long a pushed outbox row's id keeps a second job with that id off the queue once the
    /// job itself is trimmed (`OUTBOX_UNIQUE_WINDOW_SECS`); one small Redis key per job pushed
    /// within the window.
    pub outbox_unique_window: Duration,
    /// Fleet-wide flow control per queue, from `QUEUE_RATE_LIMITS` (`emails=50/s,webhooks=500/m`)
    /// and `QUEUE_CONCURRENCY_LIMITS` (`reports=2`); every process must read the same. Queue
    /// names are checked against the shop's queues when the services are built.
    pub queue_limits: Vec<(String, QueueLimits)>,
    /// Queues split into partitions, from `QUEUE_PARTITIONS` (`emails=4`): on a Redis Cluster a
    /// partitioned queue spreads over several nodes (see `orderly_queue::partitions`). Every
    /// process, api and workers, must read the same.
    pub queue_partitions: Partitions,
}

/// The shortest unique window accepted: the relay re-pushes a row unmarked for a few seconds,
/// so a window shorter than a minute would guard little beyond what the job's own id does.
const MIN_OUTBOX_UNIQUE_WINDOW_SECS: u64 = 60;

impl WorkerConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let queues = env.list("WORKER_QUEUES");
        let concurrency: usize = env.parse_or("WORKER_CONCURRENCY", 16)?;
        if concurrency == 0 || concurrency > 10_000 {
            return Err(ConfigError::Invalid {
                name: "WORKER_CONCURRENCY",
                reason: "must be between 1 and 10000".into(),
            });
        }
        let lease = millis(env.parse_or("JOB_LEASE_MS", 30_000)?);
        if lease < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "JOB_LEASE_MS",
                reason: "must be at least 300 ms (leases are renewed every third of it)".into(),
            });
        }
        let outbox_unique_window: u64 = env.parse_or("OUTBOX_UNIQUE_WINDOW_SECS", 900)?;
        if outbox_unique_window < MIN_OUTBOX_UNIQUE_WINDOW_SECS {
            return Err(ConfigError::Invalid {
                name: "OUTBOX_UNIQUE_WINDOW_SECS",
                reason: format!("must be at least {MIN_OUTBOX_UNIQUE_WINDOW_SECS} seconds"),
            });
        }
        let queue_limits = read_queue_limits(env)?;
        let queue_partitions = read_queue_partitions(env, &queue_limits)?;
        Ok(Self {
            queue_limits,
            queue_partitions,
            queues,
            concurrency,
            lease,
            shutdown_grace: secs(env.parse_or("WORKER_SHUTDOWN_GRACE_SECS", 30)?),
            metrics_port: env
                .raw("WORKER_METRICS_PORT")
                .map(|_| env.parse_or("WORKER_METRICS_PORT", 0u16))
                .transpose()?,
            completed_keep: env.parse_or("QUEUE_COMPLETED_KEEP", 1_000)?,
            completed_max_age: secs(env.parse_or("QUEUE_COMPLETED_MAX_AGE_SECS", 3_600)?),
            outbox_retention: secs(env.parse_or("OUTBOX_RETENTION_SECS", 86_400)?),
            outbox_unique_window: secs(outbox_unique_window),
        })
    }
}

/// Reads `QUEUE_PARTITIONS`, refusing counts that the queue's limits cannot be shared by.
fn read_queue_partitions(
    env: &Source<'_>,
    limits: &[(String, QueueLimits)],
) -> Result<Partitions, ConfigError> {
    let invalid = |reason| ConfigError::Invalid {
        name: "QUEUE_PARTITIONS",
        reason,
    };
    let counts = parse_per_queue(
        &env.raw("QUEUE_PARTITIONS").unwrap_or_default(),
        parse_count,
    )
    .map_err(invalid)?;
    for (queue, count) in &counts {
        if let Some((_, queue_limits)) = limits.iter().find(|(q, _)| q == queue) {
            queue_limits
                .check_partitions(*count)
                .map_err(|reason| invalid(format!("{queue}: {reason}")))?;
        }
    }
    Ok(Partitions::new(counts))
}

/// Reads `QUEUE_RATE_LIMITS` and `QUEUE_CONCURRENCY_LIMITS` into one entry per limited queue.
fn read_queue_limits(env: &Source<'_>) -> Result<Vec<(String, QueueLimits)>, ConfigError> {
    let rates = parse_per_queue(
        &env.raw("QUEUE_RATE_LIMITS").unwrap_or_default(),
        RateLimit::parse,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "QUEUE_RATE_LIMITS",
        reason,
    })?;
    let caps = parse_per_queue(
        &env.raw("QUEUE_CONCURRENCY_LIMITS").unwrap_or_default(),
        parse_cap,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "QUEUE_CONCURRENCY_LIMITS",
        reason,
    })?;
    let mut limits: Vec<(String, QueueLimits)> = Vec::new();
    for (queue, rate) in rates {
        limits.push((
            queue,
            QueueLimits {
                rate: Some(rate),
                ..QueueLimits::default()
            },
        ));
    }
    for (queue, cap) in caps {
        match limits.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, l)) => l.concurrency = Some(cap),
            None => limits.push((
                queue,
                QueueLimits {
                    concurrency: Some(cap),
                    ..QueueLimits::default()
                },
            )),
        }
    }
    Ok(limits)
}
