//! The report build job, on the `reports` queue: bulk work that may wait behind customer-facing
//! jobs, a few retries, and half an hour for one build.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, Priority, QueueName, RetryPolicy},
};

/// Build one requested report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJob {
    /// The report row saying what to build and for whom.
    pub report_id: Uuid,
}

impl Job for ReportJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = QueueName::new("reports");

    fn kind(&self) -> &'static str {
        "report.build"
    }

    fn priority(&self) -> Priority {
        Priority::LOW
    }

    fn retry_policy(&self, _: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(10), Duration::from_secs(300))
    }

    fn timeout(_: &JobSettings) -> Duration {
        Duration::from_secs(30 * 60)
    }
}
