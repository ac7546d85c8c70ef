//! The one error shape `{"statusCode", "message", "error"}` (plus `details` for validation) for
//! every way a request can fail before or outside a handler's own rules: extractor rejections
//! (malformed JSON, wrong content type, bad path parameter, bad query), unknown routes, wrong
//! methods, oversized bodies, the request timeout (503, the documented choice) and a panicking
//! handler (500 with a generic message, nothing leaked).

use axum::routing::get;
use futures::stream;
use orderly_api::AppState;
use reqwest::{Body, StatusCode, header};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, spawn_app_with_routes};

const REGISTER: &str = "/api/v1/auth/register";

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn malformed_json_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .post(app.url(REGISTER))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"email": "ada@example.com", "password": "#)
        .send()
        .await
        .unwrap();
    let body = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["message"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn wrong_content_type_is_415(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .post(app.url(REGISTER))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"email": "ada@example.com", "password": "long enough", "name": "Ada"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn bad_path_parameter_and_bad_query_are_400(pool: PgPool) {
    let app = spawn_app(pool).await;

    let body = assert_error(
        app.get("/api/v1/products/not-a-uuid", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("path"), "{body}");

    let body = assert_error(
        app.get("/api/v1/products?limit=many", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("query"),
        "{body}"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn unknown_route_is_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in [
        "/api/v1/no-such-thing",
        "/no-such-thing",
        "/api/v2/products",
    ] {
        let body = assert_error(app.get(path, None).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["message"], "route not found", "{path}: {body}");
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn wrong_method_is_405(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in ["/api/v1/products", "/api/v1/auth/login", "/health"] {
        let response = app.client.put(app.url(path)).send().await.unwrap();
        assert_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn body_over_the_limit_is_413_with_or_without_content_length(pool: PgPool) {
    let app = spawn_app_with(pool, &[("HTTP_BODY_LIMIT_BYTES", "256")]).await;
    let big =
        json!({"email": "ada@example.com", "password": "long enough", "name": "x".repeat(1024)})
            .to_string();

    // Declared up front: refused from the Content-Length header.
    let response = app
        .client
        .post(app.url(REGISTER))
        .header(header::CONTENT_TYPE, "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Chunked, length unknown: refused while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = app
        .client
        .post(app.url(REGISTER))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn request_over_the_timeout_is_503_and_its_work_still_completes(pool: PgPool) {
    // Registration hashes the password with argon2, which takes far longer than 1 ms.
    let app = spawn_app_with(pool.clone(), &[("HTTP_REQUEST_TIMEOUT_MS", "1")]).await;
    let response = app
        .register("slow@example.com", "long enough password", "Slow")
        .await;
    let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["message"].as_str().unwrap().contains("took too long"),
        "{body}"
    );
    // The handler was not cancelled halfway: the account is created as a whole.
    let created = orderly::testing::eventually(std::time::Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from users where email = 'slow@example.com'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    })
    .await;
    assert!(created, "the timed-out registration never completed");
}

/// What a careless handler might panic with: internals that must never reach a client.
const PANIC_DETAIL: &str = "connection to db-primary.internal:5432 failed for user orderly_rw";

async fn panicking_handler() -> &'static str {
    panic!("{PANIC_DETAIL}")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn panicking_handler_is_500_and_leaks_nothing(pool: PgPool) {
    let panicking = axum::Router::<AppState>::new().route("/test/panic", get(panicking_handler));
    let app = spawn_app_with_routes(pool, &[], panicking).await;

    let response = app.get("/test/panic", None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        response.headers().contains_key("x-request-id"),
        "request id missing on a 500"
    );
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).expect("json body");
    assert_eq!(body["statusCode"], 500);
    assert_eq!(body["error"], "Internal Server Error");
    assert_eq!(body["message"], "Internal server error");
    assert!(
        !text.contains("db-primary") && !text.contains("panic"),
        "leaked: {text}"
    );

    // The server survives the panic.
    assert_eq!(app.get("/health/live", None).await.status(), StatusCode::OK);
}
