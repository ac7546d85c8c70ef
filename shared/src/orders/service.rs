//! Order rules: placing in one transaction, who may see and change which order, the state machine.

use std::time::Instant;

use chrono::{SubsecRound, Utc};
use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use uuid::Uuid;

use crate::{
    error::AppError,
    events::{DomainEvent, EventBus},
    idempotency::{Attempt, Claimed, Earlier, IdempotencyService, Keyed, StoredResponse},
    orders::{
        events::OrderEvent,
        model::{NewOrderLine, Order, OrderItem, OrderStatus},
        repository::{NewOrderRow, OrderRepository},
    },
    pagination::{Page, PageRequest},
    products::{PricedLine, ProductService, StockChange, StockRefusal, StockRequest},
    queue::{GroupCommit, Grouped, Outbox, QueueError, Staging, UnitOfWork, Writes},
    users::model::Actor,
};

/// How many times [`OrderService::place`] prices an order before it gives up with 409: each
/// new attempt follows a product edit that landed between pricing and taking the stock.
pub const QUOTE_ATTEMPTS: usize = 3;

/// Records how long a stage of placing an order took, in `orderly_order_stage_seconds`:
/// `quote` (pricing from the cache), `write` (from the first attempt to the commit that placed
/// it: its line or group, its statement, any new pricing) and `stock_read` (the wait for the
/// products' rows as the commit left them). With the request's own latency they show where an
/// order's time goes.
fn record_stage(stage: &'static str, since: Instant) {
    metrics::histogram!("orderly_order_stage_seconds", "stage" => stage)
        .record(since.elapsed().as_secs_f64());
}

/// How one attempt to place an order ended.
enum Placement {
    /// The order, and the answer stored under the idempotency key with it.
    Placed(Order, StoredResponse),
    /// An earlier request under the idempotency key answers; nothing was written.
    Earlier(Earlier),
    /// A product changed after the order was priced; nothing was written.
    QuoteStale,
    /// The idempotency key is not new (or the attempt takes a claim over): nothing was
    /// written, and the order is placed again in a transaction that claims the key first.
    KeyNotNew,
    /// It went in one statement with other orders, and that statement failed: nothing was
    /// written, and the order is sent again alone, where it finds its own outcome.
    SendAlone,
}

/// How an attempt sends its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// Like [`Sending::OneStatement`], with the other orders sent at the same moment: one
    /// statement and one commit for all of them ([`GroupCommit`]). Only for an order whose
    /// lines are all of one product: a group's orders take their products' rows in product id
    /// order, which is deadlock-free only if each order takes one: `product_id`'s.
    Grouped { product_id: Uuid },
    /// One statement, its own transaction: the order, its lines, the claim of a new key, the
    /// deliveries and the outbox rows, in one round trip.
    OneStatement,
    /// A transaction that claims the key first (a key used before, or in use, or a claim taken
    /// over): the claim says who answers before anything is written.
    ClaimFirst,
}

/// The only way in to orders: placing one with its idempotency key, stock and events in one
/// transaction, and every read or status change behind the caller's access check.
#[derive(Debug, Clone)]
pub struct OrderService {
    pool: PgPool,
    orders: OrderRepository,
    products: ProductService,
    idempotency: IdempotencyService,
    events: EventBus,
    outbox: Outbox,
    /// Sends orders arriving together as one statement; `None` sends each alone.
    group_commit: Option<GroupCommit>,
}

impl OrderService {
    /// Wires the service.
    pub fn new(
        pool: PgPool,
        products: ProductService,
        idempotency: IdempotencyService,
        events: EventBus,
        outbox: Outbox,
    ) -> Self {
        Self {
            pool,
            orders: OrderRepository,
            products,
            idempotency,
            events,
            outbox,
            group_commit: None,
        }
    }

    /// Sends orders placed at the same moment through `group_commit`: one statement and one
    /// commit for all of them, instead of one each (see `Sending::Grouped`).
    pub fn with_group_commit(mut self, group_commit: GroupCommit) -> Self {
        self.group_commit = Some(group_commit);
        self
    }

