//! # Orderly
//!
//! The library both Orderly binaries stand on: the api (`orderly-api`) takes orders over HTTP,
//! the workers (`orderly-worker`) do the slow work. Everything they share lives here, so a
//! binary is only "parse config, build [`services::Services`], serve or work".
//!
//! ## Layout
//!
//! Infrastructure, generic and free of shop logic:
//! - [`config`]: typed configuration from the environment, validated at start.
//! - [`telemetry`]: JSON logs and the request id that follows an order into its jobs.
//! - [`error`]: [`error::AppError`] and the one error shape.
//! - [`db`], [`redis`]: PostgreSQL pool and migrations, Redis connection, the unit of work.
//! - [`cache`]: Redis read-through cache used by repositories.
//! - [`ratelimit`]: GCRA limiter in memory or Redis.
//! - [`events`]: in-process domain events, whose subscribers add writes to the publishing operation.
//! - [`queue`]: the Redis job engine, its apalis backend, and the transactional outbox.
//! - [`idempotency`]: idempotency keys for unsafe requests.
//! - [`pagination`]: keyset pages.
//! - [`storage`]: report files and uploads (local folder or S3-compatible).
//!
//! The shop, one folder per domain (model, repository, service, events, its job type):
//! - [`users`], [`products`], [`orders`], [`reports`], [`uploads`], [`emails`] (which events
//!   send which mail, and the sent-mail log).
//! - [`webhooks`]: endpoints, signed deliveries and the address rules that keep them off our
//!   own network.
//! - [`jobs`]: the shop's queues (derived from each domain's job declaration), the settings the
//!   declarations read, and [`jobs::JobStager`], the one way to stage a job.
//! - [`maintenance`]: housekeeping on built-in schedules (expired idempotency keys, old dead
//!   jobs).
//!
//! Layering: repositories hold SQL only; services hold the rules and talk to other domains only
//! through their services (orders reserve stock through `ProductService`, imports upsert
//! products through it).

pub mod cache;
pub mod config;
pub mod csv_cell;
pub mod db;
pub mod emails;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod jobs;
pub mod maintenance;
pub mod orders;
pub mod pagination;
pub mod products;
pub mod ratelimit;
pub mod redis;
pub mod reports;
pub mod retention;
pub mod services;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod uploads;
pub mod users;
pub mod webhooks;

/// The queue engine (its own crate, `orderly-queue`), under the name the shop has always used.
pub use orderly_queue as queue;

pub use config::Config;
pub use error::{AppError, Result};
pub use services::Services;
