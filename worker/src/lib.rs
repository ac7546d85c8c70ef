//! # orderly-worker
//!
//! Worker processes do the slow work the api queued: emails, webhook deliveries, reports and
//! uploads. Start as many as you need (`orderly-worker --queues emails,webhooks`); each claims
//! jobs from Redis through apalis workers over Orderly's queue engine.
//!
//! - [`runner`]: the process: one apalis worker per queue, heartbeat, outbox relay, shutdown.
//! - [`options`]: what a worker process is asked to do, and the backends it started.
//! - [`jobs`]: the handlers, one file per job type, and the list of them ([`jobs::register_all`]).
//! - [`registrar`]: one typed call per job type starts its apalis worker.
//! - [`context`]: what every handler can use.
//! - [`mailer`], [`smtp`], [`templates`]: outgoing mail (pooled `TCP_NODELAY` SMTP connections).
//! - [`imaging`]: product images: format detection, bomb checks, thumbnails.
//! - [`metrics`]: the process's `/metrics` endpoint.
//! - [`healthcheck`]: `orderly-worker healthcheck`, the container health check (this host's
//!   heartbeat is fresh, Redis and PostgreSQL answer).
//! - [`webhook_client`]: outgoing webhook HTTP behind the SSRF guard.
//!
//! The queue benchmark lives in `bench/` (`orderly-bench queue`) and drives [`runner::run_with`]
//! with a handler of its own; the reliability drills' worker is `src/bin/orderly-drill-worker.rs`,
//! a separate test binary. The production `orderly-worker` binary carries neither.

pub mod context;
pub mod healthcheck;
pub mod imaging;
pub mod jobs;
pub mod mailer;
pub mod metrics;
pub mod options;
pub mod registrar;
pub mod runner;
pub mod smtp;
pub mod templates;
pub mod webhook_client;
