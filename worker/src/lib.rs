//! # orderly-worker
//!
//! Worker processes do the slow work the api queued: emails, webhook deliveries, reports and
//! uploads. Start as many as you need (`orderly-worker --queues emails,webhooks`); each claims
//! jobs from Redis through apalis workers over Orderly's queue engine.
//!
//! - [`runner`]: the process: one apalis worker per queue, heartbeat, outbox relay, shutdown.
//! - [`options`]: what a worker process is asked to do, and the backends it started.
//! - [`jobs`]: the handlers, one file per job family, and the registry.
//! - [`mailer`], [`smtp`], [`templates`]: outgoing mail (pooled `TCP_NODELAY` SMTP connections).
//! - [`imaging`]: product images: format detection, bomb checks, thumbnails.
//! - [`bench`]: the queue benchmark (`orderly-worker bench`).
//! - [`metrics`]: the process's `/metrics` endpoint.
//! - [`webhook_client`]: outgoing webhook HTTP behind the SSRF guard.

pub mod bench;
pub mod imaging;
pub mod jobs;
pub mod mailer;
pub mod metrics;
pub mod options;
pub mod runner;
pub mod smtp;
pub mod templates;
pub mod webhook_client;
