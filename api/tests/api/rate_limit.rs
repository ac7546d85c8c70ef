//! Per-client rate limits on `/api/v1`: every response carries `RateLimit-Policy` and
//! `RateLimit`, a client over its budget gets 429 in the error shape with `Retry-After`; the
//! memory store keeps one budget per api instance, the Redis store one budget shared by every
//! instance on the same `REDIS_PREFIX`.
//!
//! Budgets are one request per minute with a burst of 3, so a refused request stays refused for
//! a whole minute: nothing in these tests depends on how fast they run.
//!
//! Whose budget: a valid token's user, except on authentication routes; otherwise the client
//! address, read from `X-Forwarded-For` right to left only behind `TRUSTED_PROXIES`, IPv6 per /64.

use reqwest::{Response, StatusCode};
use serde_json::json;
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

/// `limits` plus more variables.
fn limits_with(prefix: &str, more: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut vars = limits("memory", prefix);
    vars.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    vars
}

/// One request of the limited route, as forwarded by a proxy that sent `forwarded_for`.
async fn spend_from(app: &TestApp, forwarded_for: &str) -> Response {
    app.client
        .get(app.url(LIMITED))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("request sent")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_token_never_chooses_the_budget_on_authentication_routes(pool: PgPool) {
    let app = spawn_limited(pool, &limits("memory", &unique_prefix())).await;
    // An attacker with an account of their own: its token must not buy fresh login guesses.
    let attacker = app.customers_without_password(1).await.remove(0);
    let guess = json!({"email": "victim@example.com", "password": "guess-number-n"});
    for _ in 0..3 {
        let response = app.post_json("/api/v1/auth/login", None, &guess).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let with_token = app
        .post_json("/api/v1/auth/login", Some(&attacker.token), &guess)
        .await;
    assert_refused(with_token).await;
    let register = json!({"email": "new@example.com", "password": "long enough", "name": "N"});
    let with_token = app
        .post_json("/api/v1/auth/register", Some(&attacker.token), &register)
        .await;
    assert_refused(with_token).await;
    let dashboard = app
        .client
        .post(app.url("/admin/login"))
        .bearer_auth(&attacker.token)
        .form(&[("email", "victim@example.com"), ("password", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), StatusCode::TOO_MANY_REQUESTS);

    // Elsewhere the token still has a budget of its own.
    assert_eq!(
        app.get("/api/v1/users/me", Some(&attacker.token))
            .await
            .status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn forwarded_for_is_read_right_to_left_and_only_from_trusted_proxies(pool: PgPool) {
    // The test client connects from 127.0.0.1: here it plays the proxy.
    let behind_proxy = spawn_limited(
        pool.clone(),
        &limits_with(
            &unique_prefix(),
            &[("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")],
        ),
    )
    .await;
    // A client forging a different leftmost address on every request is still one client.
    for forged in 1..=3 {
        let response =
            spend_from(&behind_proxy, &format!("198.51.100.{forged}, 203.0.113.7")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_refused(spend_from(&behind_proxy, "198.51.100.4, 203.0.113.7").await).await;
    // The same client behind a second trusted proxy (10.1.1.1) too.
    assert_refused(spend_from(&behind_proxy, "198.51.100.5, 203.0.113.7, 10.1.1.1").await).await;
    // Another client (the rightmost untrusted address) has its own budget.
    assert_eq!(
        spend_from(&behind_proxy, "198.51.100.1, 203.0.113.8")
            .await
            .status(),
        StatusCode::OK
    );

    // A peer that is not a trusted proxy is the client, whatever it forwards.
    let direct = spawn_limited(
        pool,
        &limits_with(&unique_prefix(), &[("TRUSTED_PROXIES", "10.0.0.0/8")]),
    )
    .await;
    for client in 1..=3 {
        let response = spend_from(&direct, &format!("203.0.113.{client}")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_refused(spend_from(&direct, "203.0.113.4").await).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_ipv6_64_shares_one_budget_and_mapped_ipv4_is_ipv4(pool: PgPool) {
    let app = spawn_limited(
        pool,
        &limits_with(&unique_prefix(), &[("TRUSTED_PROXIES", "127.0.0.1")]),
    )
    .await;
    for client in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:1:2:3",
    ] {
        assert_eq!(spend_from(&app, client).await.status(), StatusCode::OK);
    }
    assert_refused(spend_from(&app, "2001:db8:1:2:aaaa::4").await).await;
    assert_eq!(
        spend_from(&app, "2001:db8:1:3::1").await.status(),
        StatusCode::OK
    );

    for _ in 0..3 {
        let response = spend_from(&app, "::ffff:203.0.113.9").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_refused(spend_from(&app, "203.0.113.9").await).await;
}
