//! Failed logins per account: after `LOGIN_MAX_FAILURES` attempts in a window, logins of that
//! account are refused (429 with `Retry-After`) from every address, even with the right password,
//! until the window ends; unknown emails are counted alike; other accounts are not affected; a
//! successful login gives the budget back. Requests come "through" a trusted proxy (the test
//! client at 127.0.0.1) with a different `X-Forwarded-For` each, as a distributed attack would.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, spawn_app_with};

const PASSWORD: &str = "the right password";

async fn spawn_throttled(pool: PgPool, max_failures: &str, window_secs: &str) -> TestApp {
    spawn_app_with(
        pool,
        &[
            ("LOGIN_MAX_FAILURES", max_failures),
            ("LOGIN_FAILURE_WINDOW_SECS", window_secs),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await
}

/// Registers an account with [`PASSWORD`] and returns its email.
async fn account(app: &TestApp) -> String {
    let email = format!("user-{}@example.com", Uuid::new_v4().simple());
    let response = app.register(&email, PASSWORD, "Someone").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    email
}

/// A login attempt from a client at address number `from`.
async fn login_from(app: &TestApp, email: &str, password: &str, from: u32) -> Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header(
            "x-forwarded-for",
            format!("198.51.{}.{}", from / 250, from % 250 + 1),
        )
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request sent")
}

/// Asserts a lockout answer and returns its `Retry-After` in seconds.
async fn assert_locked(response: Response, window_secs: u64) -> u64 {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=window_secs).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let body = assert_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many failed logins"),
        "{body}"
    );
    retry_after
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn wrong_passwords_lock_one_account_from_every_address(pool: PgPool) {
    let app = spawn_throttled(pool, "3", "60").await;
    let victim = account(&app).await;
    let bystander = account(&app).await;

    for from in 0..3 {
        let response = login_from(&app, &victim, "a wrong guess", from).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_locked(login_from(&app, &victim, "a wrong guess", 3).await, 60).await;
    // The right password does not get in while the account is locked, in any spelling of it.
    assert_locked(login_from(&app, &victim, PASSWORD, 4).await, 60).await;
    let shouted = victim.to_uppercase();
    assert_locked(login_from(&app, &shouted, PASSWORD, 5).await, 60).await;
    // Nor through the dashboard's login form, which says so and when to come back.
    let form = app.dashboard_login(&victim, PASSWORD).await;
    assert_eq!(form.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(form.headers().contains_key("retry-after"));

    // Other accounts log in as usual, from the same addresses too.
    assert_eq!(
        login_from(&app, &bystander, PASSWORD, 0).await.status(),
        StatusCode::OK
    );

    // An email without an account is counted the same way: nothing tells them apart.
    let nobody = format!("nobody-{}@example.com", Uuid::new_v4().simple());
    for from in 10..13 {
        let response = login_from(&app, &nobody, "a wrong guess", from).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_locked(login_from(&app, &nobody, "a wrong guess", 13).await, 60).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_lock_ends_with_its_window(pool: PgPool) {
    let app = spawn_throttled(pool, "2", "3").await;
    let email = account(&app).await;

    for from in 0..2 {
        let response = login_from(&app, &email, "a wrong guess", from).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let retry_after = assert_locked(login_from(&app, &email, PASSWORD, 2).await, 3).await;

    // Retry-After is rounded up, so the window is over once it has passed.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        login_from(&app, &email, PASSWORD, 3).await.status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_successful_login_gives_the_budget_back(pool: PgPool) {
    let app = spawn_throttled(pool, "2", "60").await;
    let email = account(&app).await;

    let wrong = login_from(&app, &email, "a wrong guess", 0).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = login_from(&app, &email, PASSWORD, 1).await;
    assert_eq!(right.status(), StatusCode::OK);

    // Two more failures are allowed again; the third attempt is refused.
    for from in 2..4 {
        let response = login_from(&app, &email, "a wrong guess", from).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_locked(login_from(&app, &email, "a wrong guess", 4).await, 60).await;
}
