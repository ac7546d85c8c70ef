//! The job queue: a Redis engine of our own, an apalis 1.0 backend over it, and the
//! transactional outbox that feeds it. Nothing here knows about the shop.
//!
//! Why not `apalis-redis`: its fetch script unpacks every due task at once (a backlog of 8,000
//! makes every worker exit), it stores no priority, ignores `max_attempts`, polls instead of
//! blocking, and ends the worker on a Redis restart. This engine keeps apalis's worker model
//! (`WorkerBuilder`, tower layers, `Monitor`) and replaces the storage.
//!
//! - `job`: specs, priorities, retry policies, the errors handlers return.
//! - `engine`: the Lua scripts and typed calls (enqueue, claim, ack, fail, renew, release).
//! - `producer`: group-committed enqueue.
//! - `backend`: the apalis `Backend` (fetcher, lease keeper, acker, job middleware).
//! - `inspect`: counts, throughput, listings and operator actions (dashboard, metrics).
//! - `registry`: worker heartbeats.
//! - `correlation`: the opaque id a job carries from whatever staged it.
//! - `outbox`: staging jobs in PostgreSQL transactions, dispatch after commit, the relay.

pub mod backend;
pub mod correlation;
pub mod engine;
pub mod inspect;
pub mod job;
pub mod metrics;
pub mod outbox;
pub mod producer;
pub mod registry;

pub use backend::{BackendSettings, BackendShared, JobInfo, RedisBackend};
pub use engine::{JobState, QueueEngine, Retention};
pub use job::{Backoff, ClaimedJob, JobError, JobSpec, Priority, RetryPolicy};
pub use outbox::UnitOfWork;
pub use outbox::{Outbox, StagedJob};
pub use producer::Producer;
pub use registry::WorkerInfo;
