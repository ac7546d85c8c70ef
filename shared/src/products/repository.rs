//! SQL for products, and the cached catalogue reads around it.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor, PgPool, QueryBuilder};
use uuid::Uuid;

use crate::{
    cache::Cache,
    error::{AppError, ResultExt},
    pagination::Page,
    products::model::{NewProduct, Product, ProductPatch, ProductQuery},
};

/// One line of stock to give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLine {
    /// The product whose stock is returned.
    pub product_id: Uuid,
    /// Units to give back; at least 1.
    pub quantity: i32,
}

/// Why a commit refused the stock its order lines take: the codes the stock trigger raises
/// with (`take_stock_of_order`, migration 0021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockRefusal {
    /// `ORD01`: a product changed after the order was priced, or was withdrawn.
    QuoteStale,
    /// `ORD02`: not enough stock of a product.
    Insufficient,
}

impl StockRefusal {
    /// The refusal a failed statement or commit carries, if it is one.
    pub fn of(error: &sqlx::Error) -> Option<Self> {
        let sqlx::Error::Database(db) = error else {
            return None;
        };
        match db.code().as_deref() {
            Some("ORD01") => Some(Self::QuoteStale),
            Some("ORD02") => Some(Self::Insufficient),
            _ => None,
        }
    }
}

fn sku_taken(_: Box<dyn sqlx::error::DatabaseError>) -> AppError {
    AppError::conflict("a product with this sku already exists")
}

/// Products in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductRepository;

