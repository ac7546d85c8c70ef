//! The shop's job types and the queues they make. Each job type is declared once, in its
//! domain, as an implementation of [`Job`](crate::queue::Job) (queue, kinds, priority, retry
//! policy, time limit): [`EmailJob`], [`WebhookJob`] and [`WebhookFanOutJob`] (both on the
//! `webhooks` queue, which carries [`WebhooksQueueJob`]), [`ReportJob`] and [`ScheduledReportJob`]
//! (both on the `reports` queue, which carries [`ReportsQueueJob`]), [`UploadJob`],
//! [`MaintenanceJob`]. [`QUEUES`] lists their queues, and everything that names queues derives
//! from it: the worker's `--queues`/`WORKER_QUEUES` check ([`queues_to_serve`]), the handlers a
//! worker must have, the dashboard and the metrics. Jobs are staged one way, [`JobStager::stage`];
//! the job behind a report or an upload is cancelled and followed live through [`JobLifecycle`].
//!
//! One queue per job type, so operators scale and pause them separately
//! (`orderly-worker --queues emails,webhooks`); priorities inside a queue put customer-facing
//! work (order confirmations) before bulk work.
//!
//! Adding a job type: declare it in its domain's `job.rs`, list its queue here, stage it with
//! [`JobStager::stage`] from a service, and give the worker a handler (one file and one
//! `.handle(...)` line in `worker/src/jobs/mod.rs`; a worker refuses to start with a listed
//! queue that has no handler).

pub mod lifecycle;
pub mod settings;
pub mod stager;

pub use crate::{
    emails::job::EmailJob,
    maintenance::job::MaintenanceJob,
    reports::job::{ReportJob, ReportsQueueJob, ScheduledReportJob},
    uploads::job::UploadJob,
    webhooks::job::{DeliveryRow, WebhookFanOutJob, WebhookJob, WebhooksQueueJob},
};
pub use lifecycle::{JobLifecycle, LiveUpdate, RowCancel};
pub use settings::JobSettings;
pub use stager::JobStager;

use crate::queue::{Job, QueueName};

/// Every queue, in the order the dashboard lists them: one per job type.
pub const QUEUES: [QueueName; 5] = [
    EmailJob::QUEUE,
    WebhookJob::QUEUE,
    ReportJob::QUEUE,
    UploadJob::QUEUE,
    MaintenanceJob::QUEUE,
];

/// [`QUEUES`] as the engine's calls take them (`&str`), in the same order.
pub const QUEUE_NAMES: [&str; QUEUES.len()] = names(QUEUES);

const fn names<const N: usize>(queues: [QueueName; N]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = queues[i].as_str();
        i += 1;
    }
    names
}

/// The queue of that name, if the shop has one.
pub fn queue_named(name: &str) -> Option<QueueName> {
    QUEUES.into_iter().find(|queue| *queue == name)
}

/// The queues a worker serves: `listed` (from `WORKER_QUEUES` or `--queues`), or every queue
/// when none is listed. An unknown name is refused with a message naming it and the known ones.
pub fn queues_to_serve(listed: &[String]) -> Result<Vec<String>, String> {
    if listed.is_empty() {
        return Ok(QUEUES.iter().map(|q| q.as_str().to_owned()).collect());
    }
    match listed.iter().find(|q| queue_named(q).is_none()) {
        Some(unknown) => Err(format!(
            "unknown queue {unknown:?} (known: {})",
            QUEUES.map(QueueName::as_str).join(", ")
        )),
        None => Ok(listed.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_to_serve_defaults_to_all_and_refuses_unknown_names() {
        assert_eq!(queues_to_serve(&[]).unwrap().len(), QUEUES.len());
        let listed = vec!["emails".to_owned(), "reports".to_owned()];
        assert_eq!(queues_to_serve(&listed).unwrap(), listed);
        let error = queues_to_serve(&["emails".into(), "bananas".into()]).unwrap_err();
        assert!(
            error.contains("\"bananas\"") && error.contains("webhooks"),
            "{error}"
        );
    }

    #[test]
    fn every_job_type_has_a_queue_of_its_own() {
        let mut names = QUEUES.map(QueueName::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), QUEUES.len(), "two job types share a queue");
    }

    #[test]
    fn a_declaration_gives_the_spec_the_engine_stores() {
        let settings = JobSettings::default();
        let spec = EmailJob::OrderConfirmation {
            order_id: uuid::Uuid::nil(),
        }
        .spec(&settings)
        .unwrap();
        assert_eq!(spec.queue, "emails");
        assert_eq!(spec.kind, "email.order_confirmation");
        assert_eq!(spec.priority, crate::queue::Priority::HIGH);
        assert_eq!(spec.retry.max_attempts, 8);
        assert_eq!(spec.payload["type"], "order_confirmation");
        let webhook = WebhookJob {
            delivery_id: uuid::Uuid::nil(),
            endpoint_id: Some(uuid::Uuid::max()),
        }
        .spec(&settings)
        .unwrap();
        assert_eq!(
            webhook.group,
            Some(crate::queue::JobGroup::new(uuid::Uuid::max().to_string())),
            "grouped by endpoint"
        );
        assert_eq!(webhook.retry.max_attempts, 3, "one attempt and two retries");
        assert_eq!(
            WebhookJob::timeout(&settings),
            std::time::Duration::from_secs(40)
        );
    }
}
