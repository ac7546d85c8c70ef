//! Catalogue rules: who sees what, what a valid edit is, and stock reservation for orders.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::Page,
    products::{
        model::{NewProduct, Product, ProductPatch, ProductQuery},
        repository::{CachedProductRepository, QuotedLine, StockLine},
    },
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

/// What [`ProductService::take_stock`] did.
#[derive(Debug)]
#[must_use]
pub enum Reservation {
    /// Every line's stock is taken, at the quoted prices.
    Taken(StockChange),
    /// A product changed since it was quoted (price, currency, SKU or name): nothing is taken.
    QuoteStale,
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
}

/// Products as a transaction left them, to be announced to the cache once it commits (and
/// dropped unannounced if it rolls back).
#[derive(Debug, Default)]
#[must_use = "hand it to ProductService::committed after the commit"]
pub struct StockChange(Vec<Product>);

impl ProductService {
    /// A service over `pool`, reading through `products`.
    pub fn new(pool: PgPool, products: CachedProductRepository) -> Self {
        Self { pool, products }
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
    /// [`Self::take_stock`] confirms them when it takes the stock.
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

    /// [`Self::quote`] from PostgreSQL instead of the cache, after [`Self::take_stock`] found a
    /// cached copy stale; the cache is given the current products on the way.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn quote_fresh(&self, lines: &[StockRequest]) -> Result<Vec<PricedLine>, AppError> {
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let products = self.products.find_many(&self.pool, &ids).await?;
        self.products.store(&products).await;
        price_lines(lines, &products)
    }

    /// Takes the stock of every quoted line inside the caller's transaction, or none: 422 for a
    /// product that is unknown or inactive by now, 409 when there is not enough stock, and
    /// [`Reservation::QuoteStale`] when a product no longer reads as quoted (the caller rolls
    /// back and quotes again). The caller hands the [`StockChange`] of a
    /// [`Reservation::Taken`] to [`Self::committed`] once its transaction commits.
    ///
    /// This locks the products' rows until the commit, so callers take stock last.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn take_stock(
        &self,
        conn: &mut PgConnection,
        lines: &[PricedLine],
    ) -> Result<Reservation, AppError> {
        let quoted: Vec<QuotedLine<'_>> = lines
            .iter()
            .map(|l| QuotedLine {
                product_id: l.product_id,
                quantity: l.quantity,
                sku: &l.sku,
                name: &l.name,
                unit_price_cents: l.unit_price_cents,
                currency: &l.currency,
            })
            .collect();
        let taken = self.products.take_stock(&mut *conn, &quoted).await?;
        if taken.len() == lines.len() {
            return Ok(Reservation::Taken(StockChange(taken)));
        }
        // Find out why, on the rows this transaction now holds, so the client gets the right
        // error. The caller rolls back.
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let current = self.products.find_many(&mut *conn, &ids).await?;
        let requests: Vec<StockRequest> = lines
            .iter()
            .map(|l| StockRequest {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let repriced = price_lines(&requests, &current)?;
        if repriced != lines {
            return Ok(Reservation::QuoteStale);
        }
        Err(AppError::conflict("insufficient stock"))
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
