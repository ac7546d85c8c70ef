//! Router assembly: every domain's routes under `/api/v1`, health, metrics, the queue dashboard
//! (`/admin`), the OpenAPI document and Swagger UI, the fallback, and the middleware stack in one place.

use std::sync::Arc;

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
    dashboard, health, metrics, middleware, orders, products, reports, server, state::AppState,
    uploads, users, webhooks,
};

/// The OpenAPI document's fixed parts; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orderly API",
        description = "Orders in, work out: REST API of the Orderly shop backend. Every error is \
                       `{statusCode, message, error}` (plus `details` for validation errors).\n\n\
                       ## Signing in\n\n\
                       Most operations need a bearer token. Register (`POST /api/v1/auth/register`) \
                       or use an existing account, then call `POST /api/v1/auth/login` with \
                       `{\"email\", \"password\"}`: the answer's `access_token` is the token. In \
                       this page, press **Authorize** and paste it (without the `Bearer ` prefix); \
                       every request then sends `Authorization: Bearer <access_token>`. It expires \
                       after `JWT_TTL_SECS` (15 minutes by default); `POST /api/v1/auth/refresh` with the \
                       `refresh_token` gives a new pair. Admin-only operations answer 403 to \
                       customers; an admin is made with `orderly-api create-admin`.\n\n\
                       ## Placing orders\n\n\
                       `POST /api/v1/orders` requires an `Idempotency-Key` header: a retry with the \
                       same key and body returns the first answer, so a timed-out request can be \
                       sent again safely. Use a new key (a UUID) for each new order.\n\n\
                       ## Outside this document\n\n\
                       - `GET /metrics`: Prometheus text exposition (request counts and latencies, \
                       queue depths, job outcomes, workers), for a scraper; no authentication, so \
                       keep it off the public network.\n\
                       - `/admin`: the queue dashboard (HTML, admin login). Its read-only JSON API \
                       for scripts takes an admin bearer token (the same `access_token`) or the \
                       dashboard's session cookie, and answers errors in the one error shape: \
                       `GET /admin/api/overview` (every queue's counts and last hour, workers, \
                       outbox backlog), `GET /admin/api/queues/{queue}/jobs?state=...` (a queue's \
                       jobs in one state), `GET /admin/api/queues/{queue}/jobs/{id}` (one job), \
                       `GET /admin/api/queues/{queue}/kinds` (attempts, failure rate and run-time \
                       percentiles per job kind over the last hour), \
                       `GET /admin/api/queues/{queue}/groups` and \
                       `GET /admin/api/queues/{queue}/groups/{key}` (job groups and one group's \
                       waiting jobs), `GET /admin/api/schedules` (recurring jobs).",
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

/// The error responses that shared layers and extractors give, added to each operation they can
/// happen to; a status an operation documents itself keeps its own description. Each is a named
/// response of `components.responses` with the `ErrorBody` schema. Which operation gets which
/// follows from what the document already says about it:
/// - every operation: 500 (a bug: a panic, an unexpected database error) and 503
///   (`HTTP_REQUEST_TIMEOUT_MS` passed, or no database connection came free);
/// - under `/api/v1`: 429 from the rate limiter;
/// - with bearer security: 401 (missing, malformed, expired or revoked token);
/// - with a request body: 400 (unreadable), 408 (body too slow), 413 (too large), 415 (wrong
///   `Content-Type`) and 422 (breaks a rule);
/// - with path parameters: 400 (not of the documented type, or a NUL character) and 404;
/// - with query parameters: 400 (unreadable) and 422 (out of range, unknown cursor);
/// - with header parameters: 400 (missing or malformed).
///
/// 403 depends on the handler's extractor (`AdminUser`), so admin routes document it themselves.
struct ErrorResponses;

