//! Request and response shapes of the report schedule routes.

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    pagination::{Page, PageRequest},
    reports::{NewReportSchedule, ReportScheduleChanges, ReportScheduleView},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

/// `POST /reports/schedules` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReportScheduleRequest {
    /// `sales` (every customer's orders with their emails) or `my_orders` (your own).
    #[schema(example = "sales")]
    pub kind: String,
    /// File format; only `csv` exists (the default).
    #[serde(default = "default_format")]
    #[schema(example = "csv")]
    pub format: String,
    /// When it runs: five fields (`minute hour day month weekday`) or six with seconds first,
    /// at most once an hour.
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    #[schema(example = "0 0 7 * * Mon")]
    pub cron: String,
    /// The IANA time zone the expression and the period's days are read in (default `UTC`).
    #[serde(default = "default_time_zone")]
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
    /// The days each run covers: `previous_day`, `previous_week` (Monday to Sunday),
    /// `previous_month`, or `since_last_run` (from the day after the last report's last day
    /// through yesterday).
    #[schema(example = "previous_week")]
    pub period: String,
}

fn default_format() -> String {
    "csv".into()
}

fn default_time_zone() -> String {
    "UTC".into()
}

impl TryFrom<CreateReportScheduleRequest> for NewReportSchedule {
    type Error = AppError;

    fn try_from(body: CreateReportScheduleRequest) -> Result<Self, Self::Error> {
        NewReportSchedule::parse(
            &body.kind,
            &body.format,
            &body.cron,
            &body.timezone,
            &body.period,
        )
    }
}

/// `PATCH /reports/schedules/{id}` body: any subset of the fields.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateReportScheduleRequest {
    /// `sales` or `my_orders`; its next reports are of this kind.
    #[schema(example = "sales")]
    pub kind: Option<String>,
    /// Only `csv` exists.
    #[schema(example = "csv")]
    pub format: Option<String>,
    /// A cron expression in the same forms as at creation; its ticks start afresh from now.
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    #[schema(example = "0 0 7 1 * *")]
    pub cron: Option<String>,
    /// An IANA time zone; its ticks start afresh from now.
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// `previous_day`, `previous_week`, `previous_month` or `since_last_run`; applies from the
    /// next run.
    #[schema(example = "previous_month")]
    pub period: Option<String>,
    /// `true` pauses it (its ticks make no report), `false` resumes it from its next tick.
    #[schema(example = false)]
    pub paused: Option<bool>,
}

impl TryFrom<UpdateReportScheduleRequest> for ReportScheduleChanges {
    type Error = AppError;

    fn try_from(body: UpdateReportScheduleRequest) -> Result<Self, Self::Error> {
        ReportScheduleChanges::parse(
            body.kind.as_deref(),
            body.format.as_deref(),
            body.cron.as_deref(),
            body.timezone.as_deref(),
            body.period.as_deref(),
            body.paused,
        )
    }
}

/// `GET /reports/schedules` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportSchedulePageQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ReportSchedulePageQuery {
    /// The page request.
    pub fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// A report schedule: which report it requests, when, and for which days.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportScheduleResponse {
    /// The schedule's id, for `/reports/schedules/{id}`.
    #[schema(example = "01a15860-c7a0-7f15-8f70-434aca6a4e43")]
    pub id: Uuid,
    /// The admin who created it: its reports are theirs and emailed to them.
    #[schema(example = "01a05bfb-7000-71cb-8a41-30cf58c2774d")]
    pub owner_id: Uuid,
    /// `sales` or `my_orders`.
    #[schema(example = "sales")]
    pub kind: String,
    /// The format of its reports; only `csv` exists.
    #[schema(example = "csv")]
    pub format: String,
    /// When it runs, read in `timezone`: five fields, or six with seconds first.
    #[schema(example = "0 0 7 * * Mon")]
    pub cron: String,
    /// The IANA time zone of `cron` and of the period's days.
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
    /// `previous_day`, `previous_week`, `previous_month` or `since_last_run`.
    #[schema(example = "previous_week")]
    pub period: &'static str,
    /// A paused schedule's ticks make no report.
    #[schema(example = false)]
    pub paused: bool,
    /// Its next run (RFC 3339, UTC); absent while paused (or while the scheduler has not
    /// picked it up yet).
    #[schema(example = "2026-12-07T06:00:00Z")]
    pub next_run_at: Option<DateTime<Utc>>,
    /// When its last run started (RFC 3339, UTC), if it ran.
    #[schema(example = "2026-11-30T06:00:00Z")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// The reports it made: `GET` this.
    #[schema(example = "/api/v1/reports?schedule_id=01a15860-c7a0-7f15-8f70-434aca6a4e43")]
    pub reports_url: String,
    /// Created (RFC 3339, UTC).
    #[schema(example = "2026-10-20T08:15:00Z")]
    pub created_at: DateTime<Utc>,
    /// Last changed by `PATCH /reports/schedules/{id}` (RFC 3339, UTC); runs do not count.
    #[schema(example = "2026-10-20T08:15:00Z")]
    pub updated_at: DateTime<Utc>,
}

impl From<ReportScheduleView> for ReportScheduleResponse {
    fn from(view: ReportScheduleView) -> Self {
        let s = view.schedule;
        Self {
            reports_url: format!("/api/v1/reports?schedule_id={}", s.id),
            id: s.id,
            owner_id: s.user_id,
            kind: s.kind,
            format: s.format,
            cron: s.cron,
            timezone: s.time_zone,
            period: s.period.as_str(),
            paused: s.paused,
            next_run_at: view.next_run_at,
            last_run_at: view.last_run_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A page of report schedules.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportSchedulePage {
    /// Schedules, newest first.
    pub items: Vec<ReportScheduleResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<ReportScheduleView>> for ReportSchedulePage {
    fn from(page: Page<ReportScheduleView>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
