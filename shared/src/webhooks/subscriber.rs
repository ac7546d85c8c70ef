//! Turns domain events into webhook deliveries, written with the change that published them.
//!
//! For `order.placed`, `order.cancelled`, `order.status_changed` and `report.ready`: describe
//! the order or report (carried by the event itself, as it stands before the commit) and add to
//! the operation's writes one delivery per enabled endpoint subscribed to the event, plus a
//! fan-out job that queues their sends when there are any. A rolled-back order therefore sends
//! no webhook, and a committed one always does.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::{
    error::Result,
    events::{DomainEvent, Subscriber},
    orders::{Order, events::OrderEvent},
    queue::Writes,
    reports::{Report, events::ReportEvent},
    webhooks::{model::WebhookEventType, service::WebhookService},
};

/// Stages webhook deliveries for order and report events.
#[derive(Debug, Clone)]
pub struct WebhookSubscriber {
    webhooks: WebhookService,
}

impl WebhookSubscriber {
    /// A subscriber that writes deliveries through `webhooks`.
    pub fn new(webhooks: WebhookService) -> Self {
        Self { webhooks }
    }
}

/// The `data` of an event: what a receiver needs without calling back.
fn describe(event: &DomainEvent) -> Option<Value> {
    match event {
        DomainEvent::Order(order_event) => {
            let mut data = order_data(order_event.order());
            if let OrderEvent::StatusChanged { from, .. } = order_event {
                data["previous_status"] = json!(from.as_str());
            }
            Some(data)
        }
        DomainEvent::Report(ReportEvent::Ready { report }) => Some(report_data(report)),
        DomainEvent::User(_) => None,
    }
}

/// An order as receivers see it: ids, status, money in minor units, the lines.
fn order_data(order: &Order) -> Value {
    json!({
        "id": order.id,
        "user_id": order.user_id,
        "status": order.status.as_str(),
        "total_cents": order.total_cents,
        "currency": order.currency,
        "items": order.items.iter().map(|item| json!({
            "product_id": item.product_id,
            "sku": item.sku,
            "name": item.name,
            "quantity": item.quantity,
            "unit_price_cents": item.unit_price_cents,
            "line_total_cents": item.line_total_cents(),
        })).collect::<Vec<_>>(),
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    })
}

/// A finished report: what it covers and its size (the file is downloaded through the api).
fn report_data(report: &Report) -> Value {
    json!({
        "id": report.id,
        "user_id": report.user_id,
        "kind": report.kind,
        "format": report.format,
        "from": report.from_date,
        "to": report.to_date,
        "status": report.status.as_str(),
        "row_count": report.row_count,
        "byte_size": report.byte_size,
        "completed_at": report.completed_at,
    })
}

#[async_trait]
impl Subscriber for WebhookSubscriber {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn handle(&self, writes: &mut Writes, event: &DomainEvent) -> Result<()> {
        let Some(kind) = WebhookEventType::of(event) else {
            return Ok(());
        };
        let Some(data) = describe(event) else {
            return Ok(());
        };
        // Most events have no subscriber: the write then writes nothing, and stages no job.
        self.webhooks.stage_deliveries(writes, kind, &data)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::orders::{OrderItem, OrderStatus};

    #[test]
    fn order_data_carries_lines_and_money_in_minor_units() {
        let order = Order {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            status: OrderStatus::Placed,
            total_cents: 2598,
            currency: "EUR".into(),
            items: vec![OrderItem {
                product_id: Uuid::now_v7(),
                sku: "SKU-1".into(),
                name: "Mug".into(),
                quantity: 2,
                unit_price_cents: 1299,
            }],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let data = order_data(&order);
        assert_eq!(data["id"], order.id.to_string());
        assert_eq!(data["status"], "placed");
        assert_eq!(data["total_cents"], 2598);
        assert_eq!(data["items"][0]["line_total_cents"], 2598);
        assert_eq!(data["items"][0]["sku"], "SKU-1");
    }
}
