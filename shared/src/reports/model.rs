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
    /// Built, and its file deleted after `REPORT_RETENTION_DAYS`: a download is 410.
    Expired,
    /// Cancelled before it was built (or while it was: the partial file is deleted).
    Cancelled,
}

impl ReportStatus {
    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the build is over (nothing changes any more but expiry).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Report {
    /// UUIDv7, so reports sort by request time.
    pub id: Uuid,
    /// Who asked for it.
    pub user_id: Uuid,
    /// `sales` or `my_orders` ([`ReportKind`]).
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
    /// Data rows in the file; while it is built, the rows written so far.
    pub row_count: Option<i64>,
    /// File size.
    pub byte_size: Option<i64>,
    /// Where the file is in storage.
    pub file_key: Option<String>,
    /// Why the build failed.
    pub error: Option<String>,
    /// When the build finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// When the report was requested (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The queue job that builds it (absent on reports older than cancellation).
    pub job_id: Option<Uuid>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The schedule that made it (`None`: requested over HTTP, or its schedule was deleted).
    pub schedule_id: Option<Uuid>,
}

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Every order of the shop in the range, with each customer's email: admins only.
    Sales,
    /// The requesting customer's own orders in the range, in the same columns.
    MyOrders,
}

impl ReportKind {
    /// The kind's name, as clients send it and as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sales => "sales",
            Self::MyOrders => "my_orders",
        }
    }

    /// Parses a stored or requested kind.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw {
            "sales" => Ok(Self::Sales),
            "my_orders" => Ok(Self::MyOrders),
            _ => Err(AppError::invalid_field(
                "kind",
                "must be \"sales\" (admins) or \"my_orders\"",
            )),
        }
    }
}

/// A checked report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    /// What the report covers.
    pub kind: ReportKind,
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
        let kind = ReportKind::parse(kind)?;
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
            kind,
            format: format.to_owned(),
            from,
            to,
            run_at,
        })
    }
}

impl SalesRow {
    /// The CSV header, in the order of [`SalesRow::csv_record`].
    pub const CSV_HEADER: [&'static str; 10] = [
        "order_id",
        "placed_at",
        "status",
        "customer_email",
        "sku",
        "product_name",
        "quantity",
        "unit_price_cents",
        "line_total_cents",
        "currency",
    ];

    /// The row as CSV cells. Text that people or other systems chose (the email, the product
    /// name and SKU) goes through [`crate::csv_cell::neutralise`]; numbers stay numbers.
    pub fn csv_record(&self) -> [std::borrow::Cow<'_, str>; 10] {
        use std::borrow::Cow;

        use crate::csv_cell::neutralise;
        [
            Cow::Owned(self.order_id.to_string()),
            Cow::Owned(
                self.placed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            neutralise(&self.status),
            neutralise(&self.customer_email),
            neutralise(&self.sku),
            neutralise(&self.product_name),
            Cow::Owned(self.quantity.to_string()),
            Cow::Owned(self.unit_price_cents.to_string()),
            Cow::Owned(self.line_total_cents.to_string()),
            neutralise(&self.currency),
        ]
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
    /// Units ordered on the line.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_cents: i64,
    /// Line total, minor units.
    pub line_total_cents: i64,
    /// ISO 4217 code of the prices on the line.
    pub currency: String,
}
