//! Turns domain events into email jobs, staged with the change that published them.

use async_trait::async_trait;

use crate::{
    emails::job::EmailJob,
    error::Result,
    events::{DomainEvent, Subscriber},
    jobs::stager::JobStager,
    orders::events::OrderEvent,
    queue::{RunAt, Writes},
    reports::events::ReportEvent,
    users::events::UserEvent,
};

/// Stages the email that goes with each event.
#[derive(Debug, Clone, Default)]
pub struct EmailSubscriber {
    jobs: JobStager,
}

impl EmailSubscriber {
    /// A subscriber staging its jobs through `jobs`.
    pub fn new(jobs: JobStager) -> Self {
        Self { jobs }
    }
}

#[async_trait]
impl Subscriber for EmailSubscriber {
    fn name(&self) -> &'static str {
        "emails"
    }

    async fn handle(&self, writes: &mut Writes, event: &DomainEvent) -> Result<()> {
        let job = match event {
            DomainEvent::User(UserEvent::Registered { user_id }) => {
                EmailJob::Welcome { user_id: *user_id }
            }
            DomainEvent::Order(OrderEvent::Placed { order }) => {
                EmailJob::OrderConfirmation { order_id: order.id }
            }
            DomainEvent::Order(OrderEvent::Cancelled { order }) => {
                EmailJob::OrderCancelled { order_id: order.id }
            }
            DomainEvent::Report(ReportEvent::Ready { report }) => EmailJob::ReportReady {
                report_id: report.id,
            },
            DomainEvent::Order(OrderEvent::StatusChanged { .. }) => return Ok(()),
        };
        self.jobs.stage(writes, &job, RunAt::Now).await?;
        Ok(())
    }
}