impl ProductRepository {
    /// Inserts a product; a taken SKU is a 409.
    #[tracing::instrument(skip_all)]
    pub async fn insert<'e>(
        &self,
        db: impl PgExecutor<'e>,
        p: &NewProduct,
    ) -> Result<Product, AppError> {
        sqlx::query_as!(
            Product,
            "insert into products (id, sku, name, description, price_cents, currency, stock, active) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) \
             returning id, sku, name, description, price_cents, currency, stock, active, \
                       created_at, updated_at, version",
            Uuid::now_v7(),
            p.sku,
            p.name,
            p.description,
            p.price_cents,
            p.currency,
            p.stock,
            p.active,
        )
        .fetch_one(db)
        .await
        .on_constraint("products_sku_key", sku_taken)
    }

    /// A product by id, active or not.
    #[tracing::instrument(skip_all)]
    pub async fn find_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Product>, AppError> {
        Ok(sqlx::query_as!(
            Product,
            "select id, sku, name, description, price_cents, currency, stock, active, \
                    created_at, updated_at, version \
             from products where id = $1",
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// A page of the catalogue, in id (creation) order.
    #[tracing::instrument(skip_all)]
    pub async fn list<'e>(
        &self,
        db: impl PgExecutor<'e>,
        query: &ProductQuery,
    ) -> Result<Page<Product>, AppError> {
        // Checked at run time: each optional filter adds its own condition, so the cursor stays
        // an index bound (`($n::uuid is null or id > $n)` would not be one in a generic plan).
        let mut sql = QueryBuilder::new(
            "select id, sku, name, description, price_cents, currency, stock, active, \
                    created_at, updated_at, version \
             from products where true",
        );
        if !query.include_inactive {
            sql.push(" and active");
        }
        if let Some(search) = &query.search {
            let pattern = format!(
                "%{}%",
                search
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            sql.push(" and (name ilike ")
                .push_bind(pattern.clone())
                .push(" or sku ilike ")
                .push_bind(pattern)
                .push(")");
        }
        if let Some(cursor) = query.page.cursor {
            sql.push(" and id > ").push_bind(cursor);
        }
        sql.push(" order by id limit ")
            .push_bind(query.page.fetch_limit());
        let rows = sql.build_query_as::<Product>().fetch_all(db).await?;
        Ok(Page::from_rows(rows, &query.page, |p| p.id))
    }

    /// Applies a patch; `None` if there is no such product.
    #[tracing::instrument(skip_all)]
    pub async fn update<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        patch: &ProductPatch,
    ) -> Result<Option<Product>, AppError> {
        sqlx::query_as!(
            Product,
            "update products set sku = coalesce($2, sku), name = coalesce($3, name), \
             description = coalesce($4, description), price_cents = coalesce($5, price_cents), \
             currency = coalesce($6, currency), stock = coalesce($7, stock), active = coalesce($8, active) \
             where id = $1 \
             returning id, sku, name, description, price_cents, currency, stock, active, \
                       created_at, updated_at, version",
            id,
            patch.sku,
            patch.name,
            patch.description,
            patch.price_cents,
            patch.currency,
            patch.stock,
            patch.active,
        )
        .fetch_optional(db)
        .await
        .on_constraint("products_sku_key", sku_taken)
    }

    /// Inserts or updates products by SKU (imports); returns the rows as written.
    #[tracing::instrument(skip_all, fields(rows = products.len()))]
    pub async fn upsert_by_sku(
        &self,
        conn: &mut PgConnection,
        products: &[NewProduct],
    ) -> Result<Vec<Product>, AppError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        // One row per product through arrays (as the order path does), so every batch size is
        // the same prepared statement.
        let ids: Vec<Uuid> = products.iter().map(|_| Uuid::now_v7()).collect();
        let skus: Vec<&str> = products.iter().map(|p| p.sku.as_str()).collect();
        let names: Vec<&str> = products.iter().map(|p| p.name.as_str()).collect();
        let descriptions: Vec<&str> = products.iter().map(|p| p.description.as_str()).collect();
        let prices: Vec<i64> = products.iter().map(|p| p.price_cents).collect();
        let currencies: Vec<&str> = products.iter().map(|p| p.currency.as_str()).collect();
        let stocks: Vec<i32> = products.iter().map(|p| p.stock).collect();
        let actives: Vec<bool> = products.iter().map(|p| p.active).collect();
        Ok(sqlx::query_as!(
            Product,
            "insert into products (id, sku, name, description, price_cents, currency, stock, active) \
             select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                                  $6::text[], $7::int[], $8::bool[]) \
             on conflict (sku) do update set name = excluded.name, price_cents = excluded.price_cents, \
             currency = excluded.currency, stock = excluded.stock \
             returning id, sku, name, description, price_cents, currency, stock, active, \
                       created_at, updated_at, version",
            &ids,
            &skus as &[&str],
            &names as &[&str],
            &descriptions as &[&str],
            &prices,
            &currencies as &[&str],
            &stocks,
            &actives,
        )
        .fetch_all(conn)
        .await?)
    }

    /// Gives stock back (cancelled orders); returns the products as they are now.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn return_stock(
        &self,
        conn: &mut PgConnection,
        lines: &[StockLine],
    ) -> Result<Vec<Product>, AppError> {
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
        Ok(sqlx::query_as!(
            Product,
            "update products p set stock = p.stock + w.quantity \
             from unnest($1::uuid[], $2::int[]) as w(product_id, quantity) where p.id = w.product_id \
             returning p.id, p.sku, p.name, p.description, p.price_cents, p.currency, p.stock, \
                       p.active, p.created_at, p.updated_at, p.version",
            &ids,
            &quantities,
        )
        .fetch_all(conn)
        .await?)
    }

    /// The products with these ids, active or not, read from PostgreSQL.
    #[tracing::instrument(skip_all, fields(ids = ids.len()))]
    pub async fn find_many<'e>(
        &self,
        db: impl PgExecutor<'e>,
        ids: &[Uuid],
    ) -> Result<Vec<Product>, AppError> {
        Ok(sqlx::query_as!(
            Product,
            "select id, sku, name, description, price_cents, currency, stock, active, \
                    created_at, updated_at, version \
             from products where id = any($1)",
            ids,
        )
        .fetch_all(db)
        .await?)
    }
}

/// [`ProductRepository`] with product and catalogue-page reads served from Redis, and the only
/// way services reach products: it owns every cache update.
///
/// Writes come in two kinds. Those that commit on their own (`create`, `update`, on the pool)
/// update the cache themselves before they return. Those that run inside the caller's
/// transaction (`return_stock`, `upsert_by_sku`) cannot: the rows they return are not committed
/// yet, so the caller hands them to [`Self::store`] or [`Self::edited`] once its commit
/// succeeded (and drops them on a rollback). Stock an order takes is taken by its commit
/// (migration 0021), which returns no rows: the order's products are read again after it.
///
/// A product read shows committed stock within milliseconds on every api instance: whatever
/// changes a product (an order taking stock, a cancellation, an edit, an import) hands the rows
/// it wrote to [`CachedProductRepository::store`] after its commit, which replaces the cached
/// copy only with a newer version (`products.version`), so a slower reader can never put an
/// older copy back; Redis then tells every instance's near cache to drop its copy. Catalogue
/// pages (lists) are cached whole and refreshed by edits and imports, not by orders: the stock a
/// list shows may be up to `CACHE_TTL_SECS` old, while the product itself is current.
#[derive(Debug, Clone)]
pub struct CachedProductRepository {
    inner: ProductRepository,
    cache: Cache,
    ttl: Duration,
}

