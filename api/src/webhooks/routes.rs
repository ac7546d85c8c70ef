//! `/webhooks` (admin only): register, list, read, change and delete endpoints, rotate their
//! secret, ping them, follow deliveries and resend one.
//!
//! Admin-only rather than per user: an endpoint receives events about every customer's orders
//! and reports, which is a shop-level integration (ERP, fulfilment, notifications), and a
//! customer-registered URL would be a way to make our workers call arbitrary addresses.

use axum::{Json, extract::State, http::StatusCode};
use orderly::{
    error::{AppError, ErrorBody},
    webhooks::{NewWebhookEndpoint, WebhookEndpointChanges},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    extract::{Path, Query, ValidatedJson},
    state::AppState,
    webhooks::dto::{
        CreateWebhookRequest, CreatedWebhookResponse, DeliveryPage, DeliveryResponse, PageQuery,
        RotateSecretRequest, RotatedSecretResponse, UpdateWebhookRequest, WebhookPage,
        WebhookResponse,
    },
};

/// The webhooks routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(ping_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
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

/// Change an endpoint's URL, events or state (admin): `enabled: true` re-enables one disabled by
/// a 410 or by hand, `enabled: false` disables it.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = UpdateWebhookRequest,
    security(("bearer" = [])),
    responses((status = 200, body = WebhookResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody,
            example = json!({"statusCode": 404, "message": "webhook endpoint not found", "error": "Not Found"})),
        (status = 422, description = "Invalid URL, unknown event type or nothing to change; nothing was changed", body = ErrorBody,
            example = json!({"statusCode": 422, "message": "events[1]: unknown event type \"order.shipped\" (known: order.placed, order.cancelled, order.status_changed, report.ready)",
                "error": "Unprocessable Entity", "details": [{"field": "events[1]",
                "message": "unknown event type \"order.shipped\" (known: order.placed, order.cancelled, order.status_changed, report.ready)"}]}))))]
pub async fn update_webhook(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    ValidatedJson(body): ValidatedJson<UpdateWebhookRequest>,
) -> Result<Json<WebhookResponse>, AppError> {
    let changes = WebhookEndpointChanges::try_from(body)?;
    Ok(Json(WebhookResponse::from(
        &state.services.webhooks.update(&admin, id, changes).await?,
    )))
}

/// Rotate an endpoint's signing secret (admin). The new secret is in the response, shown only
/// this once; the previous one keeps signing deliveries beside it for `overlap_secs` (a second
/// `v1,` signature in `webhook-signature`), so the receiver can switch without losing any.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body(content = Option<RotateSecretRequest>, description = "Optional; without a body the overlap is 86400 s"),
    security(("bearer" = [])),
    responses((status = 200, description = "Rotated; store the new secret now", body = RotatedSecretResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody,
            example = json!({"statusCode": 404, "message": "webhook endpoint not found", "error": "Not Found"})),
        (status = 422, description = "overlap_secs out of range", body = ErrorBody,
            example = json!({"statusCode": 422, "message": "overlap_secs: must be 0 to 604800 seconds",
                "error": "Unprocessable Entity", "details": [{"field": "overlap_secs", "message": "must be 0 to 604800 seconds"}]}))))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    body: Option<ValidatedJson<RotateSecretRequest>>,
) -> Result<Json<RotatedSecretResponse>, AppError> {
    let overlap = RotateSecretRequest::overlap(body.map(|ValidatedJson(b)| b));
    Ok(Json(
        state
            .services
            .webhooks
            .rotate_secret(&admin, id, overlap)
            .await?
            .into(),
    ))
}

/// Send a signed `webhook.ping` test delivery to this endpoint only (admin); it is listed with
/// the endpoint's deliveries.
#[utoipa::path(post, path = "/webhooks/{id}/ping", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 202, description = "Staged; follow it in the endpoint's deliveries", body = DeliveryResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody,
            example = json!({"statusCode": 404, "message": "webhook endpoint not found", "error": "Not Found"})),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody,
            example = json!({"statusCode": 409, "message": "the endpoint is disabled; enable it (PATCH enabled: true) to ping it",
                "error": "Conflict"}))))]
pub async fn ping_webhook(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<DeliveryResponse>), AppError> {
    let delivery = state.services.webhooks.ping(&admin, id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

/// Send a failed delivery again, or resend a delivered one (admin), with the same `webhook-id`
/// and body, so a receiver that has it already can drop it.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 202, description = "Pending again; a new attempt is queued", body = DeliveryResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such endpoint, or no such delivery of it", body = ErrorBody,
            example = json!({"statusCode": 404, "message": "webhook delivery not found", "error": "Not Found"})),
        (status = 409, description = "The delivery is pending already, or the endpoint is disabled", body = ErrorBody,
            example = json!({"statusCode": 409, "message": "the delivery is pending already; it will be sent", "error": "Conflict"}))))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<DeliveryResponse>), AppError> {
    let delivery = state
        .services
        .webhooks
        .redeliver(&admin, id, delivery_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
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
