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
    /// Deleting sent-mail records older than `sent_email_retention`
    /// (`MAINTENANCE_PRUNE_SENT_EMAILS_CRON`).
    pub prune_sent_emails: Option<Recurrence>,
    /// How long the record of a sent message is kept (`SENT_EMAIL_RETENTION_DAYS`).
    pub sent_email_retention: Duration,
    /// Deleting finished webhook deliveries older than `webhook_delivery_retention`
    /// (`MAINTENANCE_PRUNE_WEBHOOK_DELIVERIES_CRON`).
    pub prune_webhook_deliveries: Option<Recurrence>,
    /// How long a delivered or failed webhook delivery stays listed
    /// (`WEBHOOK_DELIVERY_RETENTION_DAYS`).
    pub webhook_delivery_retention: Duration,
    /// Expiring reports built more than `report_retention` ago
    /// (`MAINTENANCE_EXPIRE_REPORTS_CRON`).
    pub expire_reports: Option<Recurrence>,
    /// How long a built report stays downloadable (`REPORT_RETENTION_DAYS`).
    pub report_retention: Duration,
    /// Deleting the original files of uploads that finished more than `upload_retention` ago
    /// (`MAINTENANCE_EXPIRE_UPLOADS_CRON`).
    pub expire_uploads: Option<Recurrence>,
    /// How long an upload's original file is kept after its processing finished
    /// (`UPLOAD_RETENTION_DAYS`).
    pub upload_retention: Duration,
}

/// A retention in days, 1 to 3650.
fn days(env: &Source<'_>, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let days: u64 = env.parse_or(name, default)?;
    if days == 0 || days > 3650 {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be between 1 and 3650 days".into(),
        });
    }
    Ok(secs(days * 86_400))
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
        Ok(Self {
            dead_job_retention: days(env, "DEAD_JOB_RETENTION_DAYS", 30)?,
            prune_sent_emails: schedule("MAINTENANCE_PRUNE_SENT_EMAILS_CRON", "0 40 3 * * *")?,
            sent_email_retention: days(env, "SENT_EMAIL_RETENTION_DAYS", 90)?,
            prune_webhook_deliveries: schedule(
                "MAINTENANCE_PRUNE_WEBHOOK_DELIVERIES_CRON",
                "0 50 3 * * *",
            )?,
            webhook_delivery_retention: days(env, "WEBHOOK_DELIVERY_RETENTION_DAYS", 30)?,
            expire_reports: schedule("MAINTENANCE_EXPIRE_REPORTS_CRON", "0 0 4 * * *")?,
            report_retention: days(env, "REPORT_RETENTION_DAYS", 30)?,
            expire_uploads: schedule("MAINTENANCE_EXPIRE_UPLOADS_CRON", "0 10 4 * * *")?,
            upload_retention: days(env, "UPLOAD_RETENTION_DAYS", 30)?,
            time_zone,
            purge_idempotency_keys,
            trim_dead_jobs,
        })
    }
}
