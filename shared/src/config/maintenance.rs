//! Housekeeping the workers run by themselves (`MaintenanceConfig`): when each maintenance task
//! runs (a cron expression per task, or `off`) and how long what it removes is kept.

use std::time::Duration;

use super::{ConfigError, Source, secs};
use crate::queue::schedule::Recurrence;

/// When each maintenance task runs and what it keeps.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// The time zone the cron expressions are read in (`MAINTENANCE_TIME_ZONE`, IANA name).
    pub time_zone: String,
    /// Deleting idempotency keys past their expiry
    /// (`MAINTENANCE_PURGE_IDEMPOTENCY_KEYS_CRON`; `None`: off).
    pub purge_idempotency_keys: Option<Recurrence>,
    /// Deleting dead jobs older than `dead_job_retention` (`MAINTENANCE_TRIM_DEAD_JOBS_CRON`).
    pub trim_dead_jobs: Option<Recurrence>,
    /// How long a dead job stays for operators to look at and retry
    /// (`DEAD_JOB_RETENTION_DAYS`).
    pub dead_job_retention: Duration,
}

impl MaintenanceConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let time_zone = env
            .raw("MAINTENANCE_TIME_ZONE")
            .unwrap_or_else(|| "UTC".to_owned());
        // Checked on its own so a bad zone names its own variable, not the first cron.
        Recurrence::cron("0 0 0 * * *", &time_zone).map_err(|e| ConfigError::Invalid {
            name: "MAINTENANCE_TIME_ZONE",
            reason: e.to_string(),
        })?;
        let schedule =
            |name: &'static str, default: &str| -> Result<Option<Recurrence>, ConfigError> {
                let expression = env.raw(name).unwrap_or_else(|| default.to_owned());
                if expression.eq_ignore_ascii_case("off") {
                    return Ok(None);
                }
                Recurrence::cron(&expression, &time_zone)
                    .map(Some)
                    .map_err(|e| ConfigError::Invalid {
                        name,
                        reason: format!("{e} (or \"off\")"),
                    })
            };
        let purge_idempotency_keys =
            schedule("MAINTENANCE_PURGE_IDEMPOTENCY_KEYS_CRON", "0 */15 * * * *")?;
        let trim_dead_jobs = schedule("MAINTENANCE_TRIM_DEAD_JOBS_CRON", "0 20 3 * * *")?;
        let days: u64 = env.parse_or("DEAD_JOB_RETENTION_DAYS", 30)?;
        if days == 0 || days > 3650 {
            return Err(ConfigError::Invalid {
                name: "DEAD_JOB_RETENTION_DAYS",
                reason: "must be between 1 and 3650 days".into(),
            });
        }
        Ok(Self {
            time_zone,
            purge_idempotency_keys,
            trim_dead_jobs,
            dead_job_retention: secs(days * 86_400),
        })
    }
}
