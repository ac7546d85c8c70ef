//! The maintenance job: one task of housekeeping, on the `maintenance` queue, at the lowest
//! priority (it never delays shop work) with a few retries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, Priority, QueueName, RetryPolicy},
};

/// One housekeeping task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum MaintenanceJob {
    /// Delete idempotency keys past their expiry (24 hours after their request).
    PurgeIdempotencyKeys,
    /// Delete dead jobs of every queue that died more than `DEAD_JOB_RETENTION_DAYS` ago.
    TrimDeadJobs,
    /// Delete sent-mail records older than `SENT_EMAIL_RETENTION_DAYS`.
    PruneSentEmails,
    /// Delete delivered and failed webhook deliveries older than
    /// `WEBHOOK_DELIVERY_RETENTION_DAYS`.
    PruneWebhookDeliveries,
    /// Delete the files of reports built more than `REPORT_RETENTION_DAYS` ago; their rows say
    /// `expired`.
    ExpireReports,
    /// Delete the original files of uploads that finished (completed, failed or cancelled) more
    /// than `UPLOAD_RETENTION_DAYS` ago; their rows keep their outcome and say `expired_at`.
    ExpireUploads,
}

impl MaintenanceJob {
    /// The task's name in schedule names and logs (`purge_idempotency_keys`).
    pub fn task_name(self) -> &'static str {
        match self {
            Self::PurgeIdempotencyKeys => "purge_idempotency_keys",
            Self::TrimDeadJobs => "trim_dead_jobs",
            Self::PruneSentEmails => "prune_sent_emails",
            Self::PruneWebhookDeliveries => "prune_webhook_deliveries",
            Self::ExpireReports => "expire_reports",
            Self::ExpireUploads => "expire_uploads",
        }
    }
}

impl Job for MaintenanceJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = QueueName::new("maintenance");

    fn kind(&self) -> &'static str {
        match self {
            Self::PurgeIdempotencyKeys => "maintenance.purge_idempotency_keys",
            Self::TrimDeadJobs => "maintenance.trim_dead_jobs",
            Self::PruneSentEmails => "maintenance.prune_sent_emails",
            Self::PruneWebhookDeliveries => "maintenance.prune_webhook_deliveries",
            Self::ExpireReports => "maintenance.expire_reports",
            Self::ExpireUploads => "maintenance.expire_uploads",
        }
    }

    fn priority(&self) -> Priority {
        Priority::LOWEST
    }

    fn retry_policy(&self, _: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(30), Duration::from_secs(600))
    }

    fn timeout(_: &JobSettings) -> Duration {
        Duration::from_secs(10 * 60)
    }
}
