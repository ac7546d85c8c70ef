//! `orderly-worker healthcheck`: is the worker of this container alive and able to work?
//!
//! A container runtime runs the check inside the worker's container, beside the worker, with the
//! same environment. It passes when Redis answers `PING`, PostgreSQL answers `select 1`, and the
//! worker registry (`queue::registry`) holds a fresh heartbeat from a worker on this host; any
//! other outcome is one line saying what is wrong ([`Unhealthy`]).
//!
//! "This container's worker" is the registry entry whose `host` is this machine's host name.
//! Every heartbeat already carries it, and in a container the host name is the container's own
//! (its id, unless set), so each replica of a scaled service finds its own entry and nothing
//! else: no id file to write, share or clean up after a crash, and no variable to configure.
//! The entry is fresh while the worker heartbeats (every `HEARTBEAT_EVERY`; the registry drops
//! it after three missed beats) and gone once the worker exits cleanly. On a machine that runs
//! several workers under one host name (a development box), the check passes while any of them
//! is alive: there the host name cannot tell them apart, and a container never has that case.

use std::{future::Future, time::Duration};

use orderly::{
    Config,
    queue::{QueueEngine, Retention},
};
use sqlx::Connection;

/// The longest each probe may take: the checks run well inside a container health check's
/// timeout, and a store that takes longer than this to answer is not healthy either.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the worker is not healthy, as the one line `orderly-worker healthcheck` prints.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// Redis does not answer: the worker cannot claim jobs or heartbeat.
    #[error("Redis is unreachable: {0}")]
    Redis(String),
    /// PostgreSQL does not answer: the job handlers cannot load what they work on.
    #[error("PostgreSQL is unreachable: {0}")]
    Postgres(String),
    /// No fresh heartbeat from a worker on this host.
    #[error(
        "no fresh heartbeat from a worker on host {host:?} in the worker registry \
         (prefix {prefix:?}, {others} other worker(s) live): the worker is not running, \
         is stuck, or cannot write to Redis"
    )]
    NoHeartbeat {
        /// This machine's host name.
        host: String,
        /// The Redis prefix looked in (`REDIS_PREFIX`).
        prefix: String,
        /// Live workers on other hosts, to tell "this one is down" from "looking in the wrong
        /// place".
        others: usize,
    },
}

/// What a healthy check found: this host's worker and how old its heartbeat is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    /// The worker's id in the registry.
    pub worker_id: String,
    /// Time since its last heartbeat.
    pub heartbeat_age: Duration,
}

/// Runs the checks against the stores in `config`, for the worker on `host` (see the module
/// header for why the host name identifies it).
pub async fn check(config: &Config, host: &str) -> Result<Healthy, Unhealthy> {
    let (redis, postgres) = tokio::join!(ping_redis(config), ping_postgres(config));
    redis?;
    postgres?;
    own_heartbeat(config, host).await
}

async fn ping_redis(config: &Config) -> Result<(), Unhealthy> {
    let probe = async {
        let mut connection = orderly::redis::connect_lazy(&config.redis)?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    within(probe, Unhealthy::Redis).await.map(drop)
}

async fn ping_postgres(config: &Config) -> Result<(), Unhealthy> {
    let probe = async {
        let options = orderly::db::connect_options(&config.database)?;
        let mut connection = sqlx::PgConnection::connect_with(&options).await?;
        let one = sqlx::query_scalar!("select 1")
            .fetch_one(&mut connection)
            .await?;
        let _ = connection.close().await;
        Ok::<_, sqlx::Error>(one)
    };
    within(probe, Unhealthy::Postgres).await.map(drop)
}

async fn own_heartbeat(config: &Config, host: &str) -> Result<Healthy, Unhealthy> {
    let probe = async {
        let redis = orderly::redis::connect_lazy(&config.redis)?;
        let engine = QueueEngine::new(redis, &config.redis.prefix, Retention::default());
        engine.workers().await
    };
    let workers = within(probe, Unhealthy::Redis).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    // The freshest, should an earlier process on this host still be in its last heartbeat's
    // lifetime.
    let own = workers
        .iter()
        .filter(|worker| worker.host == host)
        .max_by_key(|worker| worker.last_heartbeat_ms);
    match own {
        Some(worker) => Ok(Healthy {
            worker_id: worker.id.clone(),
            heartbeat_age: Duration::from_millis(
                u64::try_from(now_ms - worker.last_heartbeat_ms).unwrap_or(0),
            ),
        }),
        None => Err(Unhealthy::NoHeartbeat {
            host: host.to_owned(),
            prefix: config.redis.prefix.clone(),
            others: workers.len(),
        }),
    }
}

/// Runs `probe` within [`PROBE_TIMEOUT`]; a failure or a timeout becomes `reason(why)`.
async fn within<T, E: std::fmt::Display>(
    probe: impl Future<Output = Result<T, E>>,
    reason: fn(String) -> Unhealthy,
) -> Result<T, Unhealthy> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(reason(error.to_string())),
        Err(_) => Err(reason(format!(
            "no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}
