//! The product model and its parsed inputs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{error::AppError, pagination::PageRequest};

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Stock-keeping unit, unique.
    pub sku: String,
    /// Shown to customers; 1 to 200 characters without control characters.
    pub name: String,
    /// Free text, at most 5,000 characters (may be empty).
    pub description: String,
    /// Price in minor units (cents).
    pub price_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units available.
    pub stock: i32,
    /// Inactive products are hidden from customers and cannot be ordered.
    pub active: bool,
    /// When the product was created (UTC); never changes.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Moves on with every change (stock included): a cached copy is only ever replaced by a
    /// newer one.
    pub version: i64,
}

/// Largest stock a product may hold.
pub const MAX_STOCK: i32 = 1_000_000_000;
/// Largest price, in minor units (ten billion in major units).
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;

/// Checks a SKU: 1 to 64 characters of letters, digits, `-`, `_` and `.`.
pub fn parse_sku(raw: &str) -> Result<String, AppError> {
    let sku = raw.trim();
    if sku.is_empty()
        || sku.len() > 64
        || !sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(AppError::invalid_field(
            "sku",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(sku.to_owned())
}

/// Checks a product name: 1 to 200 characters, no control characters.
pub fn parse_name(raw: &str) -> Result<String, AppError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AppError::invalid_field(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks a description: at most 5000 characters, no NUL (which PostgreSQL's text cannot hold).
pub fn parse_description(raw: &str) -> Result<String, AppError> {
    if raw.contains('\0') {
        return Err(AppError::invalid_field(
            "description",
            "must not contain NUL characters",
        ));
    }
    if raw.chars().count() > 5000 {
        return Err(AppError::invalid_field(
            "description",
            "must be at most 5000 characters",
        ));
    }
    Ok(raw.trim().to_owned())
}

/// Checks a price in minor units.
pub fn parse_price(cents: i64) -> Result<i64, AppError> {
    if !(0..=MAX_PRICE_CENTS).contains(&cents) {
        return Err(AppError::invalid_field(
            "price_cents",
            format!("must be between 0 and {MAX_PRICE_CENTS}"),
        ));
    }
    Ok(cents)
}

/// Checks an ISO 4217 currency code (three capital letters).
pub fn parse_currency(raw: &str) -> Result<String, AppError> {
    let code = raw.trim();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(AppError::invalid_field(
            "currency",
            "must be a three-letter ISO 4217 code such as EUR",
        ));
    }
    Ok(code.to_owned())
}

/// Checks a stock level.
pub fn parse_stock(stock: i64) -> Result<i32, AppError> {
    i32::try_from(stock)
        .ok()
        .filter(|s| (0..=MAX_STOCK).contains(s))
        .ok_or_else(|| {
            AppError::invalid_field("stock", format!("must be between 0 and {MAX_STOCK}"))
        })
}

/// A product to create, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// SKU.
    pub sku: String,
    /// Shown to customers; 1 to 200 characters without control characters.
    pub name: String,
    /// Free text, at most 5,000 characters (may be empty).
    pub description: String,
    /// Price in minor units.
    pub price_cents: i64,
    /// ISO 4217 code of `price_cents`, e.g. `EUR`.
    pub currency: String,
    /// Initial stock.
    pub stock: i32,
    /// Visible and orderable.
    pub active: bool,
}

/// A partial update; `None` fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    /// New SKU.
    pub sku: Option<String>,
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New price.
    pub price_cents: Option<i64>,
    /// New currency.
    pub currency: Option<String>,
    /// New stock level.
    pub stock: Option<i32>,
    /// New visibility.
    pub active: Option<bool>,
}

impl ProductPatch {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A catalogue query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductQuery {
    /// Matches name or SKU, case-insensitively, anywhere in the text.
    pub search: Option<String>,
    /// Include inactive products (admins only).
    pub include_inactive: bool,
    /// Limit and cursor of the page asked for.
    pub page: PageRequest,
}
