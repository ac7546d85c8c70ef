//! `/reports/schedules` (admin only): recurring reports. Each schedule requests a report at
//! every tick of its cron expression, for the days its period covers; the reports are its
//! owner's, emailed when ready and listed by `GET /reports?schedule_id=`.

use axum::{Json, extract::State, http::StatusCode};
use orderly::{
    error::{AppError, ErrorBody},
    reports::{NewReportSchedule, ReportScheduleChanges},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    extract::{Path, Query, ValidatedJson},
    reports::schedule_dto::{
        CreateReportScheduleRequest, ReportSchedulePage, ReportSchedulePageQuery,
        ReportScheduleResponse, UpdateReportScheduleRequest,
    },
    state::AppState,
};

/// The report schedule routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_report_schedule, list_report_schedules))
        .routes(routes!(
            get_report_schedule,
            update_report_schedule,
            delete_report_schedule
        ))
}

/// Schedule a recurring report (admin); it is yours and emailed to you at each run.
#[utoipa::path(post, path = "/reports/schedules", tag = "reports", request_body = CreateReportScheduleRequest,
    security(("bearer" = [])),
    responses((status = 201, description = "Scheduled", body = ReportScheduleResponse), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "Bad cron expression, time zone, period, kind or format", body = ErrorBody)))]
pub async fn create_report_schedule(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidatedJson(body): ValidatedJson<CreateReportScheduleRequest>,
) -> Result<(StatusCode, Json<ReportScheduleResponse>), AppError> {
    let schedule = state
        .services
        .report_schedules
        .create(&admin, NewReportSchedule::try_from(body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(schedule.into())))
}

/// Report schedules, newest first, with their next and last run (admin).
#[utoipa::path(get, path = "/reports/schedules", tag = "reports", params(ReportSchedulePageQuery), security(("bearer" = [])),
    responses((status = 200, body = ReportSchedulePage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn list_report_schedules(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Query(query): Query<ReportSchedulePageQuery>,
) -> Result<Json<ReportSchedulePage>, AppError> {
    let page = state
        .services
        .report_schedules
        .list(&admin, query.page()?)
        .await?;
    Ok(Json(page.into()))
}

/// One report schedule (admin).
#[utoipa::path(get, path = "/reports/schedules/{id}", tag = "reports", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ReportScheduleResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_report_schedule(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ReportScheduleResponse>, AppError> {
    let schedule = state.services.report_schedules.get(&admin, id).await?;
    Ok(Json(schedule.into()))
}

/// Change a report schedule, or pause or resume it (admin).
#[utoipa::path(patch, path = "/reports/schedules/{id}", tag = "reports", params(("id" = Uuid, Path)),
    request_body = UpdateReportScheduleRequest, security(("bearer" = [])),
    responses((status = 200, body = ReportScheduleResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Bad cron expression, time zone, period, kind or format", body = ErrorBody)))]
pub async fn update_report_schedule(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    ValidatedJson(body): ValidatedJson<UpdateReportScheduleRequest>,
) -> Result<Json<ReportScheduleResponse>, AppError> {
    let schedule = state
        .services
        .report_schedules
        .update(&admin, id, ReportScheduleChanges::try_from(body)?)
        .await?;
    Ok(Json(schedule.into()))
}

/// Delete a report schedule (admin); the reports it made stay.
#[utoipa::path(delete, path = "/reports/schedules/{id}", tag = "reports", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_report_schedule(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AppError> {
    state.services.report_schedules.delete(&admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
