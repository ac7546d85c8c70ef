//! `/products`: public catalogue reads, admin writes.

use axum::{Json, extract::State, http::StatusCode};
use orderly::{
    error::{AppError, ErrorBody},
    products::{NewProduct, ProductPatch, ProductQuery},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AdminUser, MaybeUser},
    extract::{Path, ValidatedJson, ValidatedQuery},
    products::dto::{
        CreateProductRequest, ListProductsQuery, ProductPage, ProductResponse, UpdateProductRequest,
    },
    state::AppState,
};

/// The products routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
}

/// List the catalogue (active products; admins see inactive ones too).
#[utoipa::path(get, path = "/products", tag = "products", params(ListProductsQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = ErrorBody),
        (status = 401, description = "An Authorization header with an invalid token (it is optional)", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn list_products(
    State(state): State<AppState>,
    MaybeUser(actor): MaybeUser,
    ValidatedQuery(query): ValidatedQuery<ListProductsQuery>,
) -> Result<Json<ProductPage>, AppError> {
    let page = state
        .services
        .products
        .list(ProductQuery {
            search: query
                .q
                .as_deref()
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned),
            include_inactive: actor.is_some_and(|a| a.is_admin()),
            page: query.page()?,
        })
        .await?;
    Ok(Json(page.into()))
}

/// One product.
#[utoipa::path(get, path = "/products/{id}", tag = "products", params(("id" = Uuid, Path)),
    responses((status = 200, body = ProductResponse),
        (status = 401, description = "An Authorization header with an invalid token (it is optional)", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_product(
    State(state): State<AppState>,
    MaybeUser(actor): MaybeUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ProductResponse>, AppError> {
    let product = state
        .services
        .products
        .get(id, actor.is_some_and(|a| a.is_admin()))
        .await?;
    Ok(Json(product.into()))
}

/// Add a product (admin).
#[utoipa::path(post, path = "/products", tag = "products", request_body = CreateProductRequest, security(("bearer" = [])),
    responses((status = 201, body = ProductResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "SKU taken", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_product(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ValidatedJson(body): ValidatedJson<CreateProductRequest>,
) -> Result<(StatusCode, Json<ProductResponse>), AppError> {
    let product = state
        .services
        .products
        .create(NewProduct::try_from(body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

/// Change a product (admin).
#[utoipa::path(patch, path = "/products/{id}", tag = "products", params(("id" = Uuid, Path)),
    request_body = UpdateProductRequest, security(("bearer" = [])),
    responses((status = 200, body = ProductResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_product(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
    ValidatedJson(body): ValidatedJson<UpdateProductRequest>,
) -> Result<Json<ProductResponse>, AppError> {
    let product = state
        .services
        .products
        .update(id, ProductPatch::try_from(body)?)
        .await?;
    Ok(Json(product.into()))
}

/// Withdraw a product (admin): it becomes inactive; orders keep referring to it.
#[utoipa::path(delete, path = "/products/{id}", tag = "products", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ProductResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_product(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ProductResponse>, AppError> {
    let product = state.services.products.deactivate(id).await?;
    Ok(Json(product.into()))
}
