//! The jobs of the `reports` queue: the report build job (bulk work that may wait behind
//! customer-facing jobs, a few retries, and half an hour for one build), and the job a report
//! schedule's tick enqueues, which requests the report of that run. [`ReportsQueueJob`] is what
//! the queue carries: either of them.

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

    /// Clients follow a report's build live (`GET /api/v1/reports/{id}/events`).
    fn events() -> bool {
        true
    }
}

/// Request the report of one run of a report schedule (enqueued by the schedule's tick, or by
/// "run now"): the run's time is read from the job's id
/// ([`ScheduledRun::of_job_id`](crate::reports::schedule::ScheduledRun::of_job_id)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledReportJob {
    /// The schedule (its row says what to request, for whom and which days).
    pub schedule_id: Uuid,
}

impl Job for ScheduledReportJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = ReportJob::QUEUE;

    fn kind(&self) -> &'static str {
        "report.scheduled"
    }

    fn priority(&self) -> Priority {
        Priority::LOW
    }

    fn retry_policy(&self, _: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(5, Duration::from_secs(10), Duration::from_secs(300))
    }

    fn timeout(_: &JobSettings) -> Duration {
        // One short transaction.
        Duration::from_secs(60)
    }
}

/// What the `reports` queue carries (one queue, one job type): a build or a schedule's run.
/// The two payloads differ by their one field (`report_id`, `schedule_id`), so they are told
/// apart without a tag and build jobs read exactly as before schedules existed. Jobs are staged
/// as their own types; this is what the worker decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReportsQueueJob {
    /// Build a report.
    Build(ReportJob),
    /// Request the report of a schedule's run.
    Scheduled(ScheduledReportJob),
}

impl Job for ReportsQueueJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = ReportJob::QUEUE;

    fn kind(&self) -> &'static str {
        match self {
            Self::Build(job) => job.kind(),
            Self::Scheduled(job) => job.kind(),
        }
    }

    fn priority(&self) -> Priority {
        match self {
            Self::Build(job) => job.priority(),
            Self::Scheduled(job) => job.priority(),
        }
    }

    fn retry_policy(&self, settings: &JobSettings) -> RetryPolicy {
        match self {
            Self::Build(job) => job.retry_policy(settings),
            Self::Scheduled(job) => job.retry_policy(settings),
        }
    }

    /// The queue's workers have one time limit: the longer of the two.
    fn timeout(settings: &JobSettings) -> Duration {
        ReportJob::timeout(settings).max(ScheduledReportJob::timeout(settings))
    }

    fn events() -> bool {
        ReportJob::events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reports_queue_tells_builds_from_scheduled_runs_by_their_field() {
        let id = Uuid::now_v7();
        let settings = JobSettings::default();
        let build = ReportJob { report_id: id }.spec(&settings).unwrap();
        let run = ScheduledReportJob { schedule_id: id }
            .spec(&settings)
            .unwrap();
        assert_eq!(
            (build.queue.as_str(), run.queue.as_str()),
            ("reports", "reports")
        );
        assert_eq!(run.kind, "report.scheduled");
        assert_eq!(
            serde_json::from_value::<ReportsQueueJob>(build.payload).unwrap(),
            ReportsQueueJob::Build(ReportJob { report_id: id })
        );
        assert_eq!(
            serde_json::from_value::<ReportsQueueJob>(run.payload).unwrap(),
            ReportsQueueJob::Scheduled(ScheduledReportJob { schedule_id: id })
        );
        assert!(serde_json::from_value::<ReportsQueueJob>(serde_json::json!({"x": 1})).is_err());
    }
}