/// (status, name in `components.responses`, description) of every shared error response.
const ERROR_RESPONSES: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "The request cannot be read: malformed JSON or form, a path or query parameter of the \
         wrong type, a missing or malformed header, or text with a NUL character",
    ),
    (
        "401",
        "Unauthorized",
        "Missing, malformed, expired or revoked bearer token",
    ),
    (
        "404",
        "NotFound",
        "No such resource, or not one the caller may see",
    ),
    (
        "408",
        "RequestTimeout",
        "The request body did not arrive in time; the connection is closed",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The request body is larger than allowed",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The request body is not of the documented content type",
    ),
    (
        "422",
        "UnprocessableEntity",
        "Well-formed, but breaks a rule; `details` names each field at fault",
    ),
    (
        "429",
        "TooManyRequests",
        "Rate limit exceeded; `Retry-After` says when to try again",
    ),
    (
        "500",
        "InternalServerError",
        "Unexpected failure; the cause is logged with the request id, never sent",
    ),
    (
        "503",
        "ServiceUnavailable",
        "The request took too long or the database is busy; worth retrying",
    ),
];

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, ObjectBuilder, Ref, RefOr, Type,
            header::HeaderBuilder,
            path::{Operation, ParameterIn},
            response::ResponseBuilder,
        };

        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in ERROR_RESPONSES {
            let mut response = ResponseBuilder::new().description(*description).content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
            if *status == "429" {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds until a request will be accepted"))
                        .build(),
                );
            }
            components
                .responses
                .insert((*name).to_owned(), RefOr::T(response.build()));
        }

        for (path, item) in openapi.paths.paths.iter_mut() {
            let under_v1 = path.starts_with("/api/v1/");
            let shared_parameters = item.parameters.clone().unwrap_or_default();
            let operations: [&mut Option<Operation>; 8] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let takes = |place: ParameterIn| {
                    shared_parameters
                        .iter()
                        .chain(operation.parameters.iter().flatten())
                        .any(|p| p.parameter_in == place)
                };
                let mut statuses = vec!["500", "503"];
                if under_v1 {
                    statuses.push("429");
                }
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    statuses.push("401");
                }
                if operation.request_body.is_some() {
                    statuses.extend(["400", "408", "413", "415", "422"]);
                }
                if takes(ParameterIn::Path) {
                    statuses.extend(["400", "404"]);
                }
                if takes(ParameterIn::Query) {
                    statuses.extend(["400", "422"]);
                }
                if takes(ParameterIn::Header) {
                    statuses.push("400");
                }
                for status in statuses {
                    let Some((_, name, _)) = ERROR_RESPONSES.iter().find(|(s, ..)| *s == status)
                    else {
                        continue;
                    };
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
                }
            }
        }
    }
}

/// One example per error status, in the one error shape, with a message the api really sends
/// for it, so "Try it out" and the response samples of Swagger UI show what a client will get
/// (without them every error would show the schema's own sample). [`ErrorExamples`] puts each
/// on the shared responses and on every `ErrorBody` response an operation documents itself.
///
/// (status, message, field at fault for a validation error).
const ERROR_EXAMPLES: &[(&str, &str, Option<FieldProblem>)] = &[
    (
        "400",
        "malformed JSON: expected `,` or `}` at line 3 column 5",
        None,
    ),
    ("401", "invalid or expired token", None),
    ("403", "admin role required", None),
    ("404", "order not found", None),
    ("408", "request timed out", None),
    (
        "409",
        "a request with this Idempotency-Key is still being processed",
        None,
    ),
    ("413", "request body is too large", None),
    (
        "415",
        "expected a request body with Content-Type: application/json",
        None,
    ),
    (
        "422",
        "items[0].quantity: must be between 1 and 1000",
        Some(("items[0].quantity", "must be between 1 and 1000")),
    ),
    ("429", "rate limit exceeded; slow down", None),
    ("500", "Internal server error", None),
    ("503", "the request took too long; try again", None),
];

/// A field and what is wrong with it, the `details` of a validation error's example.
type FieldProblem = (&'static str, &'static str);

/// Where an operation's own error says it better than [`ERROR_EXAMPLES`]: (method, path,
/// status, message).
const OPERATION_ERROR_EXAMPLES: &[(&str, &str, &str, &str)] = &[
    (
        "post",
        "/api/v1/orders",
        "400",
        "missing Idempotency-Key header",
    ),
    (
        "post",
        "/api/v1/auth/login",
        "401",
        "invalid email or password",
    ),
    (
        "post",
        "/api/v1/auth/register",
        "409",
        "email already registered",
    ),
    (
        "post",
        "/api/v1/orders/{id}/cancel",
        "409",
        "an order that is shipped cannot become cancelled",
    ),
    (
        "patch",
        "/api/v1/orders/{id}",
        "409",
        "an order that is delivered cannot become paid",
    ),
];

/// The example body of an error `status` (see [`ERROR_EXAMPLES`]), if there is one; `message`
/// replaces the table's.
fn error_example(status: &str, message: Option<&str>) -> Option<serde_json::Value> {
    let (_, default_message, field) = ERROR_EXAMPLES.iter().find(|(s, ..)| *s == status)?;
    let (message, field) = match message {
        Some(message) => (message, None),
        None => (*default_message, *field),
    };
    let code: u16 = status.parse().ok()?;
    let details =
        field.map(|(field, problem)| vec![FieldError::new(field.to_owned(), problem.to_owned())]);
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    serde_json::to_value(ErrorBody::new(status, (*message).to_owned(), details)).ok()
}

