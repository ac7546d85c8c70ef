//! Turns domain events into email jobs, staged in the publishing transaction.

use async_trait::async_trait;

use crate::{
    error::Result,
    events::{DomainEvent, Subscriber},
    jobs::{EmailJob, JobPolicies, stage},
    orders::events::OrderEvent,
    queue::UnitOfWork,
    reports::events::ReportEvent,
    users::events::UserEvent,
};

/// Stages the email that goes with each event.
#[derive(Debug, Clone, Default)]
pub struct EmailSubscriber {
    policies: JobPolicies,
}

impl EmailSubscriber {
    /// A subscriber using `policies` for the jobs it stages.
    pub fn new(policies: JobPolicies) -> Self {
        Self { policies }
    }
}

#[async_trait]
impl Subscriber for EmailSubscriber {
    fn name(&self) -> &'static str {
        "emails"
    }

    async fn handle(&self, uow: &mut UnitOfWork, event: &DomainEvent) -> Result<()> {
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
        stage(uow, &job, &self.policies).await?;
        Ok(())
    }
}
