//! Per-client rate limits on `/api/v1`: every response carries `RateLimit-Policy` and
//! `RateLimit`, a client over its budget gets 429 in the error shape with `Retry-After`; the
//! memory store keeps one budget per api instance, the Redis store one budget shared by every
//! instance on the same `REDIS_PREFIX`.
//!
//! Budgets are one request per minute with a burst of 3, so a refused request stays refused for
//! a whole minute: nothing in these tests depends on how fast they run.

use reqwest::{Response, StatusCode};
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, spawn_app_with, unique_prefix};

const LIMITED: &str = "/api/v1/products";

fn limits(store: &'static str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RATE_LIMIT_STORE", store.to_owned()),
        ("RATE_LIMIT_PER_MINUTE", "1".to_owned()),
        ("RATE_LIMIT_BURST", "3".to_owned()),
        ("REDIS_PREFIX", prefix.to_owned()),
    ]
}

async fn spawn_limited(pool: PgPool, vars: &[(&'static str, String)]) -> TestApp {
    let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(pool, &overrides).await
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing on a {} response", response.status()))
        .to_str()
        .unwrap()
}

/// Sends one request and checks the headers every limited response carries.
async fn spend(app: &TestApp) -> Response {
    let response = app.get(LIMITED, None).await;
    assert_eq!(
        header(&response, "ratelimit-policy"),
        "\"default\";q=3;w=180"
    );
    assert!(header(&response, "ratelimit").starts_with("\"default\";r="));
    response
}

async fn assert_refused(response: Response) {
    // Nothing left, and the full budget is back within the policy window.
    let current = header(&response, "ratelimit").to_owned();
    let reset: u64 = current
        .strip_prefix("\"default\";r=0;t=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("RateLimit {current:?}"));
    assert!((1..=180).contains(&reset), "RateLimit {current:?}");
    let retry_after: u64 = header(&response, "retry-after")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body = assert_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        body["message"].as_str().unwrap().contains("rate limit"),
        "{body}"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn memory_store_refuses_requests_over_the_budget(pool: PgPool) {
    let prefix = unique_prefix();
    let app = spawn_limited(pool.clone(), &limits("memory", &prefix)).await;

    for remaining in [2, 1, 0] {
        let response = spend(&app).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            header(&response, "ratelimit").starts_with(&format!("\"default\";r={remaining};")),
            "{}",
            header(&response, "ratelimit")
        );
    }
    assert_refused(spend(&app).await).await;
    assert_refused(spend(&app).await).await;

    // Routes outside /api/v1 (probes) are not limited.
    assert_eq!(app.get("/health/live", None).await.status(), StatusCode::OK);

    // Memory budgets are per instance: a second instance on the same prefix has its own.
    let other = spawn_limited(pool, &limits("memory", &prefix)).await;
    assert_eq!(spend(&other).await.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn redis_store_shares_one_budget_between_instances(pool: PgPool) {
    let prefix = unique_prefix();
    let first = spawn_limited(pool.clone(), &limits("redis", &prefix)).await;
    let second = spawn_limited(pool, &limits("redis", &prefix)).await;

    assert_eq!(spend(&first).await.status(), StatusCode::OK);
    assert_eq!(spend(&second).await.status(), StatusCode::OK);
    let last = spend(&first).await;
    assert_eq!(last.status(), StatusCode::OK);
    assert!(header(&last, "ratelimit").starts_with("\"default\";r=0;"));

    assert_refused(spend(&second).await).await;
    assert_refused(spend(&first).await).await;
}
