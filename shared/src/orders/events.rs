//! Events of the orders domain.

use serde::Serialize;
use uuid::Uuid;

use crate::orders::model::OrderStatus;

/// Something that happened to an order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// A customer placed an order (stock is reserved).
    Placed {
        /// The order.
        order_id: Uuid,
        /// Its owner.
        user_id: Uuid,
    },
    /// An order was cancelled and its stock returned.
    Cancelled {
        /// The order.
        order_id: Uuid,
        /// Its owner.
        user_id: Uuid,
    },
    /// An order moved to another fulfilment state (shipped, delivered...).
    StatusChanged {
        /// The order.
        order_id: Uuid,
        /// Its owner.
        user_id: Uuid,
        /// Previous state.
        from: OrderStatus,
        /// New state.
        to: OrderStatus,
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

    /// The order concerned.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Placed { order_id, .. }
            | Self::Cancelled { order_id, .. }
            | Self::StatusChanged { order_id, .. } => *order_id,
        }
    }
}
