//! `/webhooks` (admin only): register, list, read and delete endpoints, and follow deliveries.
//!
//! Admin-only rather than per user: an endpoint receives events about every customer's orders
//! and reports, which is a shop-level integration (ERP, fulfilment, notifications), and a
//! customer-registered URL would be a way to make our workers call arbitrary addresses.

use axum::{Json, extract::State, http::StatusCode};
use orderly::{
    error::{AppError, ErrorBody},
    webhooks::NewWebhookEndpoint,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    extract::{Path, Query, ValidatedJson},
    state::AppState,
    webhooks::dto::{
        CreateWebhookRequest, CreatedWebhookResponse, DeliveryPage, PageQuery, WebhookPage,
        WebhookResponse,
    },
};

/// The webhooks routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Register an endpoint (admin). The response carries its `whsec_` signing secret, shown only
/// this once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhookRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered; store the secret now", body = CreatedWebhookResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "Invalid URL or unknown event type", body = ErrorBody),
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidatedJson(body): ValidatedJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhookResponse>), AppError> {
    let endpoint = state
        .services
        .webhooks
        .create(&admin, NewWebhookEndpoint::try_from(body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(endpoint.into())))
}

/// Registered endpoints, newest first (admin).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = WebhookPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Query(query): Query<PageQuery>,
) -> Result<Json<WebhookPage>, AppError> {
    Ok(Json(
        state
            .services
            .webhooks
            .list(&admin, query.page()?)
            .await?
            .into(),
    ))
}

/// One endpoint (admin).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = WebhookResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<Json<WebhookResponse>, AppError> {
    Ok(Json(WebhookResponse::from(
        &state.services.webhooks.get(&admin, id).await?,
    )))
}

/// Delete an endpoint and its delivery history (admin); queued deliveries are dropped.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AppError> {
    state.services.webhooks.delete(&admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's deliveries, newest first, with their attempts, last status code, latency and
/// next retry (admin).
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path), PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = DeliveryPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Query(query): Query<PageQuery>,
) -> Result<Json<DeliveryPage>, AppError> {
    Ok(Json(
        state
            .services
            .webhooks
            .deliveries(&admin, id, query.page()?)
            .await?
            .into(),
    ))
}
