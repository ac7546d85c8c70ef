//! [`MaintenanceService`]: runs one housekeeping task by asking the domain that owns the data
//! (idempotency keys through `IdempotencyService`, dead jobs through the queue engine).

use std::time::Duration;

use crate::{
    error::AppError, idempotency::IdempotencyService, maintenance::job::MaintenanceJob,
    queue::QueueEngine,
};

/// Runs maintenance tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    idempotency: IdempotencyService,
    queue: QueueEngine,
    queues: Vec<&'static str>,
    dead_job_retention: Duration,
}

impl MaintenanceService {
    /// A service over the domains it cleans; `queues` are the queues whose dead jobs it trims.
    pub fn new(
        idempotency: IdempotencyService,
        queue: QueueEngine,
        queues: Vec<&'static str>,
        dead_job_retention: Duration,
    ) -> Self {
        Self {
            idempotency,
            queue,
            queues,
            dead_job_retention,
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
                    total += self.queue.trim_dead(queue, self.dead_job_retention).await?;
                }
                total
            }
        };
        tracing::info!(removed, "maintenance task done");
        Ok(removed)
    }
}
