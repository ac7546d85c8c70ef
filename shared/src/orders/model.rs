//! The order model, its state machine and the parsed input of a new order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, FieldError};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed, stock reserved, awaiting payment.
    Placed,
    /// Marked paid by an admin; can still be cancelled until it ships.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Marked delivered by an admin; final, no transition leaves it.
    Delivered,
    /// Cancelled; stock returned.
    Cancelled,
}

impl OrderStatus {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// The allowed transitions: placed → paid → shipped → delivered, and cancellation until
    /// the order ships.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Placed, Paid)
                | (Placed, Shipped)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Placed, Cancelled)
                | (Paid, Cancelled)
        )
    }

    /// Whether the customer may still cancel.
    pub fn is_cancellable(self) -> bool {
        self.can_become(OrderStatus::Cancelled)
    }
}

/// One line of an order, as it was when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderItem {
    /// The catalogue product; the line's SKU, name and price below are copies, so later
    /// catalogue edits never change what the order says.
    pub product_id: Uuid,
    /// SKU at the time.
    pub sku: String,
    /// Name at the time.
    pub name: String,
    /// Units ordered, 1..=[`MAX_QUANTITY`]; reserved from stock when the order was placed.
    pub quantity: i32,
    /// Unit price at the time, minor units.
    pub unit_price_cents: i64,
}

impl OrderItem {
    /// Quantity times unit price.
    pub fn line_total_cents(&self) -> i64 {
        self.unit_price_cents * i64::from(self.quantity)
    }
}

/// An order with its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// The customer who placed it: the only non-admin who may see or cancel it.
    pub user_id: Uuid,
    /// Changes only along [`OrderStatus::can_become`].
    pub status: OrderStatus,
    /// Sum of the lines, minor units.
    pub total_cents: i64,
    /// Currency of every line.
    pub currency: String,
    /// Lines, in the order the customer gave them.
    pub items: Vec<OrderItem>,
    /// When the order was placed (set by the database, UTC).
    pub created_at: DateTime<Utc>,
    /// Last status change (kept by a database trigger, UTC).
    pub updated_at: DateTime<Utc>,
}

/// Most lines an order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one product per order.
pub const MAX_QUANTITY: i64 = 1000;

/// A requested line: a product and a quantity, both checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOrderLine {
    /// Appears in at most one line of the order.
    pub product_id: Uuid,
    /// Units, 1..=1000.
    pub quantity: i32,
}

impl NewOrderLine {
    /// Parses the lines of a new order: at least one, at most [`MAX_LINES`], each quantity in
    /// 1..=[`MAX_QUANTITY`], no product twice. Every problem is reported, by field.
    pub fn parse_all(raw: &[(Uuid, i64)]) -> Result<Vec<Self>, AppError> {
        if raw.is_empty() {
            return Err(AppError::invalid_field(
                "items",
                "must contain at least one item",
            ));
        }
        if raw.len() > MAX_LINES {
            return Err(AppError::invalid_field(
                "items",
                format!("must contain at most {MAX_LINES} items"),
            ));
        }
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        let mut lines = Vec::with_capacity(raw.len());
        for (i, &(product_id, quantity)) in raw.iter().enumerate() {
            if !seen.insert(product_id) {
                problems.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "appears more than once; combine the quantities into one line",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                problems.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
                continue;
            }
            lines.push(Self {
                product_id,
                quantity: quantity as i32,
            });
        }
        if !problems.is_empty() {
            return Err(AppError::Unprocessable {
                message: problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                details: problems,
            });
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use OrderStatus::*;
        assert!(Placed.can_become(Paid));
        assert!(Paid.can_become(Shipped));
        assert!(Shipped.can_become(Delivered));
        assert!(Placed.is_cancellable());
        assert!(!Shipped.is_cancellable());
        assert!(!Delivered.can_become(Placed));
        assert!(!Cancelled.can_become(Placed));
    }

    #[test]
    fn lines_are_checked() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert!(NewOrderLine::parse_all(&[]).is_err());
        assert!(NewOrderLine::parse_all(&[(a, 0)]).is_err());
        assert!(NewOrderLine::parse_all(&[(a, 1001)]).is_err());
        assert!(NewOrderLine::parse_all(&[(a, 1), (a, 2)]).is_err());
        assert_eq!(NewOrderLine::parse_all(&[(a, 1), (b, 2)]).unwrap().len(), 2);
    }
}