/// Adds [`ERROR_EXAMPLES`] to every error response of the document whose body is an
/// `ErrorBody` and that has no example of its own. Runs after [`ErrorResponses`].
struct ErrorExamples;

impl Modify for ErrorExamples {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, path::Operation, response::Response};

        fn add_example(status: &str, message: Option<&str>, response: &mut Response) {
            let Some(example) = error_example(status, message) else {
                return;
            };
            let Some(content) = response.content.get_mut("application/json") else {
                return;
            };
            let is_error_body = matches!(
                &content.schema,
                Some(RefOr::Ref(reference)) if reference.ref_location.ends_with("/ErrorBody")
            );
            if is_error_body && content.example.is_none() && content.examples.is_empty() {
                content.example = Some(example);
            }
        }

        if let Some(components) = openapi.components.as_mut() {
            for (name, response) in components.responses.iter_mut() {
                let status = ERROR_RESPONSES
                    .iter()
                    .find(|(_, n, _)| n == name)
                    .map(|(s, ..)| *s);
                if let (Some(status), RefOr::T(response)) = (status, response) {
                    add_example(status, None, response);
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations: [(&str, &mut Option<Operation>); 8] = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("options", &mut item.options),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
                ("trace", &mut item.trace),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                for (status, response) in operation.responses.responses.iter_mut() {
                    let own = OPERATION_ERROR_EXAMPLES
                        .iter()
                        .find(|(m, p, s, _)| *m == method && p == path && s == status)
                        .map(|(.., message)| *message);
                    match response {
                        RefOr::T(response) => add_example(status, own, response),
                        // A shared response the operation has its own words for: inlined
                        // with them.
                        RefOr::Ref(_) if own.is_some() => {
                            let shared = ERROR_RESPONSES.iter().find(|(s, ..)| s == status);
                            if let Some((_, _, description)) = shared {
                                let mut inline = error_response(description);
                                add_example(status, own, &mut inline);
                                *response = RefOr::T(inline);
                            }
                        }
                        RefOr::Ref(_) => {}
                    }
                }
            }
        }
    }
}

/// A response of `description` whose JSON body is an `ErrorBody`.
fn error_response(description: &str) -> utoipa::openapi::response::Response {
    use utoipa::openapi::{Content, Ref, response::ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
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
/// outgrows it, and `DefaultBodyLimit` sets what axum's extractors read. The upload route also
/// gets its own, longer, body deadline (`HTTP_UPLOAD_BODY_READ_TIMEOUT_MS`, see [`server`]).
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
        .layer(DefaultBodyLimit::max(upload_limit))
        .layer(from_fn_with_state(
            config.http.upload_body_read_timeout,
            server::set_body_deadline,
        ));
    let v1 = OpenApiRouter::new()
        .merge(small_bodies)
        .merge(file_bodies)
        .layer(from_fn_with_state(state.clone(), middleware::rate_limit));
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(health::readiness))
        .routes(routes!(health::liveness))
        .split_for_parts();
    // After the paths are in: the modifier reads each operation's parameters, body and security.
    ErrorResponses.modify(&mut openapi);
    ErrorExamples.modify(&mut openapi);
    (router, openapi)
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
                .layer(from_fn_with_state(state.clone(), server::body_deadline))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(CompressionLayer::new())
                .option_layer(cors)
                .layer(from_fn_with_state(state.clone(), middleware::timeout)),
        )
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for up to the configured grace period. Slow and idle clients are bounded as [`server`] says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = build(state.clone());
    serve_app(listener, state, app, shutdown).await
}

/// [`serve`] for an already built `app` (from [`build`] or [`build_with_extra`]).
/// The dashboard's live streams end as soon as `shutdown` resolves.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    state: AppState,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let outbox = state.services.outbox.clone();
    // Open dashboard streams never end by themselves: they end as the shutdown starts, so the
    // grace period is spent on real requests, not waiting for them.
    let live_hub = state.live_hub.clone();
    let shutdown = async move {
        shutdown.await;
        live_hub.shut_down();
    };
    let result = server::run(listener, app, &state.services.config.http, shutdown).await;
    // Jobs committed by the last requests are pushed before the process exits (the relay
    // would pick them up anyway, a few seconds later).
    outbox.drain(std::time::Duration::from_secs(5)).await;
    tracing::info!("api stopped");
    result
}
