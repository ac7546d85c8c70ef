//! Catalogue rules: who sees what, what a valid edit is, and stock reservation for orders.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::Page,
    products::{
        model::{NewProduct, Product, ProductPatch, ProductQuery},
        repository::{CachedProductRepository, StockLine},
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

/// A reserved line, priced at the moment of reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product reserved from.
    pub product_id: Uuid,
    /// SKU at the time.
    pub sku: String,
    /// Name at the time.
    pub name: String,
    /// Units reserved.
    pub quantity: i32,
    /// Unit price at the time, minor units.
    pub unit_price_cents: i64,
    /// ISO 4217 code of the unit price; an order takes one currency only.
    pub currency: String,
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

    /// Reserves stock for every line inside the caller's transaction, or fails without taking
    /// any: 422 for unknown or inactive products, 409 when there is not enough stock. The caller
    /// hands the returned [`StockChange`] to [`Self::committed`] once its transaction commits.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn reserve(
        &self,
        conn: &mut PgConnection,
        lines: &[StockRequest],
    ) -> Result<(Vec<PricedLine>, StockChange), AppError> {
        let stock_lines: Vec<StockLine> = lines
            .iter()
            .map(|l| StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let reserved = self.products.take_stock(&mut *conn, &stock_lines).await?;
        if reserved.len() != lines.len() {
            // Find out why, so the client gets the right error. The caller rolls back.
            let wanted: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
            let active: HashSet<Uuid> = self
                .products
                .active_ids(&mut *conn, &wanted)
                .await?
                .into_iter()
                .collect();
            if let Some((index, line)) = lines
                .iter()
                .enumerate()
                .find(|(_, l)| !active.contains(&l.product_id))
            {
                return Err(AppError::invalid_field(
                    format!("items[{index}].product_id"),
                    format!(
                        "product {} does not exist or is not available",
                        line.product_id
                    ),
                ));
            }
            return Err(AppError::conflict("insufficient stock"));
        }
        // Keep the caller's line order.
        let priced = lines
            .iter()
            .filter_map(|line| {
                reserved
                    .iter()
                    .find(|r| r.product.id == line.product_id)
                    .map(|r| PricedLine {
                        product_id: r.product.id,
                        sku: r.product.sku.clone(),
                        name: r.product.name.clone(),
                        quantity: r.quantity,
                        unit_price_cents: r.product.price_cents,
                        currency: r.product.currency.clone(),
                    })
            })
            .collect();
        let change = StockChange(reserved.into_iter().map(|r| r.product).collect());
        Ok((priced, change))
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
