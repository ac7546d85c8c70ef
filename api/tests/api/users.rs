//! Accounts and authentication over HTTP: registration (201, no password hash, case-insensitive
//! duplicate emails, validation details), login (token shape, one message for every failure),
//! `/users/me`, every way a bearer token is refused (`alg: none`, forged or foreign signature,
//! expired, wrong issuer, wrong audience), and admin-only routes (401 anonymous, 403 customer).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

const ME: &str = "/api/v1/users/me";

async fn user_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from users")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn register_creates_a_customer_and_never_returns_the_hash(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .register(
            "  Ada@Example.COM ",
            "correct horse battery",
            "Ada Lovelace",
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();

    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "email", "id", "name", "role"]);
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["role"], "customer");
    Uuid::parse_str(body["id"].as_str().unwrap()).expect("id is a UUID");
    chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).expect("RFC 3339");
    assert!(
        !text.contains("password") && !text.contains("$argon2"),
        "{text}"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn duplicate_email_is_409_whatever_its_case(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(
        app.register("grace@example.com", "long enough 1", "Grace")
            .await
            .status(),
        StatusCode::CREATED
    );
    let response = app
        .register("GRACE@Example.com", "long enough 2", "Grace again")
        .await;
    let body = assert_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["message"], "email already registered");
    assert_eq!(user_count(&pool).await, 1);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn invalid_registrations_are_422_naming_the_fields(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "long enough", "name": "Ada"}),
            "email",
        ),
        (
            json!({"email": "ada@example", "password": "long enough", "name": "Ada"}),
            "email",
        ),
        (
            json!({"email": "ada@example.com", "password": "short", "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": "ada@example.com", "password": "long enough", "name": ""}),
            "name",
        ),
    ];
    for (input, field) in cases {
        let response = app.post_json("/api/v1/auth/register", None, &input).await;
        let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let details = body["details"]
            .as_array()
            .unwrap_or_else(|| panic!("no details for {input}: {body}"));
        assert!(
            details.iter().any(|d| d["field"] == field),
            "{field} not named for {input}: {body}"
        );
    }
    assert_eq!(user_count(&pool).await, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn login_issues_a_bearer_token_that_opens_users_me(pool: PgPool) {
    let app = spawn_app(pool).await;
    let registered: Value = app
        .register("linus@example.com", "long enough pw", "Linus")
        .await
        .json()
        .await
        .unwrap();

    let response = app
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({"email": "LINUS@example.com", "password": "long enough pw"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let login: Value = response.json().await.unwrap();
    assert_eq!(login["token_type"], "Bearer");
    // Short-lived access (JWT_TTL_SECS's default) and a long-lived refresh token.
    assert_eq!(login["expires_in"], 900);
    assert_eq!(login["refresh_expires_in"], 30 * 86_400);
    assert!(
        login["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() > 60)
    );
    let token = login["access_token"].as_str().expect("access_token");

    let response = app.get(ME, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["id"], registered["id"]);
    assert_eq!(me["email"], "linus@example.com");

    assert_error(app.get(ME, None).await, StatusCode::UNAUTHORIZED).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn wrong_password_and_unknown_email_get_the_same_401(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("barbara@example.com", "the right one", "Barbara")
        .await;

    let wrong_password = app
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({"email": "barbara@example.com", "password": "the wrong one"}),
        )
        .await;
    let unknown_email = app
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({"email": "nobody@example.com", "password": "the right one"}),
        )
        .await;
    let wrong_password = assert_error(wrong_password, StatusCode::UNAUTHORIZED).await;
    let unknown_email = assert_error(unknown_email, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong_password, unknown_email);
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
        .expect("JSON claims")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn forged_and_foreign_tokens_are_401(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let email = "mallory@example.com";
    let password = "long enough pw";
    app.register(email, password, "Mallory").await;
    let genuine = app.login(email, password).await;
    assert_eq!(app.get(ME, Some(&genuine)).await.status(), StatusCode::OK);

    // Same database, other token settings: each app signs tokens the first one must refuse.
    let other_secret = spawn_app_with(
        pool.clone(),
        &[("JWT_SECRET", &orderly::testing::random_secret())],
    )
    .await;
    let other_issuer = spawn_app_with(pool.clone(), &[("JWT_ISSUER", "someone-else")]).await;
    let other_audience =
        spawn_app_with(pool.clone(), &[("JWT_AUDIENCE", "someone-elses-api")]).await;

    let mut claims = claims_of(&genuine);
    claims["role"] = json!("admin");
    let escalated_payload = b64(claims.to_string().as_bytes());
    let genuine_signature = genuine.rsplit('.').next().unwrap();

    let refused = [
        (
            "alg none",
            format!(
                "{}.{escalated_payload}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#)
            ),
        ),
        (
            "payload changed, signature kept",
            format!(
                "{}.{escalated_payload}.{genuine_signature}",
                b64(br#"{"alg":"HS256","typ":"JWT"}"#)
            ),
        ),
        (
            "signature stripped",
            genuine.rsplit_once('.').unwrap().0.to_owned() + ".",
        ),
        ("other secret", other_secret.login(email, password).await),
        ("other issuer", other_issuer.login(email, password).await),
        (
            "other audience",
            other_audience.login(email, password).await,
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    for (case, token) in refused {
        let body = assert_error(app.get(ME, Some(&token)).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["message"], "invalid or expired token", "{case}");
        // An escalated token must not open admin routes either.
        let response = app
            .post_json("/api/v1/products", Some(&token), &json!({}))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn expired_token_is_401(pool: PgPool) {
    let app = spawn_app_with(pool, &[("JWT_TTL_SECS", "1")]).await;
    app.register("short-lived@example.com", "long enough pw", "Brief")
        .await;
    let token = app.login("short-lived@example.com", "long enough pw").await;
    let exp = claims_of(&token)["exp"].as_u64().expect("exp claim");
    assert_eq!(exp, claims_of(&token)["iat"].as_u64().unwrap() + 1);

    // Expired means `exp` is in the past, with no leeway: wait until the clock has passed it.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= exp
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = assert_error(app.get(ME, Some(&token)).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["message"], "invalid or expired token");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn admin_routes_are_401_anonymous_and_403_for_customers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 500, 5).await;
    let product_path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let order: Value = app
        .place_order(
            &customer.token,
            "admin-routes",
            &crate::helpers::order_body(product["id"].as_str().unwrap(), 1),
        )
        .await
        .json()
        .await
        .unwrap();
    let order_path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    let new_product =
        json!({"sku": "NEW-1", "name": "New", "price_cents": 1, "currency": "EUR", "stock": 1});

    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(customer.token.as_str()), StatusCode::FORBIDDEN),
    ] {
        assert_error(
            app.post_json("/api/v1/products", token, &new_product).await,
            status,
        )
        .await;
        assert_error(
            app.patch_json(&product_path, token, &json!({"price_cents": 1}))
                .await,
            status,
        )
        .await;
        assert_error(app.delete(&product_path, token).await, status).await;
        assert_error(
            app.patch_json(&order_path, token, &json!({"status": "shipped"}))
                .await,
            status,
        )
        .await;
    }
    // Nothing changed.
    let unchanged: Value = app
        .get(&product_path, Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["price_cents"], 500);
    assert_eq!(unchanged["active"], true);
    let order_now: Value = app
        .get(&order_path, Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order_now["status"], "placed");
}
