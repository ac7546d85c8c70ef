//! SQL for orders and their lines.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    error::AppError,
    orders::model::{Order, OrderItem, OrderStatus},
    pagination::{Page, PageRequest},
    queue::Writes,
};

/// One line of an order with its order's columns (an order without lines reads as one row
/// whose line columns are null). Reads of orders with their lines take one statement, a row per
/// line, ordered by order and then line.
struct OrderLineRow {
    id: Uuid,
    user_id: Uuid,
    status: OrderStatus,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    product_id: Option<Uuid>,
    sku: Option<String>,
    name: Option<String>,
    quantity: Option<i32>,
    unit_price_cents: Option<i64>,
}

impl OrderLineRow {
    /// The orders the rows describe, in the rows' order; an order's rows must be adjacent.
    fn into_orders(rows: Vec<Self>) -> Vec<Order> {
        let mut orders: Vec<Order> = Vec::new();
        for row in rows {
            let item = match (
                row.product_id,
                row.sku,
                row.name,
                row.quantity,
                row.unit_price_cents,
            ) {
                (Some(product_id), Some(sku), Some(name), Some(quantity), Some(price)) => {
                    Some(OrderItem {
                        product_id,
                        sku,
                        name,
                        quantity,
                        unit_price_cents: price,
                    })
                }
                _ => None,
            };
            let same_order = orders.last().is_some_and(|last| last.id == row.id);
            if !same_order {
                orders.push(Order {
                    id: row.id,
                    user_id: row.user_id,
                    status: row.status,
                    total_cents: row.total_cents,
                    currency: row.currency,
                    items: Vec::new(),
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                });
            }
            if let (Some(item), Some(order)) = (item, orders.last_mut()) {
                order.items.push(item);
            }
        }
        orders
    }
}

/// The fields of a new order row.
#[derive(Debug, Clone)]
pub struct NewOrderRow<'a> {
    /// Chosen by the caller (the idempotency claim's resource id), so a second insert under
    /// the same key hits the primary key.
    pub id: Uuid,
    /// The customer placing the order.
    pub user_id: Uuid,
    /// Sum of the lines' totals, minor units; the caller computes it with overflow checks.
    pub total_cents: i64,
    /// ISO 4217 code shared by every line (an order never mixes currencies).
    pub currency: &'a str,
    /// Stored with line numbers in this order, so the order reads back as the customer gave it.
    pub items: &'a [OrderItem],
    /// When the order was placed: its `created_at` and `updated_at`, chosen by the api (in
    /// whole microseconds, as PostgreSQL keeps them) so that the answer to the order, stored
    /// with its idempotency key by the same statement, is complete before the statement runs.
    pub placed_at: DateTime<Utc>,
}

/// Orders in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderRepository;

impl OrderRepository {
    /// Adds to `writes` the order and its lines, as two writes: the order's row first (the
    /// operation's first write, so its commit takes the stock before any of its references is
    /// checked; migration 0021), then the lines. Returns the order as written. Their stock is
    /// taken when the operation commits. An id that is already taken fails the statement
    /// ([`Self::id_taken`]): the id is an idempotency key's resource id, and only an attempt of
    /// an earlier version, committing after its claim was presumed dead, can reach it twice.
    ///
    /// Built at run time (writes of one statement), so the macro does not check it; every test
    /// that places an order runs it.
    pub fn insert(&self, writes: &mut Writes, new: NewOrderRow<'_>) -> Order {
        let lines = new.items.len();
        let line_nos: Vec<i32> = (1..=lines as i32).collect();
        let product_ids: Vec<Uuid> = new.items.iter().map(|i| i.product_id).collect();
        let skus: Vec<String> = new.items.iter().map(|i| i.sku.clone()).collect();
        let names: Vec<String> = new.items.iter().map(|i| i.name.clone()).collect();
        let quantities: Vec<i32> = new.items.iter().map(|i| i.quantity).collect();
        let prices: Vec<i64> = new.items.iter().map(|i| i.unit_price_cents).collect();
        writes
            .write(
                "insert into orders (id, user_id, status, total_cents, currency, \
                                     takes_stock_at_commit, created_at, updated_at) \
                 select o.id, o.user_id, 'placed', o.total_cents, o.currency, true, \
                        o.placed_at, o.placed_at \
                 from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], \
                             $5::timestamptz[]) as o(id, user_id, total_cents, currency, placed_at) \
                 returning id",
            )
            .bind(vec![new.id])
            .bind(vec![new.user_id])
            .bind(vec![new.total_cents])
            .bind(vec![new.currency.to_owned()])
            .bind(vec![new.placed_at])
            .finish();
        // The lines' foreign keys (to the order, to their products) are checked at the commit.
        writes
            .write(
                "insert into order_items (order_id, line_no, product_id, sku, name, quantity, \
                                          unit_price_cents) \
                 select * from unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[], \
                                      $6::int[], $7::bigint[])",
            )
            .bind(vec![new.id; lines])
            .bind(line_nos)
            .bind(product_ids)
            .bind(skus)
            .bind(names)
            .bind(quantities)
            .bind(prices)
            .finish();
        Order {
            id: new.id,
            user_id: new.user_id,
            status: OrderStatus::Placed,
            total_cents: new.total_cents,
            currency: new.currency.to_owned(),
            items: new.items.to_vec(),
            created_at: new.placed_at,
            updated_at: new.placed_at,
        }
    }

