//! The upload processing job, on the `uploads` queue: product imports and images, bulk work at
//! low priority. Imports of large files take a while; the lease is renewed as long as they run,
//! within a quarter of an hour.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, Priority, QueueName, RetryPolicy},
};

/// Process one accepted upload (a product import or a product image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJob {
    /// The upload row naming the stored file and what it is for.
    pub upload_id: Uuid,
}

impl Job for UploadJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = QueueName::new("uploads");

    fn kind(&self) -> &'static str {
        "upload.process"
    }

    fn priority(&self) -> Priority {
        Priority::LOW
    }

    fn retry_policy(&self, _: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(10), Duration::from_secs(300))
    }

    fn timeout(_: &JobSettings) -> Duration {
        Duration::from_secs(15 * 60)
    }

    /// Clients follow an upload's processing live (`GET /api/v1/uploads/{id}/events`).
    fn events() -> bool {
        true
    }
}
