//! `/reports`: request a sales report (built by a worker), follow it, download the file.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use orderly::{
    error::{AppError, ErrorBody},
    reports::ReportRequest,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    extract::{Path, ValidatedJson},
    reports::dto::{CreateReportRequest, ReportAccepted, ReportResponse},
    state::AppState,
};

/// The reports routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_report))
        .routes(routes!(get_report))
        .routes(routes!(download_report))
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
