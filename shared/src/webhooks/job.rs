//! The webhook delivery job: one delivery of one event to one endpoint, on the `webhooks`
//! queue. Retries follow the configured schedule (`WEBHOOK_RETRY_SCHEDULE`, Standard Webhooks
//! style: seconds, then minutes, then hours).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, Priority, QueueName, RetryPolicy},
};

/// Deliver one stored delivery row (event body and endpoint are read from it when it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The delivery row holding the event body and the endpoint.
    pub delivery_id: Uuid,
}

impl Job for WebhookJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = QueueName::new("webhooks");

    fn kind(&self) -> &'static str {
        "webhook.deliver"
    }

    fn priority(&self) -> Priority {
        Priority::HIGH
    }

    fn retry_policy(&self, settings: &JobSettings) -> RetryPolicy {
        RetryPolicy::schedule(&settings.webhook_schedule)
    }

    /// The request has its own timeout; this only catches a handler stuck elsewhere.
    fn timeout(settings: &JobSettings) -> Duration {
        settings.webhook_request_timeout + Duration::from_secs(30)
    }
}
