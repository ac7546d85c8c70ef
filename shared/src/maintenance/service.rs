//! [`MaintenanceService`]: runs one housekeeping task by asking the domain that owns the data
//! (idempotency keys through `IdempotencyService`, dead jobs through the queue engine, the
//! sent-mail log through `SentEmailService`, webhook deliveries through `WebhookService`,
//! report files through `ReportService`, upload originals through `UploadService`).

use std::time::Duration;

use crate::{
    config::MaintenanceConfig, emails::SentEmailService, error::AppError,
    idempotency::IdempotencyService, maintenance::job::MaintenanceJob, queue::QueueEngine,
    reports::ReportService, uploads::UploadService, webhooks::WebhookService,
};

/// The domain services whose old records maintenance removes, each through its own rules.
#[derive(Debug, Clone)]
pub struct MaintainedDomains {
    /// Expired idempotency keys.
    pub idempotency: IdempotencyService,
    /// The sent-mail log.
    pub sent_emails: SentEmailService,
    /// Finished webhook deliveries.
    pub webhooks: WebhookService,
    /// Built reports' files.
    pub reports: ReportService,
    /// Finished uploads' original files.
    pub uploads: UploadService,
}

/// Runs maintenance tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    idempotency: IdempotencyService,
    sent_emails: SentEmailService,
    webhooks: WebhookService,
    reports: ReportService,
    uploads: UploadService,
    queue: QueueEngine,
    queues: Vec<&'static str>,
    retention: Retentions,
}

/// How long each kind of record is kept.
#[derive(Debug, Clone, Copy)]
struct Retentions {
    dead_jobs: Duration,
    sent_emails: Duration,
    webhook_deliveries: Duration,
    reports: Duration,
    uploads: Duration,
}

impl MaintenanceService {
    /// A service over the domains it cleans; `queues` are the queues whose dead jobs it trims,
    /// `config` says how long each kind of record is kept.
    pub fn new(
        domains: MaintainedDomains,
        queue: QueueEngine,
        queues: Vec<&'static str>,
        config: &MaintenanceConfig,
    ) -> Self {
        let MaintainedDomains {
            idempotency,
            sent_emails,
            webhooks,
            reports,
            uploads,
        } = domains;
        Self {
            idempotency,
            sent_emails,
            webhooks,
            reports,
            uploads,
            queue,
            queues,
            retention: Retentions {
                dead_jobs: config.dead_job_retention,
                sent_emails: config.sent_email_retention,
                webhook_deliveries: config.webhook_delivery_retention,
                reports: config.report_retention,
                uploads: config.upload_retention,
            },
        }
    }

    /// Runs `task`; returns how many rows or jobs it removed.
    #[tracing::instrument(skip(self), fields(task = task.task_name()))]
    pub async fn run(&self, task: MaintenanceJob) -> Result<u64, AppError> {
        let removed = match task {
            MaintenanceJob::PurgeIdempotencyKeys => self.idempotency.purge_expired().await?,
            MaintenanceJob::TrimDeadJobs => {
                let mut total = 0;
                for queue in &self.queues {
                    total += self
                        .queue
                        .trim_dead(queue, self.retention.dead_jobs)
                        .await?;
                }
                total
            }
            MaintenanceJob::PruneSentEmails => {
                self.sent_emails.prune(self.retention.sent_emails).await?
            }
            MaintenanceJob::PruneWebhookDeliveries => {
                self.webhooks
                    .prune_deliveries(self.retention.webhook_deliveries)
                    .await?
            }
            MaintenanceJob::ExpireReports => {
                self.reports.expire_old(self.retention.reports).await?
            }
            MaintenanceJob::ExpireUploads => {
                self.uploads.expire_old(self.retention.uploads).await?
            }
        };
        tracing::info!(removed, "maintenance task done");
        Ok(removed)
    }
}
