//! # orderly-queue
//!
//! A job queue on Redis with a transactional outbox in PostgreSQL, and an apalis 1.0 backend so
//! apalis workers (`WorkerBuilder`, tower layers, `Monitor`) run its jobs. It knows nothing of the
//! application that uses it: queues, kinds and payloads are the caller's names and JSON.
//!
//! Why not `apalis-redis`: its fetch script unpacks every due task at once (a backlog of 8,000
//! makes every worker exit), it stores no priority, ignores `max_attempts`, polls instead of
//! blocking, and ends the worker on a Redis restart. This engine keeps apalis's worker model and
//! replaces the storage.
//!
//! ## Using it
//! 1. Build a [`QueueEngine`] over a [`RedisConnection`] (one server, or the primary that
//!    Sentinels name, followed across failovers) and a key prefix; every key of a queue shares
//!    the hash tag `{queue}`, so it also runs on Redis Cluster, where a hot queue can be split
//!    into [`Partitions`] on several nodes ([`QueueEngine::with_partitions`]).
//! 2. Declare each job type once with [`Job`] (its [`QueueName`], kinds, [`Priority`],
//!    [`RetryPolicy`], time limit); its [`Job::spec`] is the [`JobSpec`] the engine stores (a
//!    `JobSpec` can also be built by hand for queues named at run time). Enqueue it through a
//!    [`Producer`] (group-commits concurrent enqueues into one script call), or, to tie it to a
//!    database change, stage it in a [`UnitOfWork`] with [`outbox::stage_job`] (or
//!    [`outbox::stage`] for a hand-built spec), choosing when it may run with [`RunAt`], and
//!    commit through [`Outbox::commit`]: the job exists
//!    if and only if the transaction committed, and [`Outbox::run_relay`] re-pushes what a
//!    crash left behind (the outbox table is created by the application's migrations; see
//!    `migrations/0005_outbox.up.sql` in this repository for its shape).
//!    A job may carry a uniqueness key with a window of its own ([`Uniqueness`], from
//!    [`Job::unique`] or [`JobSpec::unique_for`]); the outbox keys each push by its row id.
//! 3. Run workers: a [`RedisBackend`] per queue under apalis; handlers return `Result<_,
//!    JobError>` ([`JobError::retry`], [`JobError::permanent`]); leases are renewed while a job
//!    runs, acks and failures carry the lease token, and a job whose worker died comes back.
//!    A running handler can see that its job was asked to stop, report progress and keep a small
//!    result through its [`JobInfo`]'s [`JobControl`]; [`QueueEngine::cancel`] cancels a
//!    waiting job at once and signals a running one. A job enqueued with events on keeps a
//!    stream of its life ([`QueueEngine::job_events`]) that clients follow live.
//! 4. Watch it: [`inspect`] (counts, throughput by minute and by hour, listings, filtered scans,
//!    retry/delete/promote/pause one job or many, run-time percentiles per kind from
//!    [`runtimes`]), [`registry`] (live workers), [`metrics`] (Prometheus).
//!
//! Errors of the outbox and the engine are [`QueueError`]; a job carries an opaque
//! [`correlation`] id from whatever staged it.
//!
//! ## Modules
//! - `declaration`: the [`Job`] trait, [`QueueName`] and [`RunAt`].
//! - `job`: specs, priorities, retry policies, the errors handlers return.
//! - `engine`: the Lua scripts and typed calls (enqueue, claim, ack, fail, renew, release).
//! - `connection`: the connection to Redis, on one server or behind Sentinels.
//! - `producer`: group-committed enqueue.
//! - `backend`: the apalis `Backend` (fetcher, lease keeper, acker, job middleware).
//! - `inspect`: counts, throughput, listings and operator actions (dashboard, metrics).
//! - `limits`: fleet-wide rate limits and concurrency caps per queue and per group, fair
//!   rotation between groups, ordered groups and circuit breakers, enforced at claim time.
//! - `registry`: worker heartbeats.
//! - `runtimes`: run times and failures per job kind, counted by workers, kept per minute.
//! - `schedule`: recurring jobs (cron with seconds and time zones, intervals), one job per tick
//!   however many processes run the loop.
//! - `correlation`: the opaque id a job carries from whatever staged it.
//! - `trace`: the W3C trace context a job carries, through a propagation the application
//!   installs (the engine depends on no tracing SDK).
//! - `partitions`: one hot queue spread over several hash tags (cluster slots).
//! - `outbox`: staging jobs in PostgreSQL transactions, dispatch after commit, the relay.
//! - `writes`: an operation's writes and outbox rows, gathered and sent as one statement.
//! - `group_commit`: operations sent at the same moment, committed together as one statement.
//! - `held_connection`: a pooled connection a background task keeps across short gaps in its
//!   work, sparing the pool's check of every connection given back.
//! - `error`: [`QueueError`].

/// A one-row `FROM` item that switches the current transaction to asynchronous commit
/// (`synchronous_commit = off`: the commit does not wait for its WAL flush).
///
/// Only for single-statement bookkeeping whose loss in a PostgreSQL crash is harmless and which
/// runs outside any business transaction: the outbox's delete of pushed rows (a lost one costs
/// one idempotent re-push by the relay), and whatever the application decides is of that kind.
/// Written into an autocommit statement as `... from <this> as async_commit ...` (`using` in a
/// `delete`). A checked `sqlx::query!` takes only literals, so the statements that use it spell
/// the fragment out; this macro is the reference that their tests compare them with
/// (`include_str!` of the source `contains(async_commit_source!())`).
#[macro_export]
macro_rules! async_commit_source {
    () => {
        "(select set_config('synchronous_commit', 'off', true))"
    };
}

pub mod backend;
pub mod connection;
pub mod correlation;
pub mod declaration;
pub mod engine;
pub mod error;
pub mod group_commit;
pub mod held_connection;
pub mod inspect;
pub mod job;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod partitions;
pub mod producer;
pub mod registry;
pub mod runtimes;
pub mod schedule;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod trace;
pub mod writes;

pub use backend::{BackendSettings, BackendShared, JobControl, JobInfo, RedisBackend};
pub use connection::{RedisConnection, RedisServers};
pub use declaration::{Job, QueueName, RunAt};
pub use engine::{CancelOutcome, JobEvent, JobState, QueueEngine, Retention};
pub use error::QueueError;
pub use group_commit::{GroupCommit, Grouped};
pub use held_connection::{HeldConnection, KEEP_CONNECTION_IDLE};
pub use job::{Backoff, ClaimedJob, JobError, JobSpec, Priority, RetryPolicy};
pub use job::{JobGroup, Uniqueness};
pub use limits::{Breaker, GroupLimits, QueueLimits, RateLimit};
pub use outbox::{Outbox, StagedJob};
pub use outbox::{Staging, UnitOfWork};
pub use partitions::Partitions;
pub use producer::{Producer, ReplicaAcks};
pub use registry::WorkerInfo;
pub use writes::{WriteRef, Writes};
