//! Request and response shapes of the products routes.

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    pagination::{Page, PageRequest},
    products::{
        NewProduct, Product, ProductPatch,
        model::{
            parse_currency, parse_description, parse_name, parse_price, parse_sku, parse_stock,
        },
    },
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

/// `POST /products` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// Unique stock-keeping unit: letters, digits, `-`, `_`, `.`.
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    #[schema(example = "MUG-001")]
    pub sku: String,
    /// What customers see and search; trimmed, 1 to 200 characters, no control characters.
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(example = "Coffee mug")]
    pub name: String,
    /// Free text, empty by default; no NUL characters.
    #[serde(default)]
    #[validate(length(max = 5000, message = "must be at most 5000 characters"))]
    #[schema(example = "Stoneware, 350 ml, dishwasher safe.")]
    pub description: String,
    /// Price in minor units (cents).
    #[validate(range(
        min = 0,
        max = 1_000_000_000_000_i64,
        message = "must be between 0 and 1000000000000"
    ))]
    #[schema(example = 1299)]
    pub price_cents: i64,
    /// ISO 4217 currency code.
    #[validate(length(equal = 3, message = "must be a three-letter ISO 4217 code"))]
    #[schema(example = "EUR")]
    pub currency: String,
    /// Units in stock.
    #[validate(range(
        min = 0,
        max = 1_000_000_000,
        message = "must be between 0 and 1000000000"
    ))]
    #[schema(example = 100)]
    pub stock: i64,
    /// Visible and orderable (default true).
    #[serde(default = "default_true")]
    pub active: bool,
}

fn default_true() -> bool {
    true
}

impl TryFrom<CreateProductRequest> for NewProduct {
    type Error = AppError;

    fn try_from(body: CreateProductRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            sku: parse_sku(&body.sku)?,
            name: parse_name(&body.name)?,
            description: parse_description(&body.description)?,
            price_cents: parse_price(body.price_cents)?,
            currency: parse_currency(&body.currency)?,
            stock: parse_stock(body.stock)?,
            active: body.active,
        })
    }
}

/// `PATCH /products/{id}` body: any subset of the fields.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    /// New SKU.
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    #[schema(example = "MUG-001")]
    pub sku: Option<String>,
    /// New name.
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(example = "Coffee mug, large")]
    pub name: Option<String>,
    /// New description.
    #[validate(length(max = 5000, message = "must be at most 5000 characters"))]
    #[schema(example = "Stoneware, 450 ml, dishwasher safe.")]
    pub description: Option<String>,
    /// New price in minor units.
    #[validate(range(
        min = 0,
        max = 1_000_000_000_000_i64,
        message = "must be between 0 and 1000000000000"
    ))]
    #[schema(example = 1499)]
    pub price_cents: Option<i64>,
    /// New currency.
    #[validate(length(equal = 3, message = "must be a three-letter ISO 4217 code"))]
    #[schema(example = "EUR")]
    pub currency: Option<String>,
    /// New stock level.
    #[validate(range(
        min = 0,
        max = 1_000_000_000,
        message = "must be between 0 and 1000000000"
    ))]
    #[schema(example = 250)]
    pub stock: Option<i64>,
    /// New visibility.
    #[schema(example = true)]
    pub active: Option<bool>,
}

impl TryFrom<UpdateProductRequest> for ProductPatch {
    type Error = AppError;

    fn try_from(body: UpdateProductRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            sku: body.sku.as_deref().map(parse_sku).transpose()?,
            name: body.name.as_deref().map(parse_name).transpose()?,
            description: body
                .description
                .as_deref()
                .map(parse_description)
                .transpose()?,
            price_cents: body.price_cents.map(parse_price).transpose()?,
            currency: body.currency.as_deref().map(parse_currency).transpose()?,
            stock: body.stock.map(parse_stock).transpose()?,
            active: body.active,
        })
    }
}

/// `GET /products` query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProductsQuery {
    /// Search in name and SKU.
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub q: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListProductsQuery {
    /// The page request.
    pub fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// A product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    /// UUIDv7; what orders and image uploads refer to.
    pub id: Uuid,
    /// Unique stock-keeping unit; imports match existing products by it.
    #[schema(example = "MUG-001")]
    pub sku: String,
    /// Current name; orders keep the name they were placed with.
    #[schema(example = "Coffee mug")]
    pub name: String,
    /// Free text, possibly empty.
    #[schema(example = "Stoneware, 350 ml, dishwasher safe.")]
    pub description: String,
    /// Price in minor units.
    #[schema(example = 1299)]
    pub price_cents: i64,
    /// ISO 4217 code of `price_cents`.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Units in stock (may be up to a minute old when served from the cache).
    #[schema(example = 100)]
    pub stock: i32,
    /// Visible and orderable.
    pub active: bool,
    /// When the product was added (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Last edit, stock change included (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductResponse {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            stock: p.stock,
            active: p.active,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    /// The products.
    pub items: Vec<ProductResponse>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<Product>> for ProductPage {
    fn from(page: Page<Product>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
