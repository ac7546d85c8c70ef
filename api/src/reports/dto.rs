//! Request and response shapes of the reports routes.

use chrono::{DateTime, NaiveDate, Utc};
use orderly::{
    error::AppError,
    pagination::{Page, PageRequest},
    reports::{Report, ReportRequest},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

/// `POST /reports` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReportRequest {
    /// `sales`: every customer's orders with their emails (admins only, 403 otherwise);
    /// `my_orders`: your own orders, in the same columns.
    #[schema(example = "my_orders")]
    pub kind: String,
    /// First day included (UTC), `YYYY-MM-DD`.
    #[schema(value_type = String, example = "2026-11-01")]
    pub from: NaiveDate,
    /// Last day included (UTC), `YYYY-MM-DD`; not before `from`, at most 1830 days after it.
    #[schema(value_type = String, example = "2026-11-30")]
    pub to: NaiveDate,
    /// File format; only `csv` exists (the default).
    #[serde(default = "default_format")]
    #[schema(example = "csv")]
    pub format: String,
    /// Build no earlier than this time (RFC 3339), at most 30 days ahead; absent or null:
    /// build now.
    #[schema(example = json!(null))]
    pub run_at: Option<DateTime<Utc>>,
}

fn default_format() -> String {
    "csv".into()
}

impl TryFrom<CreateReportRequest> for ReportRequest {
    type Error = AppError;

    fn try_from(body: CreateReportRequest) -> Result<Self, Self::Error> {
        ReportRequest::parse(&body.kind, &body.format, body.from, body.to, body.run_at)
    }
}

/// `202` answer to a report request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAccepted {
    /// Follow the build at `GET /reports/{id}` or `GET /reports/{id}/events`.
    #[schema(example = "01a230e0-1ab8-76bc-8201-2dc32074d5ca")]
    pub id: Uuid,
    /// Always `queued`.
    #[schema(example = "queued")]
    pub status: &'static str,
}

/// A report: what it covers, where its build stands, and where to download it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResponse {
    /// The report's id, for `GET /reports/{id}` and the download.
    #[schema(example = "01a230e0-1ab8-76bc-8201-2dc32074d5ca")]
    pub id: Uuid,
    /// `sales` (every customer's orders) or `my_orders` (the requester's own).
    #[schema(example = "my_orders")]
    pub kind: String,
    /// The file's format; only `csv` exists.
    #[schema(example = "csv")]
    pub format: String,
    /// First day covered (UTC), `YYYY-MM-DD`.
    #[schema(value_type = String, example = "2026-11-01")]
    pub from: NaiveDate,
    /// Last day covered (UTC), `YYYY-MM-DD`.
    #[schema(value_type = String, example = "2026-11-30")]
    pub to: NaiveDate,
    /// `queued`, `running`, `ready`, `failed`, `cancelled`, or `expired` (built, and its file
    /// deleted after the retention period: download answers 410).
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Data rows in the file (the header not counted), once ready; while it is built, the rows
    /// written so far.
    #[schema(example = 412)]
    pub row_count: Option<i64>,
    /// File size in bytes, once ready.
    #[schema(example = 48_716)]
    pub byte_size: Option<i64>,
    /// Why the build failed (or, while `queued` again, why the last attempt failed); null
    /// once it is ready.
    #[schema(example = json!(null))]
    pub error: Option<String>,
    /// Where to download it, once ready (a path on this api, with the same bearer token).
    #[schema(example = "/api/v1/reports/01a230e0-1ab8-76bc-8201-2dc32074d5ca/download")]
    pub download_url: Option<String>,
    /// When it was requested (RFC 3339, UTC).
    #[schema(example = "2026-12-01T09:12:03Z")]
    pub created_at: DateTime<Utc>,
    /// When the build completed (RFC 3339, UTC); absent for a failed or cancelled report.
    #[schema(example = "2026-12-01T09:12:05Z")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was cancelled (RFC 3339, UTC).
    #[schema(example = json!(null))]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The report schedule that made it (absent: requested over HTTP, or the schedule was
    /// deleted since).
    #[schema(example = json!(null))]
    pub schedule_id: Option<Uuid>,
}

impl From<Report> for ReportResponse {
    fn from(r: Report) -> Self {
        let ready = r.status == orderly::reports::ReportStatus::Ready;
        Self {
            download_url: ready.then(|| format!("/api/v1/reports/{}/download", r.id)),
            id: r.id,
            kind: r.kind,
            format: r.format,
            from: r.from_date,
            to: r.to_date,
            status: r.status.as_str(),
            row_count: r.row_count,
            byte_size: r.byte_size,
            error: r.error,
            created_at: r.created_at,
            completed_at: r.completed_at,
            cancelled_at: r.cancelled_at,
            schedule_id: r.schedule_id,
        }
    }
}

/// `GET /reports` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListReportsQuery {
    /// Only the reports this report schedule made.
    pub schedule_id: Option<Uuid>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListReportsQuery {
    /// The page request.
    pub fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// A page of reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportPage {
    /// Reports, newest first.
    pub items: Vec<ReportResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<Report>> for ReportPage {
    fn from(page: Page<Report>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
