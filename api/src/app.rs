//! Router assembly: every domain's routes under `/api/v1`, health, metrics, the queue dashboard
//! (`/admin`), the OpenAPI document and Swagger UI, the fallback, and the middleware stack in one place.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, Method, header},
    middleware::{from_fn, from_fn_with_state},
    routing::get,
};
use orderly::error::{AppError, ErrorBody, FieldError};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, Any, CorsLayer},
    limit::RequestBodyLimitLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::{
    dashboard, health, metrics, middleware, orders, products, reports, state::AppState, uploads,
    users, webhooks,
};

/// The OpenAPI document's fixed parts; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orderly API",
        description = "Orders in, work out: REST API of the Orderly shop backend. Every error is \
                       `{statusCode, message, error}` (plus `details` for validation errors).",
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, FieldError)),
    tags(
        (name = "auth", description = "Registration and login"),
        (name = "users", description = "Your account"),
        (name = "products", description = "The catalogue"),
        (name = "orders", description = "Placing and following orders"),
        (name = "reports", description = "Sales reports built in the background"),
        (name = "webhooks", description = "Signed event deliveries to other systems (admin)"),
        (name = "uploads", description = "Product imports and product images (admin)"),
        (name = "health", description = "Readiness and liveness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Room for the multipart framing around an uploaded file (part headers, boundaries, the short
/// text fields), on top of `UPLOAD_MAX_BYTES` for the file itself.
const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// The `/api/v1` routes and the health routes, with their OpenAPI document.
///
/// Request bodies are limited to `HTTP_BODY_LIMIT_BYTES`, except on the upload route, which
/// streams files of up to `UPLOAD_MAX_BYTES`. Each group gets its own limit layers (a layer
/// only wraps the routes added before it), and both limits apply twice: the tower-http layer
/// refuses a too-large `Content-Length` before the handler runs and cuts off a chunked body that
/// outgrows it, and `DefaultBodyLimit` sets what axum's extractors read.
pub fn api_router(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let config = &state.services.config;
    let body_limit = config.http.body_limit_bytes;
    let upload_limit = config
        .storage
        .upload_max_bytes
        .saturating_add(MULTIPART_OVERHEAD_BYTES);
    let small_bodies = OpenApiRouter::new()
        .merge(users::router())
        .merge(products::router())
        .merge(orders::router())
        .merge(reports::router())
        .merge(webhooks::router())
        .merge(uploads::router())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::max(body_limit));
    let file_bodies = uploads::upload_router()
        .layer(RequestBodyLimitLayer::new(upload_limit))
        .layer(DefaultBodyLimit::max(upload_limit));
    let v1 = OpenApiRouter::new()
        .merge(small_bodies)
        .merge(file_bodies)
        .layer(from_fn_with_state(state.clone(), middleware::rate_limit));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(health::readiness))
        .routes(routes!(health::liveness))
        .split_for_parts()
}

/// The whole application.
pub fn build(state: AppState) -> Router {
    build_with_extra(state, Router::new())
}

/// The whole application plus `extra` routes, merged inside the middleware stack so they get
/// the request id, error shape, panic handling and timeout like every other route. Tests use
/// it to mount routes the product does not have (a handler that panics).
pub fn build_with_extra(state: AppState, extra: Router<AppState>) -> Router {
    // The recorder must exist before the first request is counted or the first gauge is set;
    // anything recorded earlier goes nowhere.
    metrics::handle();
    let (api, openapi) = api_router(&state);
    let openapi = Arc::new(openapi);
    let document = openapi.clone();
    let config = &state.services.config.http;

    let cors = match config.cors_allowed_origins.as_slice() {
        [] => None,
        origins if origins.iter().any(|o| o == "*") => Some(CorsLayer::new().allow_origin(Any)),
        origins => Some(CorsLayer::new().allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))),
    }
    .map(|cors| {
        cors.allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            "idempotency-key".parse().expect("header name"),
        ])
        .expose_headers([
            "x-request-id".parse().expect("header name"),
            header::RETRY_AFTER,
        ])
    });

    Router::new()
        .merge(api)
        .merge(extra)
        .route(
            "/api-docs/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        // The UI loads our document (without a `config` it shows "No API definition provided")
        // and never calls the public swagger.io validator, so the page works offline.
        .merge(
            SwaggerUi::new("/docs")
                .config(SwaggerConfig::new(["/api-docs/openapi.json"]).validator_url("none")),
        )
        .route("/metrics", get(metrics::render))
        .merge(dashboard::router(&state))
        .fallback(|| async { AppError::not_found("route not found") })
        .method_not_allowed_fallback(|| async {
            AppError::MethodNotAllowed("method not allowed for this route".into())
        })
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(middleware::request_context))
                .layer(from_fn(middleware::error_shape))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(CompressionLayer::new())
                .option_layer(cors)
                .layer(from_fn_with_state(state.clone(), middleware::timeout)),
        )
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for up to the configured grace period.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = build(state.clone());
    serve_app(listener, state, app, shutdown).await
}

/// [`serve`] for an already built `app` (from [`build`] or [`build_with_extra`]).
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    state: AppState,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.services.config.http.shutdown_grace;
    let outbox = state.services.outbox.clone();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
        let _ = stopping_tx.send(());
    });
    let result = tokio::select! {
        result = server => result,
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping remaining requests");
            Ok(())
        }
    };
    // Jobs committed by the last requests are pushed before the process exits (the relay
    // would pick them up anyway, a few seconds later).
    outbox.drain(std::time::Duration::from_secs(5)).await;
    tracing::info!("api stopped");
    result
}
