//! The job handlers, one file per job family, and [`register_all`], the one place that maps
//! queues to handlers.
//!
//! Handlers receive ids, reload what they need, and are idempotent: a job that runs twice
//! (at-least-once delivery) does no harm, and a row that is gone is treated as done.

pub mod email;
pub mod report;
pub mod upload;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_core::task::data::Data;
use orderly::{
    Services,
    jobs::{EMAILS, EmailJob, REPORTS, ReportJob, UPLOADS, UploadJob, WEBHOOKS, WebhookJob},
    queue::{JobError, JobInfo, RedisBackend},
};
use serde::de::DeserializeOwned;

use crate::{
    mailer::Mailer,
    options::{Backends, WorkerOptions},
    templates::Templates,
    webhook_client::WebhookClient,
};

/// What every handler can use (`Data<JobContext>` in its arguments).
#[derive(Clone, Debug)]
pub struct JobContext {
    /// Domain services and connections.
    pub services: Services,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Email templates.
    pub templates: Arc<Templates>,
    /// Outgoing webhook requests (redirects off, SSRF guard on).
    pub webhooks: WebhookClient,
}

impl JobContext {
    /// Builds the context from the services' config.
    pub async fn new(services: Services) -> anyhow::Result<Self> {
        let mailer = Mailer::from_config(&services.config.mail)?;
        let webhooks = WebhookClient::from_config(&services.config.webhooks)?;
        Ok(Self {
            services,
            mailer,
            templates: Arc::new(Templates::load()?),
            webhooks,
        })
    }
}

/// Registers one apalis worker on `monitor` for queue `queue`, running `handler` for each job.
#[allow(clippy::too_many_arguments)]
pub fn add_worker<J, H, Fut>(
    monitor: Monitor,
    queue: &str,
    context: &JobContext,
    options: &WorkerOptions,
    worker_id: &str,
    backends: &Backends,
    timeout: Duration,
    handler: H,
) -> Monitor
where
    J: DeserializeOwned + Send + Sync + Unpin + 'static,
    H: Fn(J, Data<JobContext>, Data<JobInfo>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
{
    let context = context.clone();
    let settings = options.backend_settings();
    let concurrency = options.concurrency;
    let worker_id = worker_id.to_owned();
    let backends = backends.clone();
    let queue = queue.to_owned();
    monitor.register(move |_restarts| {
        let backend = RedisBackend::<J>::new(
            context.services.queue.clone(),
            &queue,
            &worker_id,
            settings.clone(),
        );
        backends.add(backend.shared());
        WorkerBuilder::new(format!("{queue}@{worker_id}"))
            .backend(backend)
            .data(context.clone())
            .catch_panic()
            // Concurrency outside the timeout, so a job's time limit starts when it runs, not
            // while it waits for a free slot.
            .concurrency(concurrency)
            .timeout(timeout)
            .build(handler.clone())
    })
}

/// Registers a worker for every queue in `options.queues`.
pub fn register_all(
    mut monitor: Monitor,
    context: &JobContext,
    options: &WorkerOptions,
    worker_id: &str,
    backends: &Backends,
) -> anyhow::Result<Monitor> {
    for queue in &options.queues {
        monitor = match queue.as_str() {
            EMAILS => add_worker::<EmailJob, _, _>(
                monitor,
                EMAILS,
                context,
                options,
                worker_id,
                backends,
                Duration::from_secs(60),
                email::handle,
            ),
            REPORTS => add_worker::<ReportJob, _, _>(
                monitor,
                REPORTS,
                context,
                options,
                worker_id,
                backends,
                Duration::from_secs(30 * 60),
                report::handle,
            ),
            WEBHOOKS => add_worker::<WebhookJob, _, _>(
                monitor,
                WEBHOOKS,
                context,
                options,
                worker_id,
                backends,
                // The request has its own timeout; this only catches a handler stuck elsewhere.
                context.services.config.webhooks.timeout + Duration::from_secs(30),
                webhook::handle,
            ),
            // Imports of large files take a while; the lease is renewed as long as they run.
            UPLOADS => add_worker::<UploadJob, _, _>(
                monitor,
                UPLOADS,
                context,
                options,
                worker_id,
                backends,
                Duration::from_secs(15 * 60),
                upload::handle,
            ),
            other => {
                tracing::warn!(
                    queue = other,
                    "no handler for this queue in this build; not serving it"
                );
                monitor
            }
        };
    }
    Ok(monitor)
}