    /// Places an order under the idempotency key of `attempt`, in one transaction: the order
    /// (with the attempt's resource id) at the catalogue's current prices, `OrderPlaced`
    /// published (subscribers add their writes: the email's job, webhook deliveries), the key
    /// claimed with the caller's answer to the order (`answer`: the response a retry with the
    /// key replays), and the stock taken last, by the commit. The staged jobs are pushed to the
    /// queue right after the commit. If the key was used before, or is in use by a request
    /// still running, nothing is kept and [`Keyed::Earlier`] says which request answers.
    ///
    /// One statement, nearly always: every write of the order is known before anything is
    /// sent (the api chooses the order's id and timestamps, so the answer is complete), and
    /// sent alone, the statement is its own transaction, with no `BEGIN` or `COMMIT` round trip
    /// and one pooled connection for one round trip. It claims the key as a new one; if the key
    /// is not new, the statement fails whole, and the order is placed again in a transaction
    /// that claims the key first and finds who answers ([`Sending::ClaimFirst`]).
    ///
    /// And under load, one statement for several orders: an order of one product placed while
    /// the api's order statements are all in flight waits for the next one, which carries every
    /// order waiting, with one commit for all of them ([`GroupCommit`]). If that statement
    /// fails, each of its orders is sent again alone and finds its own outcome.
    ///
    /// The claim is in the order's own transaction, so a claim exists exactly when its order
    /// does (no claim is left behind by an order that failed or died). Two attempts with one
    /// key can never both create an order: the second one's claim finds the first's, and even
    /// an attempt that takes over a claim presumed dead uses its resource id, which is the
    /// order's primary key.
    ///
    /// Stock last because taking it locks the product's row until the commit, and every other
    /// order for that product waits on that lock: in a flash sale on one product, the time the
    /// lock is held bounds the orders per second. So the commit itself takes it (a trigger on
    /// the order's row, deferred to the commit; migration 0021), and the lock is held for the
    /// commit alone, with no round trip to the api in it. And because the row lock is not a
    /// fair line, an order sent alone first waits for its turn in the api's line for each of
    /// its products ([`ProductService::stock_turn`]), before it takes a pooled connection (a
    /// grouped order is in the group's line instead, first come first served). The
    /// order's lines are priced beforehand from the cache, and the stock is taken only while
    /// the products still read as priced; if one changed meanwhile, the commit fails, and the
    /// order is priced again from PostgreSQL, at most [`QUOTE_ATTEMPTS`] times.
    #[tracing::instrument(skip(self, lines, attempt, answer), fields(user_id = %actor.user_id, lines = lines.len()))]
    pub async fn place(
        &self,
        actor: &Actor,
        lines: &[NewOrderLine],
        attempt: &Attempt,
        answer: impl Fn(&Order) -> Result<StoredResponse, AppError> + Send + Sync,
    ) -> Result<Keyed<(Order, StoredResponse)>, AppError> {
        if attempt.user_id != actor.user_id {
            return Err(AppError::forbidden(
                "an idempotency key belongs to the user placing the order",
            ));
        }
        let requests: Vec<StockRequest> = lines
            .iter()
            .map(|l| StockRequest {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let quoting = Instant::now();
        let mut quote = self.products.quote(&requests).await?;
        record_stage("quote", quoting);
        let product_ids: Vec<Uuid> = requests.iter().map(|request| request.product_id).collect();
        let mut sending = match product_ids.split_first() {
            Some((&first, rest))
                if self.group_commit.is_some() && rest.iter().all(|&id| id == first) =>
            {
                Sending::Grouped { product_id: first }
            }
            _ => Sending::OneStatement,
        };
        // An order sent alone waits in line behind the other orders for its products, holding
        // no connection yet; the turn ends with this function, after the commit answered. A
        // grouped order needs no line: the group's few statements in flight are all that wait
        // on a product's row, however many orders they carry.
        let turn = match sending {
            Sending::Grouped { .. } => None,
            _ => Some(self.products.stock_turn(&product_ids).await),
        };
        // A connection of its own only for an attempt sent alone (taken once, kept for every
        // later attempt); a grouped attempt's statement runs on the group's.
        let mut conn = None;
        let mut priced = 0;
        let writing = Instant::now();
        while priced < QUOTE_ATTEMPTS {
            match self
                .place_as_quoted(&mut conn, actor, &quote, attempt, &answer, sending)
                .await?
            {
                Placement::Placed(order, response) => {
                    drop(conn);
                    drop(turn);
                    record_stage("write", writing);
                    // Before answering, so the customer (and everyone else) reads the stock
                    // it left.
                    let reading = Instant::now();
                    self.products.stock_taken(&product_ids).await;
                    record_stage("stock_read", reading);
                    return Ok(Keyed::Done((order, response)));
                }
                Placement::Earlier(earlier) => return Ok(Keyed::Earlier(earlier)),
                Placement::QuoteStale => {
                    priced += 1;
                    quote = self
                        .products
                        .quote_fresh(self.connection(&mut conn).await?, &requests)
                        .await?;
                    if matches!(sending, Sending::Grouped { .. }) {
                        // It waits for its group holding no connection.
                        conn = None;
                    }
                }
                // Claiming first cannot find the key not new: it says who answers instead.
                Placement::KeyNotNew if sending == Sending::ClaimFirst => {
                    return Err(AppError::internal("an order's claim was refused twice"));
                }
                Placement::KeyNotNew => sending = Sending::ClaimFirst,
                Placement::SendAlone => sending = Sending::OneStatement,
            }
        }
        Err(AppError::conflict(
            "the products changed while the order was being placed; try again",
        ))
    }

    /// The attempt's own pooled connection, taken the first time one is needed.
    async fn connection<'c>(
        &self,
        conn: &'c mut Option<PoolConnection<Postgres>>,
    ) -> Result<&'c mut PgConnection, AppError> {
        if conn.is_none() {
            *conn = Some(self.pool.acquire().await?);
        }
        Ok(conn.as_deref_mut().expect("taken just above"))
    }

