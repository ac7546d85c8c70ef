//! Maintenance: one housekeeping task per job, enqueued by the built-in schedules
//! (`orderly::maintenance::schedules`). Each task removes only what is past its retention, so
//! running one twice, or two at once from two ticks, is harmless.

use apalis_core::task::data::Data;
use orderly::maintenance::MaintenanceJob;
use orderly::queue::{JobError, JobInfo};

use crate::context::JobContext;

/// Runs one maintenance task.
pub async fn handle(
    task: MaintenanceJob,
    ctx: Data<JobContext>,
    _info: Data<JobInfo>,
) -> Result<(), JobError> {
    ctx.services.maintenance.run(task).await?;
    Ok(())
}
