//! The webhook delivery job: one delivery of one event to one endpoint, on the `webhooks`
//! queue. Retries follow the configured schedule (`WEBHOOK_RETRY_SCHEDULE`, Standard Webhooks
//! style: seconds, then minutes, then hours). Each job is in its endpoint's group, so the
//! per-endpoint limits and breaker hold and a slow or failing endpoint takes its own turns
//! only (`WEBHOOK_ENDPOINT_*`, see the engine's `limits`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, JobGroup, Priority, QueueName, RetryPolicy},
};

/// Deliver one stored delivery row (event body and endpoint are read from it when it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The delivery row holding the event body and the endpoint.
    pub delivery_id: Uuid,
    /// The endpoint it goes to: its group. Absent in jobs staged before groups existed, which
    /// then run ungrouped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<Uuid>,
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

    fn group(&self, settings: &JobSettings) -> Option<JobGroup> {
        let key = self.endpoint_id?.to_string();
        Some(if settings.webhook_ordered {
            JobGroup::ordered(key)
        } else {
            JobGroup::new(key)
        })
    }

    /// The request has its own timeout; this only catches a handler stuck elsewhere.
    fn timeout(settings: &JobSettings) -> Duration {
        settings.webhook_request_timeout + Duration::from_secs(30)
    }
}
