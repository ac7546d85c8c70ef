//! Catalogue rules: who sees what, what a valid edit is, and pricing and stock for orders.

use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::Page,
    products::{
        model::{NewProduct, Product, ProductPatch, ProductQuery},
        repository::{CachedProductRepository, StockLine, StockRefusal},
        stock_queue::{StockQueue, StockTurn},
    },
    queue::HeldConnection,
};

/// A line an order wants: which product, how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockRequest {
    /// The product to reserve from.
    pub product_id: Uuid,
    /// Units, at least 1.
    pub quantity: i32,
}

/// A line of an order priced as the catalogue read: what the order line shows and charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product.
    pub product_id: Uuid,
    /// SKU at the time.
    pub sku: String,
    /// Name at the time.
    pub name: String,
    /// Units wanted.
    pub quantity: i32,
    /// Unit price at the time, minor units.
    pub unit_price_cents: i64,
    /// ISO 4217 code of the unit price; an order takes one currency only.
    pub currency: String,
}

/// The lines priced from `products` (any order), in the lines' order: 422 naming the first line
/// whose product is missing or inactive.
fn price_lines(lines: &[StockRequest], products: &[Product]) -> Result<Vec<PricedLine>, AppError> {
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let product = products
                .iter()
                .find(|p| p.id == line.product_id && p.active)
                .ok_or_else(|| {
                    AppError::invalid_field(
                        format!("items[{index}].product_id"),
                        format!(
                            "product {} does not exist or is not available",
                            line.product_id
                        ),
                    )
                })?;
            Ok(PricedLine {
                product_id: product.id,
                sku: product.sku.clone(),
                name: product.name.clone(),
                quantity: line.quantity,
                unit_price_cents: product.price_cents,
                currency: product.currency.clone(),
            })
        })
        .collect()
}

/// The catalogue.
#[derive(Debug, Clone)]
pub struct ProductService {
    pool: PgPool,
    products: CachedProductRepository,
    /// To the background reader behind [`ProductService::stock_taken`].
    taken_stock: mpsc::UnboundedSender<TakenStock>,
    /// The lines of [`ProductService::stock_turn`].
    stock_queue: StockQueue,
}

/// Products whose stock a commit took, to be read again for the cache; `read` is answered once
/// a read that began after the request was queued has reached the cache.
#[derive(Debug)]
struct TakenStock {
    product_ids: Vec<Uuid>,
    read: oneshot::Sender<()>,
}

/// Most requests of [`ProductService::stock_taken`] answered by one read.
const TAKEN_STOCK_BATCH: usize = 512;

/// Products as a transaction left them, to be announced to the cache once it commits (and
/// dropped unannounced if it rolls back).
#[derive(Debug, Default)]
#[must_use = "hand it to ProductService::committed after the commit"]
pub struct StockChange(Vec<Product>);

impl ProductService {
    /// A service over `pool`, reading through `products`. Starts the background reader of
    /// [`Self::stock_taken`], so it must be called inside a tokio runtime.
    pub fn new(pool: PgPool, products: CachedProductRepository) -> Self {
        let (taken_stock, requests) = mpsc::unbounded_channel();
        tokio::spawn(read_taken_stock(pool.clone(), products.clone(), requests));
        Self {
            pool,
            products,
            taken_stock,
            stock_queue: StockQueue::new(0),
        }
    }

    /// Lets `per_product` orders of one product at a time be sent to PostgreSQL
    /// ([`Self::stock_turn`]); without it, every order is sent at once.
    pub fn with_orders_in_flight_per_product(mut self, per_product: usize) -> Self {
        self.stock_queue = StockQueue::new(per_product);
        self
    }

    /// Waits for the turn of an order for `product_ids` to be sent (see
    /// [`crate::products::stock_queue`]): an order holds it from before it takes a pooled
    /// connection until its commit has answered.
    pub async fn stock_turn(&self, product_ids: &[Uuid]) -> StockTurn {
        self.stock_queue.turn(product_ids).await
    }

    /// Creates a product (admin).
    #[tracing::instrument(skip_all, fields(sku = %product.sku))]
    pub async fn create(&self, product: NewProduct) -> Result<Product, AppError> {
        self.products.create(&self.pool, &product).await
    }