    /// How many orders wait now for a statement to carry them (see [`Self::place`]); `0`
    /// when each order is sent alone.
    pub fn orders_waiting_to_be_sent(&self) -> usize {
        self.group_commit.as_ref().map_or(0, GroupCommit::waiting)
    }

    /// One attempt of [`Self::place`] at the prices of `quote`, sent as `sending` says.
    async fn place_as_quoted(
        &self,
        conn: &mut Option<PoolConnection<Postgres>>,
        actor: &Actor,
        quote: &[PricedLine],
        attempt: &Attempt,
        answer: &(impl Fn(&Order) -> Result<StoredResponse, AppError> + Sync),
        sending: Sending,
    ) -> Result<Placement, AppError> {
        let currency = quote
            .first()
            .map(|l| l.currency.clone())
            .unwrap_or_default();
        if quote.iter().any(|l| l.currency != currency) {
            return Err(AppError::unprocessable(
                "all items of an order must be priced in the same currency",
            ));
        }
        let items: Vec<OrderItem> = quote
            .iter()
            .map(|l| OrderItem {
                product_id: l.product_id,
                sku: l.sku.clone(),
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
            })
            .collect();
        let total_cents = items
            .iter()
            .try_fold(0i64, |sum, item| {
                item.unit_price_cents
                    .checked_mul(i64::from(item.quantity))
                    .and_then(|line| sum.checked_add(line))
            })
            .ok_or_else(|| AppError::unprocessable("order total is too large"))?;
        let new = NewOrderRow {
            id: attempt.resource_id(),
            user_id: actor.user_id,
            total_cents,
            currency: &currency,
            items: &items,
            placed_at: Utc::now().trunc_subsecs(6),
        };

        let (sent, order, response) = match sending {
            Sending::Grouped { product_id } => {
                let mut writes = Writes::new();
                let (order, response) = self.write_order(&mut writes, new, answer).await?;
                if !self.idempotency.claim_new(&mut writes, attempt, &response) {
                    return Ok(Placement::KeyNotNew);
                }
                let group_commit = self
                    .group_commit
                    .as_ref()
                    .expect("an order is grouped only with a group");
                let sent = match group_commit.execute(writes, product_id).await {
                    Grouped::Committed => Ok(()),
                    Grouped::Failed(error) => Err(error),
                    Grouped::SendAlone => return Ok(Placement::SendAlone),
                };
                (sent, order, response)
            }
            Sending::OneStatement => {
                let mut writes = Writes::new();
                let (order, response) = self.write_order(&mut writes, new, answer).await?;
                if !self.idempotency.claim_new(&mut writes, attempt, &response) {
                    return Ok(Placement::KeyNotNew);
                }
                let conn = self.connection(conn).await?;
                (self.outbox.execute(conn, writes).await, order, response)
            }
            Sending::ClaimFirst => {
                let conn = self.connection(conn).await?;
                let mut uow = UnitOfWork::begin_on(conn).await?;
                let (order, response) = self.write_order(&mut uow, new, answer).await?;
                // The claim runs now; the writes above go with the commit. A key used before
                // rolls all of it back.
                match self
                    .idempotency
                    .claim(uow.conn(), attempt, &response)
                    .await?
                {
                    Claimed::Proceed => {}
                    // Rolled back before answering, so the key's advisory lock is free for
                    // whatever the answer leads to (a retry taking a dead claim over). If the
                    // rollback fails the connection is closed, which frees it too.
                    Claimed::Earlier(earlier) => {
                        let _ = uow.rollback().await;
                        return Ok(Placement::Earlier(earlier));
                    }
                }
                (self.outbox.commit(uow).await, order, response)
            }
        };
        // The commit takes the lines' stock (migration 0021), after everything else is written:
        // the products' rows are locked for the rest of the commit only, inside PostgreSQL.
        let error = match sent {
            Ok(()) => {
                tracing::info!(order_id = %order.id, total_cents, "order placed");
                return Ok(Placement::Placed(order, response));
            }
            Err(QueueError::Database(error)) => error,
            Err(other) => return Err(other.into()),
        };
        if IdempotencyService::claim_refused(&error) {
            return Ok(Placement::KeyNotNew);
        }
        if OrderRepository::id_taken(&error) {
            return Err(AppError::conflict("an order with this id already exists"));
        }
        match ProductService::stock_refusal(&error) {
            Some(StockRefusal::QuoteStale) => Ok(Placement::QuoteStale),
            Some(StockRefusal::Insufficient) => Err(AppError::conflict("insufficient stock")),
            None => Err(error.into()),
        }
    }