/// Cache group of catalogue pages; bumped on every catalogue edit.
const PAGES: &str = "products:pages";

impl CachedProductRepository {
    /// Wraps the repository.
    pub fn new(cache: Cache, ttl: Duration) -> Self {
        Self {
            inner: ProductRepository,
            cache,
            ttl,
        }
    }

    /// Cache key of one product.
    pub fn key(id: Uuid) -> String {
        format!("product:{id}")
    }

    /// A product by id, from Redis when cached.
    pub async fn find_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Product>, AppError> {
        let key = Self::key(id);
        if let Some(product) = self.cache.get::<Product>(&key).await {
            return Ok(Some(product));
        }
        let product = self.inner.find_by_id(db, id).await?;
        if let Some(p) = &product {
            self.cache.set_versioned(&key, p.version, p, self.ttl).await;
        }
        Ok(product)
    }

    /// A catalogue page, from Redis when cached.
    pub async fn list<'e>(
        &self,
        db: impl PgExecutor<'e>,
        query: &ProductQuery,
    ) -> Result<Page<Product>, AppError> {
        let generation = self.cache.generation(PAGES).await;
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let text = serde_json::to_string(query).unwrap_or_default();
            hex::encode(&Sha256::digest(text.as_bytes())[..12])
        };
        let key = format!("products:page:{generation}:{fingerprint}");
        if let Some(page) = self.cache.get::<Page<Product>>(&key).await {
            return Ok(page);
        }
        let page = self.inner.list(db, query).await?;
        self.cache.set(&key, &page, self.ttl).await;
        Ok(page)
    }

    /// Inserts a product in its own (autocommit) statement; a taken SKU is a 409. The new
    /// product is cached and cached pages are retired.
    pub async fn create(&self, pool: &PgPool, p: &NewProduct) -> Result<Product, AppError> {
        let created = self.inner.insert(pool, p).await?;
        self.edited(std::slice::from_ref(&created)).await;
        Ok(created)
    }

    /// Applies a patch in its own (autocommit) statement; `None` if there is no such product.
    /// The product as written is cached and cached pages are retired.
    pub async fn update(
        &self,
        pool: &PgPool,
        id: Uuid,
        patch: &ProductPatch,
    ) -> Result<Option<Product>, AppError> {
        let updated = self.inner.update(pool, id, patch).await?;
        if let Some(product) = &updated {
            self.edited(std::slice::from_ref(product)).await;
        }
        Ok(updated)
    }

    /// Gives stock back inside the caller's transaction; the caller hands the products to
    /// [`Self::store`] after its commit.
    pub async fn return_stock(
        &self,
        conn: &mut PgConnection,
        lines: &[StockLine],
    ) -> Result<Vec<Product>, AppError> {
        self.inner.return_stock(conn, lines).await
    }

    /// Inserts or updates products by SKU inside the caller's transaction (imports); the caller
    /// hands the products to [`Self::edited`] after its commit.
    pub async fn upsert_by_sku(
        &self,
        conn: &mut PgConnection,
        products: &[NewProduct],
    ) -> Result<Vec<Product>, AppError> {
        self.inner.upsert_by_sku(conn, products).await
    }

    /// The products with these ids as PostgreSQL has them now (inside a transaction that holds
    /// their rows, or when a cached copy proved stale), active or not.
    pub async fn find_many<'e>(
        &self,
        db: impl PgExecutor<'e>,
        ids: &[Uuid],
    ) -> Result<Vec<Product>, AppError> {
        self.inner.find_many(db, ids).await
    }

    /// Puts products that a committed change wrote into the cache (unless it already holds a
    /// newer version of one).
    pub async fn store(&self, products: &[Product]) {
        // Side by side rather than one after another: over the one multiplexed connection they
        // leave together, so storing many products (the stock a batch of orders took) costs one
        // round trip of waiting, not one per product.
        futures::future::join_all(products.iter().map(|product| {
            let key = Self::key(product.id);
            async move {
                self.cache
                    .set_versioned(&key, product.version, product, self.ttl)
                    .await;
            }
        }))
        .await;
    }

    /// Drops products from the cache (every instance's near copy too), for when their current
    /// rows cannot be read.
    pub async fn forget(&self, ids: &[Uuid]) {
        let keys: Vec<String> = ids.iter().map(|id| Self::key(*id)).collect();
        self.cache.invalidate(&keys).await;
    }

    /// After a catalogue edit committed: stores the products it wrote and retires every cached
    /// page.
    pub async fn edited(&self, products: &[Product]) {
        self.store(products).await;
        self.cache.bump_generation(PAGES).await;
    }
}
