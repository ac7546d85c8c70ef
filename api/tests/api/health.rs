//! `/health` and `/health/live`.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{spawn_app, spawn_app_with};

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn readiness_is_ok_when_postgres_and_redis_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn readiness_is_503_naming_redis_when_redis_is_unreachable(pool: PgPool) {
    // Nothing listens on port 1.
    let app = spawn_app_with(pool, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let response = app.get("/health", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert!(
        body["checks"]["redis"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn readiness_is_503_naming_postgres_when_postgres_is_unreachable(pool: PgPool) {
    drop(pool);
    let unreachable = orderly::db::pool(&orderly::config::DatabaseConfig {
        url: "postgres://postgres@127.0.0.1:1/none".to_owned().into(),
        max_connections: 1,
        min_connections: 0,
        acquire_timeout: std::time::Duration::from_millis(500),
        orders_in_flight_per_product: 0,
        order_statements_in_flight: 0,
        orders_per_statement: 1,
    })
    .unwrap();
    let app = spawn_app(unreachable).await;
    let response = app.get("/health", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn liveness_needs_no_dependencies(pool: PgPool) {
    let app = spawn_app_with(pool, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let response = app.get("/health/live", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}
