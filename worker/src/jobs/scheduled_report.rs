//! Scheduled reports: a report schedule's tick (or an operator's "run now") enqueues a
//! `report.scheduled` job whose id names the schedule and the run's time. The handler requests
//! that run's report through `ReportScheduleService::run`, which inserts the report and stages
//! its build in one transaction; the build job then makes and emails it like any report.
//!
//! Idempotent: a run makes at most one report (a unique index on the schedule and the run's
//! time, which every attempt of the job reads the same from its id), so a retry does nothing
//! more. A schedule deleted or paused since the tick was enqueued makes nothing.

use apalis_core::task::data::Data;
use orderly::{
    jobs::ScheduledReportJob,
    queue::{JobError, JobInfo},
    reports::ScheduledRun,
};

use crate::context::JobContext;

/// Requests the report of one run of a schedule.
#[tracing::instrument(skip_all, fields(schedule_id = %job.schedule_id, job_id = %info.id))]
pub async fn handle(
    job: ScheduledReportJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    let Some((schedule_id, run)) = ScheduledRun::of_job_id(&info.id) else {
        // Only the engine's ticks and "run now" make these jobs; without a run time from the
        // id there is no telling which days to cover, nor whether a retry already did.
        tracing::warn!("a scheduled report job whose id is not a schedule run's; ignored");
        return Ok(());
    };
    if schedule_id != job.schedule_id {
        tracing::warn!(%schedule_id, "the job's id names another schedule than its payload; ignored");
        return Ok(());
    }
    ctx.services.report_schedules.run(schedule_id, run).await?;
    Ok(())
}
