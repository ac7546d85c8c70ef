//! The job handlers, one file per job type, and [`register_all`], the one place that says which
//! handler runs which job type (one typed [`Registrar::handle`] call each; the queue and time
//! limit come from the type's declaration in the shop's library).
//!
//! Handlers receive ids, reload what they need, and are idempotent: a job that runs twice
//! (at-least-once delivery) does no harm, and a row that is gone is treated as done.

pub mod email;
pub mod maintenance;
pub mod report;
pub mod scheduled_report;
pub mod upload;
pub mod webhook;

use apalis_core::task::data::Data;
use orderly::{
    jobs::{ReportsQueueJob, WebhooksQueueJob},
    queue::{JobError, JobInfo, job::JobResultExt},
};

pub use crate::context::JobContext;
use crate::registrar::Registrar;

/// Registers the handler of every shop job type; the registrar starts those whose queue this
/// process serves.
pub fn register_all(workers: Registrar) -> Registrar {
    workers
        .handle(email::handle)
        .handle(webhooks_queue)
        .handle(reports_queue)
        .handle(upload::handle)
        .handle(maintenance::handle)
}

/// The `webhooks` queue carries two job types (one queue, one handler): a delivery goes to
/// [`webhook::handle`]; an event's fan-out queues the send of each of its deliveries.
async fn webhooks_queue(
    job: WebhooksQueueJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    match job {
        WebhooksQueueJob::Deliver(job) => webhook::handle(job, ctx, info).await,
        WebhooksQueueJob::FanOut(job) => ctx
            .services
            .webhooks
            .fan_out(&job)
            .await
            .context("queueing the event's deliveries"),
    }
}

/// The `reports` queue carries two job types (one queue, one handler): a build goes to
/// [`report::handle`], a schedule's run to [`scheduled_report::handle`].
async fn reports_queue(
    job: ReportsQueueJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    match job {
        ReportsQueueJob::Build(job) => report::handle(job, ctx, info).await,
        ReportsQueueJob::Scheduled(job) => scheduled_report::handle(job, ctx, info).await,
    }
}
