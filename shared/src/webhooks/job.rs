//! The jobs of the `webhooks` queue ([`WebhooksQueueJob`] is what it carries):
//!
//! - [`WebhookJob`]: one delivery of one event to one endpoint. Retries follow the configured
//!   schedule (`WEBHOOK_RETRY_SCHEDULE`, Standard Webhooks style: seconds, then minutes, then
//!   hours). Each job is in its endpoint's group, so the per-endpoint limits and breaker hold
//!   and a slow or failing endpoint takes its own turns only (`WEBHOOK_ENDPOINT_*`, see the
//!   engine's `limits`).
//! - [`WebhookFanOutJob`]: the deliveries one event wrote, to be queued as one [`WebhookJob`]
//!   each. An event's deliveries are written by the statement that makes the change (an order
//!   is one statement), which cannot stage one job per delivery without the api reading the
//!   deliveries first; it stages this one job, carrying them, only when there are any. Right
//!   after the commit the outbox pushes the delivery jobs in its place
//!   ([`WebhookFanOutJob::expansion`]); a worker runs it only when the relay pushed it (after a
//!   crash).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, JobGroup, JobSpec, Priority, QueueName, RetryPolicy, StagedJob},
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

/// A delivery as the statement that wrote it returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    /// The delivery row's id, which becomes its job's id.
    pub id: Uuid,
    /// The endpoint it goes to.
    pub endpoint_id: Uuid,
}

/// Queue one [`WebhookJob`] per delivery of an event (each with the delivery's id as its job
/// id, so queueing them twice makes no second job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookFanOutJob {
    /// Filled in by the statement that writes the deliveries (staged empty).
    pub rows: Vec<DeliveryRow>,
}

impl WebhookFanOutJob {
    /// The delivery jobs it queues, each with its delivery's id as its id.
    pub fn deliveries(&self, settings: &JobSettings) -> serde_json::Result<Vec<StagedJob>> {
        self.rows
            .iter()
            .map(|row| {
                let job = WebhookJob {
                    delivery_id: row.id,
                    endpoint_id: Some(row.endpoint_id),
                };
                Ok(StagedJob {
                    id: row.id,
                    spec: job.spec(settings)?,
                })
            })
            .collect()
    }

    /// The outbox's expansion of a staged fan-out job (`Outbox::with_expansion`): right after
    /// the commit that wrote the deliveries, the api pushes their jobs itself, and a worker runs
    /// the fan-out job only when the relay pushed it instead (after a crash).
    pub fn expansion(
        settings: JobSettings,
    ) -> impl Fn(&JobSpec) -> Option<Vec<StagedJob>> + Send + Sync + 'static {
        move |spec| {
            // Read from the payload in place: this runs for every order with a subscribed
            // endpoint.
            let job = Self::deserialize(&spec.payload).ok()?;
            job.deliveries(&settings).ok()
        }
    }
}

impl Job for WebhookFanOutJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = WebhookJob::QUEUE;

    fn kind(&self) -> &'static str {
        "webhook.fan_out"
    }

    fn priority(&self) -> Priority {
        Priority::HIGH
    }

    fn retry_policy(&self, _: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(10, Duration::from_secs(1), Duration::from_secs(60))
    }

    fn timeout(_: &JobSettings) -> Duration {
        Duration::from_secs(30)
    }
}

/// What the `webhooks` queue carries: either job, told apart by their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WebhooksQueueJob {
    /// Send one delivery.
    Deliver(WebhookJob),
    /// Queue an event's deliveries.
    FanOut(WebhookFanOutJob),
}

impl Job for WebhooksQueueJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = WebhookJob::QUEUE;

    fn kind(&self) -> &'static str {
        match self {
            Self::Deliver(job) => job.kind(),
            Self::FanOut(job) => job.kind(),
        }
    }

    fn priority(&self) -> Priority {
        match self {
            Self::Deliver(job) => job.priority(),
            Self::FanOut(job) => job.priority(),
        }
    }

    fn retry_policy(&self, settings: &JobSettings) -> RetryPolicy {
        match self {
            Self::Deliver(job) => job.retry_policy(settings),
            Self::FanOut(job) => job.retry_policy(settings),
        }
    }

    fn group(&self, settings: &JobSettings) -> Option<JobGroup> {
        match self {
            Self::Deliver(job) => job.group(settings),
            Self::FanOut(_) => None,
        }
    }

    /// The queue's workers have one time limit: the longer of the two.
    fn timeout(settings: &JobSettings) -> Duration {
        WebhookJob::timeout(settings).max(WebhookFanOutJob::timeout(settings))
    }
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
