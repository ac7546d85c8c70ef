//! The shop's jobs: which queues exist, what each job carries (ids, never entities), its
//! priority and its retry policy, and the subscriber that turns domain events into jobs.
//!
//! One queue per job family so operators scale and pause them separately
//! (`orderly-worker --queues emails,webhooks`); priorities inside a queue put customer-facing
//! work (order confirmations) before bulk work.

pub mod subscriber;

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    db::UnitOfWork,
    error::AppError,
    queue::{JobSpec, Priority, RetryPolicy, outbox},
};

/// Order, welcome and report emails.
pub const EMAILS: &str = "emails";
/// Signed webhook deliveries.
pub const WEBHOOKS: &str = "webhooks";
/// Report builds.
pub const REPORTS: &str = "reports";
/// Upload processing (imports, images).
pub const UPLOADS: &str = "uploads";
/// Every queue, in the order the dashboard lists them.
pub const QUEUES: [&str; 4] = [EMAILS, WEBHOOKS, REPORTS, UPLOADS];

/// Retry settings that come from configuration.
#[derive(Debug, Clone)]
pub struct JobPolicies {
    /// Delays between webhook delivery attempts.
    pub webhook_schedule: Vec<Duration>,
}

impl Default for JobPolicies {
    fn default() -> Self {
        Self {
            webhook_schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
        }
    }
}

/// A job the shop stages: its queue, kind, priority and retry policy.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The queue it runs on.
    const QUEUE: &'static str;
    /// Its kind (`email.order_confirmation`), shown on the dashboard and in logs.
    fn kind(&self) -> &'static str;
    /// Its priority.
    fn priority(&self) -> Priority;
    /// Attempts and backoff.
    fn retry_policy(&self, policies: &JobPolicies) -> RetryPolicy;

    /// The engine's spec for this job.
    fn spec(&self, policies: &JobPolicies) -> JobSpec {
        JobSpec::new(
            Self::QUEUE,
            self.kind(),
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
        .with_priority(self.priority())
        .with_retry(self.retry_policy(policies))
    }
}

/// Stages `job` in the outbox of `uow`.
pub async fn stage<J: Job>(
    uow: &mut UnitOfWork,
    job: &J,
    policies: &JobPolicies,
) -> Result<Uuid, AppError> {
    outbox::stage(uow, job.spec(policies)).await
}

/// Emails. Transient SMTP failures retry with exponential backoff for about an hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EmailJob {
    /// "Thanks for your order", with its lines and total.
    OrderConfirmation {
        /// The order.
        order_id: Uuid,
    },
    /// "Your order was cancelled".
    OrderCancelled {
        /// The order.
        order_id: Uuid,
    },
    /// Welcome to a new account.
    Welcome {
        /// The new user.
        user_id: Uuid,
    },
    /// "Your report is ready", with the download link.
    ReportReady {
        /// The report.
        report_id: Uuid,
    },
}

impl Job for EmailJob {
    const QUEUE: &'static str = EMAILS;

    fn kind(&self) -> &'static str {
        match self {
            Self::OrderConfirmation { .. } => "email.order_confirmation",
            Self::OrderCancelled { .. } => "email.order_cancelled",
            Self::Welcome { .. } => "email.welcome",
            Self::ReportReady { .. } => "email.report_ready",
        }
    }

    fn priority(&self) -> Priority {
        match self {
            Self::OrderConfirmation { .. } | Self::OrderCancelled { .. } => Priority::HIGH,
            Self::Welcome { .. } | Self::ReportReady { .. } => Priority::NORMAL,
        }
    }

    fn retry_policy(&self, _: &JobPolicies) -> RetryPolicy {
        RetryPolicy::exponential(8, Duration::from_secs(5), Duration::from_secs(1800))
    }
}

/// One delivery of one event to one webhook endpoint. Retries follow the configured schedule
/// (Standard Webhooks style: seconds, then minutes, then hours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The delivery row holding the event body and the endpoint.
    pub delivery_id: Uuid,
}

impl Job for WebhookJob {
    const QUEUE: &'static str = WEBHOOKS;

    fn kind(&self) -> &'static str {
        "webhook.deliver"
    }

    fn priority(&self) -> Priority {
        Priority::HIGH
    }

    fn retry_policy(&self, policies: &JobPolicies) -> RetryPolicy {
        RetryPolicy::schedule(&policies.webhook_schedule)
    }
}

/// Build a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJob {
    /// The report row.
    pub report_id: Uuid,
}

impl Job for ReportJob {
    const QUEUE: &'static str = REPORTS;

    fn kind(&self) -> &'static str {
        "report.build"
    }

    fn priority(&self) -> Priority {
        Priority::LOW
    }

    fn retry_policy(&self, _: &JobPolicies) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(10), Duration::from_secs(300))
    }
}

/// Process an upload (product import or product image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJob {
    /// The upload row.
    pub upload_id: Uuid,
}

impl Job for UploadJob {
    const QUEUE: &'static str = UPLOADS;

    fn kind(&self) -> &'static str {
        "upload.process"
    }

    fn priority(&self) -> Priority {
        Priority::LOW
    }

    fn retry_policy(&self, _: &JobPolicies) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(10), Duration::from_secs(300))
    }
}
