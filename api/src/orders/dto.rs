//! Request and response shapes of the orders routes.

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    orders::{NewOrderLine, Order, OrderItem, OrderStatus},
    pagination::{Page, PageRequest},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

/// One requested line.
#[derive(Debug, Clone, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    /// Product to buy.
    pub product_id: Uuid,
    /// Units, 1 to 1000.
    #[validate(range(min = 1, max = 1000, message = "must be between 1 and 1000"))]
    #[schema(example = 2)]
    pub quantity: i64,
}

/// `POST /orders` body.
#[derive(Debug, Clone, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// The lines: 1 to 100, each product at most once.
    #[validate(
        length(min = 1, max = 100, message = "must contain 1 to 100 items"),
        nested
    )]
    pub items: Vec<OrderLineRequest>,
}

impl PlaceOrderRequest {
    /// The lines as domain values (duplicate products are refused here too).
    pub fn lines(&self) -> Result<Vec<NewOrderLine>, AppError> {
        let raw: Vec<(Uuid, i64)> = self
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        NewOrderLine::parse_all(&raw)
    }
}

/// `PATCH /orders/{id}` body (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderRequest {
    /// New status: `paid`, `shipped`, `delivered` or `cancelled`, following the allowed transitions.
    #[schema(value_type = String, example = "shipped")]
    pub status: OrderStatus,
}

/// `GET /orders` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListOrdersQuery {
    /// The page request.
    pub fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemResponse {
    /// The catalogue product; it may since have changed or been deactivated.
    pub product_id: Uuid,
    /// SKU when ordered.
    #[schema(example = "MUG-001")]
    pub sku: String,
    /// Name when ordered.
    #[schema(example = "Coffee mug")]
    pub name: String,
    /// Units ordered, 1 to 1000.
    #[schema(example = 2)]
    pub quantity: i32,
    /// Unit price when ordered, minor units.
    #[schema(example = 1299)]
    pub unit_price_cents: i64,
    /// Quantity times unit price.
    #[schema(example = 2598)]
    pub line_total_cents: i64,
}

impl From<OrderItem> for OrderItemResponse {
    fn from(item: OrderItem) -> Self {
        Self {
            line_total_cents: item.line_total_cents(),
            product_id: item.product_id,
            sku: item.sku,
            name: item.name,
            quantity: item.quantity,
            unit_price_cents: item.unit_price_cents,
        }
    }
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    /// UUIDv7, so ids sort by placement time; the order is at `/orders/{id}`.
    pub id: Uuid,
    /// `placed`, `paid`, `shipped`, `delivered` or `cancelled`.
    #[schema(example = "placed")]
    pub status: &'static str,
    /// The lines, in the order they were requested.
    pub items: Vec<OrderItemResponse>,
    /// Total, minor units.
    #[schema(example = 2598)]
    pub total_cents: i64,
    /// ISO 4217 code of the total and of every line.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Placed (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Last status change (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            status: order.status.as_str(),
            items: order.items.into_iter().map(Into::into).collect(),
            total_cents: order.total_cents,
            currency: order.currency,
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    /// Orders, newest first.
    pub items: Vec<OrderResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<Order>> for OrderPage {
    fn from(page: Page<Order>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
