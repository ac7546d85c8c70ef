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
    error::AppError,
    queue::{JobSpec, Priority, RetryPolicy, UnitOfWork, outbox},
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

/// The queues a worker serves: `listed` (from `WORKER_QUEUES` or `--queues`), or every queue
/// when none is listed. An unknown name is refused with a message naming it and the known ones.
pub fn queues_to_serve(listed: &[String]) -> Result<Vec<String>, String> {
    if listed.is_empty() {
        return Ok(QUEUES.iter().map(|q| (*q).to_owned()).collect());
    }
    match listed.iter().find(|q| !QUEUES.contains(&q.as_str())) {
        Some(unknown) => Err(format!(
            "unknown queue {unknown:?} (known: {})",
            QUEUES.join(", ")
        )),
        None => Ok(listed.to_vec()),
    }
}

/// Retry settings that come from configuration.
#[derive(Debug, Clone)]
pub struct JobPolicies {
    /// Delays between webhook delivery attempts.
    pub webhook_schedule: Vec<Duration>,
    /// First email retry delay (doubling after each failure, capped at 30 minutes).
    pub email_retry_base: Duration,
}

impl Default for JobPolicies {
    fn default() -> Self {
        Self {
            webhook_schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            email_retry_base: Duration::from_secs(5),
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
    Ok(outbox::stage(uow, job.spec(policies)).await?)
}

/// Emails. Transient SMTP failures retry with exponential backoff (5 s, 10 s, ... up to 30 min;
/// eight attempts span about an hour by default).
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

    fn retry_policy(&self, policies: &JobPolicies) -> RetryPolicy {
        RetryPolicy::exponential(8, policies.email_retry_base, Duration::from_secs(1800))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_to_serve_defaults_to_all_and_refuses_unknown_names() {
        assert_eq!(queues_to_serve(&[]).unwrap().len(), QUEUES.len());
        let listed = vec!["emails".to_owned(), "reports".to_owned()];
        assert_eq!(queues_to_serve(&listed).unwrap(), listed);
        let error = queues_to_serve(&["emails".into(), "bananas".into()]).unwrap_err();
        assert!(
            error.contains("\"bananas\"") && error.contains("webhooks"),
            "{error}"
        );
    }
}
