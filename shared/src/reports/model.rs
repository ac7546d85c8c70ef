//! The report model and a parsed report request.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AppError;

/// Where a report's build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ReportStatus {
    /// Waiting for a worker (possibly until `run_at`).
    Queued,
    /// Being built.
    Running,
    /// Built; downloadable.
    Ready,
    /// Failed; see `error`.
    Failed,
}

impl ReportStatus {
    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

/// A report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Report {
    /// Id.
    pub id: Uuid,
    /// Who asked for it.
    pub user_id: Uuid,
    /// `sales`.
    pub kind: String,
    /// `csv`.
    pub format: String,
    /// First day included.
    pub from_date: NaiveDate,
    /// Last day included.
    pub to_date: NaiveDate,
    /// Build status.
    pub status: ReportStatus,
    /// Not built before this time.
    pub run_at: Option<DateTime<Utc>>,
    /// Data rows in the file.
    pub row_count: Option<i64>,
    /// File size.
    pub byte_size: Option<i64>,
    /// Where the file is in storage.
    pub file_key: Option<String>,
    /// Why the build failed.
    pub error: Option<String>,
    /// When the build finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Requested.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A checked report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    /// `sales`.
    pub kind: String,
    /// `csv`.
    pub format: String,
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Build no earlier than this.
    pub run_at: Option<DateTime<Utc>>,
}

/// Longest range one report may cover.
pub const MAX_RANGE_DAYS: i64 = 366 * 5;

impl ReportRequest {
    /// Checks kind, format, range and schedule.
    pub fn parse(
        kind: &str,
        format: &str,
        from: NaiveDate,
        to: NaiveDate,
        run_at: Option<DateTime<Utc>>,
    ) -> Result<Self, AppError> {
        if kind != "sales" {
            return Err(AppError::invalid_field("kind", "must be \"sales\""));
        }
        if format != "csv" {
            return Err(AppError::invalid_field("format", "must be \"csv\""));
        }
        if from > to {
            return Err(AppError::invalid_field("from", "must not be after `to`"));
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(AppError::invalid_field(
                "to",
                format!("the range may cover at most {MAX_RANGE_DAYS} days"),
            ));
        }
        if let Some(at) = run_at
            && at > Utc::now() + chrono::Duration::days(30)
        {
            return Err(AppError::invalid_field(
                "run_at",
                "must be within the next 30 days",
            ));
        }
        Ok(Self {
            kind: kind.to_owned(),
            format: format.to_owned(),
            from,
            to,
            run_at,
        })
    }
}

/// One line of a sales report: an order line with its order's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SalesRow {
    /// Order id.
    pub order_id: Uuid,
    /// When the order was placed (RFC 3339).
    pub placed_at: DateTime<Utc>,
    /// Order status.
    pub status: String,
    /// Customer email.
    pub customer_email: String,
    /// SKU.
    pub sku: String,
    /// Product name at the time.
    pub product_name: String,
    /// Units.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_cents: i64,
    /// Line total, minor units.
    pub line_total_cents: i64,
    /// Currency.
    pub currency: String,
}