    /// Adds to the writes of `to` the order (its row the first write; see
    /// `OrderRepository::insert`) and what `OrderPlaced`'s subscribers write, and returns the
    /// order with the caller's answer to it, complete before anything is sent (the commit
    /// changes nothing in it).
    async fn write_order(
        &self,
        to: &mut impl Staging,
        new: NewOrderRow<'_>,
        answer: &(impl Fn(&Order) -> Result<StoredResponse, AppError> + Sync),
    ) -> Result<(Order, StoredResponse), AppError> {
        let order = self.orders.insert(to.writes(), new);
        self.events
            .publish(
                to,
                DomainEvent::Order(OrderEvent::Placed {
                    order: order.clone(),
                }),
            )
            .await?;
        let response = answer(&order)?;
        Ok((order, response))
    }

    /// An order the actor may see: their own, or any for an admin. Anything else is 404, so
    /// nobody learns which order ids exist.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, actor: &Actor, id: Uuid) -> Result<Order, AppError> {
        self.find_for(actor, id)
            .await?
            .ok_or_else(|| AppError::not_found("order not found"))
    }

    /// Like [`OrderService::get`], with `None` for an order that does not exist or that the
    /// actor may not see: an idempotency key's earlier request is answered from its order.
    pub async fn find_for(&self, actor: &Actor, id: Uuid) -> Result<Option<Order>, AppError> {
        let mut conn = self.pool.acquire().await?;
        Ok(self
            .orders
            .find(&mut conn, id, false)
            .await?
            .filter(|order| actor.may_access(order.user_id)))
    }

    /// An order by id, for system use (job handlers); no access check.
    pub async fn find(&self, id: Uuid) -> Result<Option<Order>, AppError> {
        let mut conn = self.pool.acquire().await?;
        self.orders.find(&mut conn, id, false).await
    }

    /// The actor's own orders, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn list_own(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<Order>, AppError> {
        let mut conn = self.pool.acquire().await?;
        self.orders
            .list_for_user(&mut conn, actor.user_id, &page)
            .await
    }

    /// Cancels an order the actor may access, returning its stock; 409 once it has shipped.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(&self, actor: &Actor, id: Uuid) -> Result<Order, AppError> {
        self.transition(actor, id, OrderStatus::Cancelled).await
    }

    /// Moves an order to `status` (admin), following the allowed transitions; cancelling this
    /// way returns the stock like [`OrderService::cancel`].
    #[tracing::instrument(skip(self))]
    pub async fn change_status(
        &self,
        actor: &Actor,
        id: Uuid,
        status: OrderStatus,
    ) -> Result<Order, AppError> {
        if !actor.is_admin() {
            return Err(AppError::forbidden(
                "only admins can change an order's status",
            ));
        }
        self.transition(actor, id, status).await
    }

    async fn transition(
        &self,
        actor: &Actor,
        id: Uuid,
        next: OrderStatus,
    ) -> Result<Order, AppError> {
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let mut order = self
            .orders
            .find(uow.conn(), id, true)
            .await?
            .filter(|order| actor.may_access(order.user_id))
            .ok_or_else(|| AppError::not_found("order not found"))?;
        let previous = order.status;
        if !previous.can_become(next) {
            return Err(AppError::conflict(format!(
                "an order that is {} cannot become {}",
                previous.as_str(),
                next.as_str()
            )));
        }
        let mut stock_change = StockChange::default();
        if next == OrderStatus::Cancelled {
            let lines: Vec<StockRequest> = order
                .items
                .iter()
                .map(|i| StockRequest {
                    product_id: i.product_id,
                    quantity: i.quantity,
                })
                .collect();
            stock_change = self.products.release(uow.conn(), &lines).await?;
        }
        order.updated_at = self.orders.set_status(uow.conn(), id, next).await?;
        order.status = next;
        let event = if next == OrderStatus::Cancelled {
            OrderEvent::Cancelled {
                order: order.clone(),
            }
        } else {
            OrderEvent::StatusChanged {
                order: order.clone(),
                from: previous,
            }
        };
        self.events
            .publish(&mut uow, DomainEvent::Order(event))
            .await?;
        self.outbox.commit(uow).await?;
        self.products.committed(stock_change).await;
        tracing::info!(order_id = %id, from = previous.as_str(), to = next.as_str(), "order status changed");
        Ok(order)
    }
}
