//! SQL for orders and their lines.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    error::{AppError, ResultExt},
    orders::model::{Order, OrderItem, OrderStatus},
    pagination::{Page, PageRequest},
};

/// An `orders` row, without its lines.
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: OrderStatus,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl OrderRow {
    fn with_items(self, items: Vec<OrderItem>) -> Order {
        Order {
            id: self.id,
            user_id: self.user_id,
            status: self.status,
            total_cents: self.total_cents,
            currency: self.currency,
            items,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
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
}

/// Orders in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderRepository;

impl OrderRepository {
    /// Inserts an order and its lines in one statement (the caller's transaction); their stock
    /// is taken when the transaction commits (migration 0021). An id that is already
    /// taken is a 409: the id is an idempotency key's resource id, and only an attempt of an
    /// earlier version, committing after its claim was presumed dead, can reach it twice.
    #[tracing::instrument(skip_all)]
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        new: NewOrderRow<'_>,
    ) -> Result<Order, AppError> {
        let line_nos: Vec<i32> = (1..=new.items.len() as i32).collect();
        let product_ids: Vec<Uuid> = new.items.iter().map(|i| i.product_id).collect();
        let skus: Vec<&str> = new.items.iter().map(|i| i.sku.as_str()).collect();
        let names: Vec<&str> = new.items.iter().map(|i| i.name.as_str()).collect();
        let quantities: Vec<i32> = new.items.iter().map(|i| i.quantity).collect();
        let prices: Vec<i64> = new.items.iter().map(|i| i.unit_price_cents).collect();
        // Both inserts in one round trip; the lines' foreign key to the order is checked at the
        // end of the statement, when the order row exists.
        // The `!` overrides: columns read through a CTE carry no NOT NULL for the macro to see.
        let row = sqlx::query_as!(
            OrderRow,
            r#"with new_order as (
                 insert into orders (id, user_id, status, total_cents, currency, takes_stock_at_commit)
                 values ($1, $2, 'placed', $3, $4, true)
                 returning id, user_id, status, total_cents, currency, created_at, updated_at
               ), new_items as (
                 insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents)
                 select $1, * from unnest($5::int[], $6::uuid[], $7::text[], $8::text[], $9::int[], $10::bigint[])
               )
               select id as "id!", user_id as "user_id!", status as "status!: OrderStatus",
                      total_cents as "total_cents!", currency as "currency!",
                      created_at as "created_at!", updated_at as "updated_at!"
               from new_order"#,
            new.id,
            new.user_id,
            new.total_cents,
            new.currency,
            &line_nos,
            &product_ids,
            &skus as &[&str],
            &names as &[&str],
            &quantities,
            &prices,
        )
        .fetch_one(&mut *conn)
        .await
        .on_constraint("orders_pkey", |_| {
            AppError::conflict("an order with this id already exists")
        })?;
        Ok(row.with_items(new.items.to_vec()))
    }

    /// An order with its lines; `for_update` locks the order row for a status change.
    #[tracing::instrument(skip(self, conn))]
    pub async fn find(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        for_update: bool,
    ) -> Result<Option<Order>, AppError> {
        // Two statements rather than one with a spliced lock clause: a checked macro takes a
        // literal.
        let row = if for_update {
            sqlx::query_as!(
                OrderRow,
                r#"select id, user_id, status as "status: OrderStatus", total_cents, currency,
                          created_at, updated_at
                   from orders where id = $1 for update"#,
                id,
            )
            .fetch_optional(&mut *conn)
            .await?
        } else {
            sqlx::query_as!(
                OrderRow,
                r#"select id, user_id, status as "status: OrderStatus", total_cents, currency,
                          created_at, updated_at
                   from orders where id = $1"#,
                id,
            )
            .fetch_optional(&mut *conn)
            .await?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let items = self.items(&mut *conn, &[id]).await?;
        Ok(Some(row.with_items(
            items.into_iter().map(|(_, item)| item).collect(),
        )))
    }

    async fn items<'e>(
        &self,
        db: impl PgExecutor<'e>,
        order_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, OrderItem)>, AppError> {
        let rows = sqlx::query!(
            "select order_id, product_id, sku, name, quantity, unit_price_cents from order_items \
             where order_id = any($1) order by order_id, line_no",
            order_ids,
        )
        .fetch_all(db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let item = OrderItem {
                    product_id: r.product_id,
                    sku: r.sku,
                    name: r.name,
                    quantity: r.quantity,
                    unit_price_cents: r.unit_price_cents,
                };
                (r.order_id, item)
            })
            .collect())
    }

    /// A page of a user's orders, newest first.
    #[tracing::instrument(skip(self, conn))]
    pub async fn list_for_user(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<Order>, AppError> {
        let rows = sqlx::query_as!(
            OrderRow,
            r#"select id, user_id, status as "status: OrderStatus", total_cents, currency,
                      created_at, updated_at
               from orders where user_id = $1 and ($2::uuid is null or id < $2)
               order by id desc limit $3"#,
            user_id,
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(&mut *conn)
        .await?;
        let page = Page::from_rows(rows, page, |r| r.id);
        let ids: Vec<Uuid> = page.items.iter().map(|r| r.id).collect();
        let mut items = self.items(&mut *conn, &ids).await?;
        Ok(page.map(|row| {
            let mine: Vec<OrderItem> = items
                .iter()
                .filter(|(order_id, _)| *order_id == row.id)
                .map(|(_, item)| item.clone())
                .collect();
            items.retain(|(order_id, _)| *order_id != row.id);
            row.with_items(mine)
        }))
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
