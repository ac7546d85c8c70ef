//! `/orders`.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use orderly::{
    error::{AppError, ErrorBody},
    idempotency::{StoredResponse, fingerprint},
    orders::Order,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    extract::{Path, Query, ValidatedJson},
    idempotency::{self, IdempotencyKey},
    orders::dto::{
        ListOrdersQuery, OrderPage, OrderResponse, PlaceOrderRequest, UpdateOrderRequest,
    },
    state::AppState,
};

/// The orders routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order, update_order))
        .routes(routes!(cancel_order))
}

/// Place an order. Idempotent per `Idempotency-Key`: a retry with the same key and body gets
/// the first response again (with `Idempotent-Replayed: true`) and no second order.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = PlaceOrderRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Unique per intended order, e.g. a UUID. A retry with \
        the same key and body replays the first answer instead of placing a second order; a new order needs a new key.",
        example = "0b9d3a4e-7f1c-4c2a-9a57-3e5d2f8c1b60")),
    responses(
        (status = 201, description = "Order placed", body = OrderResponse),
        (status = 400, description = "Missing Idempotency-Key or malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "Insufficient stock, or a request with this key is in flight", body = ErrorBody),
        (status = 422, description = "Invalid items, unknown product, or key reused with another body", body = ErrorBody),
    ))]
pub async fn place_order(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    ValidatedJson(body): ValidatedJson<PlaceOrderRequest>,
) -> Result<Response, AppError> {
    let lines = body.lines()?;
    let request_fingerprint = fingerprint(&serde_json::to_vec(&body)?);
    let orders = &state.services.orders;
    // Borrowed, so the operation can run a second time (taking over a dead claim).
    let (customer, lines) = (&actor, &lines);
    idempotency::run(
        &state,
        &actor,
        "orders.create",
        &key,
        &request_fingerprint,
        |attempt| async move {
            // The answer is stored under the key inside the order's transaction.
            let placed = orders
                .place(customer, lines, &attempt, |order| created(order.clone()))
                .await?;
            Ok(placed.map(|(_, response)| response))
        },
        |order_id| async move {
            let Some(order) = orders.find_for(customer, order_id).await? else {
                return Ok(None);
            };
            created(order).map(Some)
        },
    )
    .await
}

/// The answer to a placed order, as first sent and as replayed: 201 with the order.
fn created(order: Order) -> Result<StoredResponse, AppError> {
    Ok(StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        body: serde_json::to_vec(&OrderResponse::from(order))?,
    })
}

/// Your orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListOrdersQuery), security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_orders(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Query(query): Query<ListOrdersQuery>,
) -> Result<Json<OrderPage>, AppError> {
    let page = state
        .services
        .orders
        .list_own(&actor, query.page()?)
        .await?;
    Ok(Json(page.into()))
}

/// One of your orders (admins: any order). Someone else's order is a 404.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = OrderResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_order(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderResponse>, AppError> {
    Ok(Json(state.services.orders.get(&actor, id).await?.into()))
}

/// Cancel one of your orders before it ships; its stock is returned.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = OrderResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already shipped, delivered or cancelled", body = ErrorBody)))]
pub async fn cancel_order(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderResponse>, AppError> {
    Ok(Json(state.services.orders.cancel(&actor, id).await?.into()))
}

/// Move an order to another status (admin): placed → paid → shipped → delivered, or cancelled
/// before shipping.
#[utoipa::path(patch, path = "/orders/{id}", tag = "orders", params(("id" = Uuid, Path)), request_body = UpdateOrderRequest,
    security(("bearer" = [])),
    responses((status = 200, body = OrderResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Transition not allowed", body = ErrorBody)))]
pub async fn update_order(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Path(id): Path<Uuid>,
    crate::extract::Json(body): crate::extract::Json<UpdateOrderRequest>,
) -> Result<Json<OrderResponse>, AppError> {
    Ok(Json(
        state
            .services
            .orders
            .change_status(&actor, id, body.status)
            .await?
            .into(),
    ))
}
