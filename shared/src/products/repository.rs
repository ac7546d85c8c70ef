//! SQL for products, and the cached catalogue reads around it.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor, QueryBuilder};
use uuid::Uuid;

use crate::{
    cache::Cache,
    error::{AppError, ResultExt},
    pagination::Page,
    products::model::{NewProduct, Product, ProductPatch, ProductQuery},
};

const COLUMNS: &str =
    "id, sku, name, description, price_cents, currency, stock, active, created_at, updated_at";

/// One line of stock to take or give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLine {
    /// Product.
    pub product_id: Uuid,
    /// Units.
    pub quantity: i32,
}

/// A line whose stock was taken, with the product's data at that moment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservedRow {
    /// Product.
    pub product_id: Uuid,
    /// SKU at the time.
    pub sku: String,
    /// Name at the time.
    pub name: String,
    /// Unit price at the time.
    pub price_cents: i64,
    /// Currency.
    pub currency: String,
    /// Units taken.
    pub quantity: i32,
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
        sqlx::query_as::<_, Product>(&format!(
            "insert into products (id, sku, name, description, price_cents, currency, stock, active) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&p.sku)
        .bind(&p.name)
        .bind(&p.description)
        .bind(p.price_cents)
        .bind(&p.currency)
        .bind(p.stock)
        .bind(p.active)
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
        Ok(
            sqlx::query_as::<_, Product>(&format!("select {COLUMNS} from products where id = $1"))
                .bind(id)
                .fetch_optional(db)
                .await?,
        )
    }

    /// A page of the catalogue, in id (creation) order.
    #[tracing::instrument(skip_all)]
    pub async fn list<'e>(
        &self,
        db: impl PgExecutor<'e>,
        query: &ProductQuery,
    ) -> Result<Page<Product>, AppError> {
        let mut sql = QueryBuilder::new(format!("select {COLUMNS} from products where true"));
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
        sqlx::query_as::<_, Product>(&format!(
            "update products set sku = coalesce($2, sku), name = coalesce($3, name), \
             description = coalesce($4, description), price_cents = coalesce($5, price_cents), \
             currency = coalesce($6, currency), stock = coalesce($7, stock), active = coalesce($8, active) \
             where id = $1 returning {COLUMNS}"
        ))
        .bind(id)
        .bind(&patch.sku)
        .bind(&patch.name)
        .bind(&patch.description)
        .bind(patch.price_cents)
        .bind(&patch.currency)
        .bind(patch.stock)
        .bind(patch.active)
        .fetch_optional(db)
        .await
        .on_constraint("products_sku_key", sku_taken)
    }

    /// Inserts or updates products by SKU (imports); returns how many rows were written.
    #[tracing::instrument(skip_all, fields(rows = products.len()))]
    pub async fn upsert_by_sku(
        &self,
        conn: &mut PgConnection,
        products: &[NewProduct],
    ) -> Result<u64, AppError> {
        if products.is_empty() {
            return Ok(0);
        }
        let mut sql = QueryBuilder::new(
            "insert into products (id, sku, name, description, price_cents, currency, stock, active) ",
        );
        sql.push_values(products, |mut row, p| {
            row.push_bind(Uuid::now_v7())
                .push_bind(&p.sku)
                .push_bind(&p.name)
                .push_bind(&p.description)
                .push_bind(p.price_cents)
                .push_bind(&p.currency)
                .push_bind(p.stock)
                .push_bind(p.active);
        });
        sql.push(
            " on conflict (sku) do update set name = excluded.name, price_cents = excluded.price_cents, \
             currency = excluded.currency, stock = excluded.stock",
        );
        Ok(sql.build().execute(conn).await?.rows_affected())
    }

    /// Takes stock for every line, or for none: returns the lines it could take. Rows are locked
    /// in id order first, so two orders touching the same products cannot deadlock; the
    /// `stock >= quantity` check runs on the locked, latest row, so stock never goes below zero.
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn take_stock(
        &self,
        conn: &mut PgConnection,
        lines: &[StockLine],
    ) -> Result<Vec<ReservedRow>, AppError> {
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
        Ok(sqlx::query_as::<_, ReservedRow>(
            "with wanted as (select * from unnest($1::uuid[], $2::int[]) as w(product_id, quantity)), \
             locked as (select p.id from products p where p.id = any($1) order by p.id for update) \
             update products p set stock = p.stock - w.quantity \
             from wanted w \
             where p.id = w.product_id and p.active and p.stock >= w.quantity \
               and p.id in (select id from locked) \
             returning w.product_id, p.sku, p.name, p.price_cents, p.currency, w.quantity",
        )
        .bind(&ids)
        .bind(&quantities)
        .fetch_all(conn)
        .await?)
    }

    /// Gives stock back (cancelled orders).
    #[tracing::instrument(skip_all, fields(lines = lines.len()))]
    pub async fn return_stock(
        &self,
        conn: &mut PgConnection,
        lines: &[StockLine],
    ) -> Result<(), AppError> {
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
        sqlx::query(
            "update products p set stock = p.stock + w.quantity \
             from unnest($1::uuid[], $2::int[]) as w(product_id, quantity) where p.id = w.product_id",
        )
        .bind(&ids)
        .bind(&quantities)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Which of `ids` exist and are active.
    pub async fn active_ids<'e>(
        &self,
        db: impl PgExecutor<'e>,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>, AppError> {
        Ok(
            sqlx::query_scalar("select id from products where id = any($1) and active")
                .bind(ids)
                .fetch_all(db)
                .await?,
        )
    }
}

/// [`ProductRepository`] with product and catalogue-page reads served from Redis.
///
/// Stock taken by orders does not invalidate the cache: a cached product may show stock up to
/// the TTL old (60 s by default), which is what a catalogue cache is for; orders always check
/// stock in PostgreSQL. Catalogue edits invalidate at once.
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

    /// The SQL repository underneath.
    pub fn uncached(&self) -> &ProductRepository {
        &self.inner
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
            self.cache.set(&key, p, self.ttl).await;
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

    /// Forgets what a catalogue edit made stale: the product and every cached page.
    pub async fn invalidate(&self, ids: &[Uuid]) {
        let keys: Vec<String> = ids.iter().map(|id| Self::key(*id)).collect();
        self.cache.invalidate(&keys).await;
        self.cache.bump_generation(PAGES).await;
    }
}
