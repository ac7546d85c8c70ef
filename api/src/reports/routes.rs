//! `/reports`: request a sales report (built by a worker), follow it live, cancel it, download
//! the file.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use orderly::{
    error::{AppError, ErrorBody},
    reports::{ReportCancel, ReportRequest},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    extract::{Path, Query, ValidatedJson},
    live,
    reports::dto::{
        CreateReportRequest, ListReportsQuery, ReportAccepted, ReportPage, ReportResponse,
    },
    state::AppState,
};

/// The reports routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_report, list_reports))
        .routes(routes!(get_report))
        .routes(routes!(download_report))
        .routes(routes!(cancel_report))
        .routes(routes!(report_events))
}

/// Request a report; a worker builds it (at `run_at` if given) and emails you when it is ready.
#[utoipa::path(post, path = "/reports", tag = "reports", request_body = CreateReportRequest, security(("bearer" = [])),
    responses((status = 202, body = ReportAccepted), (status = 401, body = ErrorBody),
        (status = 403, description = "A customer asked for the shop-wide sales report", body = ErrorBody),
        (status = 409, description = "Too many of your reports are queued or running", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_report(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ValidatedJson(body): ValidatedJson<CreateReportRequest>,
) -> Result<(StatusCode, Json<ReportAccepted>), AppError> {
    let report = state
        .services
        .reports
        .request(&actor, ReportRequest::try_from(body)?)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReportAccepted {
            id: report.id,
            status: "queued",
        }),
    ))
}

/// Your reports, newest first (admins: everyone's); `schedule_id` keeps those a report schedule
/// made.
#[utoipa::path(get, path = "/reports", tag = "reports", params(ListReportsQuery), security(("bearer" = [])),
    responses((status = 200, body = ReportPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_reports(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Query(query): Query<ListReportsQuery>,
) -> Result<Json<ReportPage>, AppError> {
    let page = state
        .services
        .reports
        .list(&actor, query.schedule_id, query.page()?)
        .await?;
    Ok(Json(page.into()))
}

/// A report you requested (admins: any report); others' reports are 404.
#[utoipa::path(get, path = "/reports/{id}", tag = "reports", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ReportResponse), (status = 401, body = ErrorBody),
        (status = 403, description = "A shop-wide report, for admins", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_report(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ReportResponse>, AppError> {
    Ok(Json(state.services.reports.get(&actor, id).await?.into()))
}

/// Cancel a report that is not built yet: a queued one is cancelled at once (200); one being
/// built is stopped by its worker, which deletes what it wrote (202: follow
/// `GET /reports/{id}/events` or read the report for the `cancelled` status).
#[utoipa::path(post, path = "/reports/{id}/cancel", tag = "reports", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Cancelled", body = ReportResponse),
        (status = 202, description = "Being built: its worker was asked to stop", body = ReportResponse),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A shop-wide report, for admins", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already ready, failed, expired or cancelled", body = ErrorBody)))]
pub async fn cancel_report(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<ReportResponse>), AppError> {
    Ok(match state.services.reports.cancel(&actor, id).await? {
        ReportCancel::Cancelled(report) => (StatusCode::OK, Json(report.into())),
        ReportCancel::Stopping(report) => (StatusCode::ACCEPTED, Json(report.into())),
    })
}

/// Follow a report's build live (Server-Sent Events): `progress` events
/// (`{"fraction":0.42,"note":"4200 rows","at":...}`) while it is built, then one final
/// `completed`, `failed` or `cancelled` event carrying the report, and the stream ends.
/// Reconnect with `Last-Event-ID` to resume after the last event seen.
#[utoipa::path(get, path = "/reports/{id}/events", tag = "reports", params(("id" = Uuid, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    security(("bearer" = [])),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A shop-wide report, for admins", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn report_events(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let updates = state
        .services
        .reports
        .follow(&actor, id, live::last_event_id(&headers))
        .await?;
    Ok(live::events(updates, ReportResponse::from).into_response())
}

/// Download a ready report (streamed; CSV).
#[utoipa::path(get, path = "/reports/{id}/download", tag = "reports", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The CSV file", content_type = "text/csv"), (status = 401, body = ErrorBody),
        (status = 403, description = "A shop-wide report, for admins", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not ready yet", body = ErrorBody),
        (status = 410, description = "Expired: the file was deleted after REPORT_RETENTION_DAYS", body = ErrorBody)))]
pub async fn download_report(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let download = state.services.reports.download(&actor, id).await?;
    let mut response = Response::new(Body::from_stream(download.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(download.size));
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", download.file_name))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}
