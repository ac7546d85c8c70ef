//! The part of the job declarations that comes from configuration: retry delays and time limits
//! operators tune (`WEBHOOK_RETRY_SCHEDULE`, `MAIL_RETRY_BASE_SECS`, `WEBHOOK_TIMEOUT_SECS`).

use std::time::Duration;

use crate::config::Config;

/// What the shop's [`Job`](crate::queue::Job) declarations read from configuration.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Delays between webhook delivery attempts.
    pub webhook_schedule: Vec<Duration>,
    /// First email retry delay (doubling after each failure, capped at 30 minutes).
    pub email_retry_base: Duration,
    /// How long one webhook request may take; a delivery's time limit is this plus a margin.
    pub webhook_request_timeout: Duration,
    /// Each endpoint's deliveries one at a time, in order (`WEBHOOK_ENDPOINT_ORDERED`).
    pub webhook_ordered: bool,
}

impl JobSettings {
    /// The settings `config` gives.
    pub fn from_config(config: &Config) -> Self {
        Self {
            webhook_schedule: config.webhooks.retry_schedule.clone(),
            email_retry_base: config.mail.retry_base,
            webhook_request_timeout: config.webhooks.timeout,
            webhook_ordered: config.webhooks.ordered,
        }
    }
}

impl Default for JobSettings {
    /// Two webhook retries (5 s, 5 min), emails from 5 s, 10 s webhook requests.
    fn default() -> Self {
        Self {
            webhook_schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            email_retry_base: Duration::from_secs(5),
            webhook_request_timeout: Duration::from_secs(10),
            webhook_ordered: false,
        }
    }
}
