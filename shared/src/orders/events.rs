//! Events of the orders domain.
//!
//! Each event carries the order as it stands after the change (event-carried state): a
//! subscriber that describes the order (the webhook payload) has it in hand and does not read
//! it back, which saves two queries on every order placed (and lets an order be one statement).

use serde::Serialize;
use uuid::Uuid;

use crate::orders::model::{Order, OrderStatus};

/// Something that happened to an order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// A customer placed an order (stock is reserved).
    Placed {
        /// The order as placed.
        order: Order,
    },
    /// An order was cancelled and its stock returned.
    Cancelled {
        /// The order, now cancelled.
        order: Order,
    },
    /// An order moved to another fulfilment state (shipped, delivered...).
    StatusChanged {
        /// The order in its new state.
        order: Order,
        /// Previous state.
        from: OrderStatus,
    },
}

impl OrderEvent {
    /// Dotted event name, also the webhook event type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "order.placed",
            Self::Cancelled { .. } => "order.cancelled",
            Self::StatusChanged { .. } => "order.status_changed",
        }
    }

    /// The order concerned, after the change.
    pub fn order(&self) -> &Order {
        match self {
            Self::Placed { order }
            | Self::Cancelled { order }
            | Self::StatusChanged { order, .. } => order,
        }
    }

    /// The order's id.
    pub fn order_id(&self) -> Uuid {
        self.order().id
    }
}