    /// A product. Inactive products exist only for admins; others get 404.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, id: Uuid, include_inactive: bool) -> Result<Product, AppError> {
        self.products
            .find_by_id(&self.pool, id)
            .await?
            .filter(|p| p.active || include_inactive)
            .ok_or_else(|| AppError::not_found("product not found"))
    }

    /// A catalogue page.
    #[tracing::instrument(skip_all)]
    pub async fn list(&self, query: ProductQuery) -> Result<Page<Product>, AppError> {
        self.products.list(&self.pool, &query).await
    }

    /// Updates a product (admin).
    #[tracing::instrument(skip(self, patch))]
    pub async fn update(&self, id: Uuid, patch: ProductPatch) -> Result<Product, AppError> {
        if patch.is_empty() {
            return Err(AppError::unprocessable("nothing to update"));
        }
        self.products
            .update(&self.pool, id, &patch)
            .await?
            .ok_or_else(|| AppError::not_found("product not found"))
    }

    /// Hides a product from the catalogue and stops it being ordered (admin). Orders keep
    /// referring to it, so it is never deleted.
    #[tracing::instrument(skip(self))]
    pub async fn deactivate(&self, id: Uuid) -> Result<Product, AppError> {
        self.update(
            id,
            ProductPatch {
                active: Some(false),
                ..ProductPatch::default()
            },
        )
        .await
    }

    /// Prices `lines` as the catalogue reads now, from the cache, taking nothing: 422 for an
    /// unknown or inactive product. The order is written at these prices and
    /// the order's commit confirms them when it takes the stock ([`Self::stock_refusal`]).
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn quote(&self, lines: &[StockRequest]) -> Result<Vec<PricedLine>, AppError> {
        let mut products = Vec::with_capacity(lines.len());
        for line in lines {
            products.extend(
                self.products
                    .find_by_id(&self.pool, line.product_id)
                    .await?,
            );
        }
        price_lines(lines, &products)
    }

    /// [`Self::quote`] from PostgreSQL instead of the cache, after an order's commit found a
    /// cached copy stale ([`StockRefusal::QuoteStale`]), on the connection the order holds; the
    /// cache is given the current products on the way.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn quote_fresh(
        &self,
        conn: &mut PgConnection,
        lines: &[StockRequest],
    ) -> Result<Vec<PricedLine>, AppError> {
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let products = self.products.find_many(conn, &ids).await?;
        self.products.store(&products).await;
        price_lines(lines, &products)
    }

    /// Why the commit of a transaction that inserted an order failed, if the stock rule refused
    /// it. An order takes its lines' stock when that transaction commits (migration 0021): each
    /// line's, while its product is active, has the stock, and still reads as priced. The
    /// caller prices a [`StockRefusal::QuoteStale`] order again ([`Self::quote_fresh`]) and
    /// answers [`StockRefusal::Insufficient`] with 409.
    pub fn stock_refusal(error: &sqlx::Error) -> Option<StockRefusal> {
        StockRefusal::of(error)
    }

    /// After a transaction that took stock for `product_ids` committed: their rows, as the
    /// commit left them, go to the cache before this returns, so the customer (and everyone
    /// else) reads the stock it left. If they cannot be read, they are dropped from the cache
    /// instead.
    ///
    /// The rows are read by a background reader that serves every order committed meanwhile
    /// with one statement (as a group commit does): in a flash sale, each order's own read of
    /// the same hot row was a tenth of PostgreSQL's work per order (docs/performance.md). A
    /// read serves only the orders queued before it began, so each one reads its own commit.
    pub async fn stock_taken(&self, product_ids: &[Uuid]) {
        let (read, done) = oneshot::channel();
        let request = TakenStock {
            product_ids: product_ids.to_vec(),
            read,
        };
        if self.taken_stock.send(request).is_err() {
            // The reader is gone (the runtime is shutting down): the cache copies may be stale.
            self.products.forget(product_ids).await;
            return;
        }
        let _ = done.await;
    }

    /// Gives reserved stock back inside the caller's transaction (cancellations); the caller
    /// hands the returned [`StockChange`] to [`Self::committed`] once it commits.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn release(
        &self,
        conn: &mut PgConnection,
        lines: &[StockRequest],
    ) -> Result<StockChange, AppError> {
        let stock_lines: Vec<StockLine> = lines
            .iter()
            .map(|l| StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let products = self.products.return_stock(conn, &stock_lines).await?;
        Ok(StockChange(products))
    }

    /// After the transaction that made `change` committed: every api instance shows the new
    /// stock from now on (never called for a rolled-back change, whose rows never existed).
    pub async fn committed(&self, change: StockChange) {
        self.products.store(&change.0).await;
    }

    /// Inserts or updates products by SKU in one statement inside the caller's transaction
    /// (imports); the caller commits or rolls back the whole batch, then hands the returned
    /// change to [`Self::catalogue_edited`].
    #[tracing::instrument(skip_all, fields(rows = products.len()))]
    pub async fn upsert_batch(
        &self,
        conn: &mut PgConnection,
        products: &[NewProduct],
    ) -> Result<StockChange, AppError> {
        Ok(StockChange(
            self.products.upsert_by_sku(conn, products).await?,
        ))
    }

    /// After a batch edit committed: its products are current in every cache, and cached
    /// catalogue pages are retired.
    pub async fn catalogue_edited(&self, change: StockChange) {
        self.products.edited(&change.0).await;
    }
}

/// The background reader behind [`ProductService::stock_taken`]: the products of every request
/// queued while the previous read ran, read in one statement and stored in the cache. It holds
/// its pooled connection while requests keep coming, and across short pauses between them
/// ([`HeldConnection`]): a busy shop would otherwise queue it behind the orders waiting for a
/// connection, and a shop placing orders one at a time would pay an acquire and the pool's
/// check of the returned connection per read.
async fn read_taken_stock(
    pool: PgPool,
    products: CachedProductRepository,
    mut requests: mpsc::UnboundedReceiver<TakenStock>,
) {
    let mut conn = HeldConnection::new(pool);
    let mut batch = Vec::with_capacity(TAKEN_STOCK_BATCH);
    while let Some(first) = conn.next(&mut requests).await {
        batch.push(first);
        while batch.len() < TAKEN_STOCK_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut ids: Vec<Uuid> = batch
            .iter()
            .flat_map(|request| request.product_ids.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let read: Result<Vec<Product>, AppError> =
            async { products.find_many(conn.get().await?, &ids).await }.await;
        match read {
            Ok(rows) => products.store(&rows).await,
            Err(error) => {
                // A connection that failed is not used again.
                conn.give_back();
                tracing::warn!(%error, "reading products after their stock was taken failed; dropping them from the cache");
                products.forget(&ids).await;
            }
        }
        for request in batch.drain(..) {
            let _ = request.read.send(());
        }
    }
}