    /// Whether `error` says an order's id was taken (see [`Self::insert`]).
    pub fn id_taken(error: &sqlx::Error) -> bool {
        error
            .as_database_error()
            .is_some_and(|db| db.constraint() == Some("orders_pkey"))
    }

    /// An order with its lines, in one statement (a row per line); `for_update` locks the
    /// order's row for a status change.
    #[tracing::instrument(skip(self, conn))]
    pub async fn find(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        for_update: bool,
    ) -> Result<Option<Order>, AppError> {
        // Two statements rather than one with a spliced lock clause: a checked macro takes a
        // literal.
        let rows = if for_update {
            sqlx::query_as!(
                OrderLineRow,
                r#"select o.id, o.user_id, o.status as "status: OrderStatus", o.total_cents,
                          o.currency, o.created_at, o.updated_at,
                          i.product_id as "product_id?", i.sku as "sku?", i.name as "name?",
                          i.quantity as "quantity?", i.unit_price_cents as "unit_price_cents?"
                   from orders o left join order_items i on i.order_id = o.id
                   where o.id = $1 order by i.line_no for update of o"#,
                id,
            )
            .fetch_all(&mut *conn)
            .await?
        } else {
            sqlx::query_as!(
                OrderLineRow,
                r#"select o.id, o.user_id, o.status as "status: OrderStatus", o.total_cents,
                          o.currency, o.created_at, o.updated_at,
                          i.product_id as "product_id?", i.sku as "sku?", i.name as "name?",
                          i.quantity as "quantity?", i.unit_price_cents as "unit_price_cents?"
                   from orders o left join order_items i on i.order_id = o.id
                   where o.id = $1 order by i.line_no"#,
                id,
            )
            .fetch_all(&mut *conn)
            .await?
        };
        Ok(OrderLineRow::into_orders(rows).pop())
    }

    /// A page of a user's orders, newest first, with their lines, in one statement: the page's
    /// orders (one more than the page, to know whether another follows) left-joined to their
    /// lines.
    #[tracing::instrument(skip(self, conn))]
    pub async fn list_for_user(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<Order>, AppError> {
        let rows = sqlx::query_as!(
            OrderLineRow,
            r#"select o.id as "id!", o.user_id as "user_id!", o.status as "status!: OrderStatus",
                      o.total_cents as "total_cents!", o.currency as "currency!",
                      o.created_at as "created_at!", o.updated_at as "updated_at!",
                      i.product_id as "product_id?", i.sku as "sku?", i.name as "name?",
                      i.quantity as "quantity?", i.unit_price_cents as "unit_price_cents?"
               from (select id, user_id, status, total_cents, currency, created_at, updated_at
                     from orders where user_id = $1 and ($2::uuid is null or id < $2)
                     order by id desc limit $3) o
               left join order_items i on i.order_id = o.id
               order by o.id desc, i.line_no"#,
            user_id,
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Page::from_rows(
            OrderLineRow::into_orders(rows),
            page,
            |order| order.id,
        ))
    }

    /// Sets the status of a locked order.
    #[tracing::instrument(skip(self, conn))]
    pub async fn set_status(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        status: OrderStatus,
    ) -> Result<DateTime<Utc>, AppError> {
        Ok(sqlx::query_scalar!(
            "update orders set status = $2 where id = $1 returning updated_at",
            id,
            status.as_str(),
        )
        .fetch_one(conn)
        .await?)
    }
}
