//! In-process domain events: the EventEmitter2 pattern of the article, made transactional.
//!
//! A service publishes what happened ([`DomainEvent`]) and knows nothing of who listens.
//! Subscribers are registered once at start-up ([`EventBus::builder`]) and add their writes to
//! the *publishing operation's* [`Writes`] (outbox jobs for emails, webhook deliveries), which go
//! to PostgreSQL with the change itself, in one statement: they commit or roll back together.
//! A subscriber writes; it does not read, so an operation's writes can be sent as one statement
//! of their own (an order). Adding a subscriber touches no service.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::{
    error::Result,
    orders::events::OrderEvent,
    queue::{Staging, Writes},
    reports::events::ReportEvent,
    users::events::UserEvent,
};

/// Everything a domain announces. Each domain defines its own events; this enum is the envelope.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DomainEvent {
    /// Something happened to a user account.
    User(UserEvent),
    /// Something happened to an order.
    Order(OrderEvent),
    /// Something happened to a report.
    Report(ReportEvent),
}

impl DomainEvent {
    /// A stable dotted name (`order.placed`), used in logs and as the webhook event type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::User(e) => e.name(),
            Self::Order(e) => e.name(),
            Self::Report(e) => e.name(),
        }
    }
}

/// Reacts to domain events by adding to the publishing operation's writes.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Handles one event. An error fails the whole operation, which then writes nothing.
    async fn handle(&self, writes: &mut Writes, event: &DomainEvent) -> Result<()>;
}

/// The set of subscribers, shared by every service that publishes.
#[derive(Clone, Default)]
pub struct EventBus {
    subscribers: Arc<Vec<Arc<dyn Subscriber>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.subscribers.iter().map(|s| s.name()).collect();
        f.debug_struct("EventBus")
            .field("subscribers", &names)
            .finish()
    }
}

impl EventBus {
    /// Starts a bus with no subscribers.
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// Runs every subscriber, in registration order, adding to the writes of `to` (a unit of
    /// work, or an operation's own [`Writes`]).
    #[tracing::instrument(skip_all, fields(event = event.name()))]
    pub async fn publish(&self, to: &mut impl Staging, event: DomainEvent) -> Result<()> {
        for subscriber in self.subscribers.iter() {
            subscriber.handle(to.writes(), &event).await?;
        }
        Ok(())
    }
}

/// Collects subscribers at start-up.
#[derive(Default)]
pub struct EventBusBuilder {
    subscribers: Vec<Arc<dyn Subscriber>>,
}

impl EventBusBuilder {
    /// Adds a subscriber.
    pub fn subscribe(mut self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    /// Finishes the bus.
    pub fn build(self) -> EventBus {
        EventBus {
            subscribers: Arc::new(self.subscribers),
        }
    }
}
