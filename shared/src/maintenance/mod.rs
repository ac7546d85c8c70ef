//! Housekeeping that runs itself: built-in schedules ([`schedules`], each configurable or off)
//! enqueue a [`MaintenanceJob`] per tick on the `maintenance` queue, and a worker runs it
//! through [`MaintenanceService`], which asks each domain's service to remove what is past its
//! retention in bounded batches (no long lock, no long Lua call).
//!
//! The schedules are defined again by every worker process at start (keeping their state), so
//! changing a cron variable and restarting the workers is all it takes.

pub mod job;
pub mod service;

pub use job::MaintenanceJob;
pub use service::{MaintainedDomains, MaintenanceService};

use crate::{
    config::MaintenanceConfig,
    jobs::JobSettings,
    queue::{
        Job,
        schedule::{Missed, Recurrence, ScheduleDef},
    },
};

/// The built-in schedules `config` turns on, named `maintenance:<task>`.
pub fn schedules(config: &MaintenanceConfig, settings: &JobSettings) -> Vec<ScheduleDef> {
    let tasks: [(MaintenanceJob, &Option<Recurrence>); 6] = [
        (
            MaintenanceJob::PurgeIdempotencyKeys,
            &config.purge_idempotency_keys,
        ),
        (MaintenanceJob::TrimDeadJobs, &config.trim_dead_jobs),
        (MaintenanceJob::PruneSentEmails, &config.prune_sent_emails),
        (
            MaintenanceJob::PruneWebhookDeliveries,
            &config.prune_webhook_deliveries,
        ),
        (MaintenanceJob::ExpireReports, &config.expire_reports),
        (MaintenanceJob::ExpireUploads, &config.expire_uploads),
    ];
    tasks
        .into_iter()
        .filter_map(|(task, recurrence)| {
            let recurrence = recurrence.clone()?;
            let job = task.spec(settings).ok()?;
            Some(ScheduleDef {
                name: format!("maintenance:{}", task.task_name()),
                recurrence,
                job,
                // Housekeeping missed during downtime is worth doing once when back.
                missed: Missed::RunOnce,
            })
        })
        .collect()
}
