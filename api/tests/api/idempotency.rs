//! `Idempotency-Key` on `POST /orders`: concurrent duplicates make one order, a sequential retry
//! gets the first response byte for byte (`Idempotent-Replayed: true`), a key reused with another
//! body is 422, a key still in flight is 409, keys expire after 24 hours, keys belong to one user,
//! and a missing or malformed key is 400.

use futures::future::join_all;
use orderly_api::orders::dto::PlaceOrderRequest;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{assert_error, new_key, order_body, spawn_app};

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("id")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn concurrent_identical_requests_make_one_order(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 100).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);

    let responses = join_all((0..20).map(|_| app.place_order(&customer.token, &key, &body))).await;
    let mut order_ids = Vec::new();
    let mut first_responses = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => {
                if response.headers().get("idempotent-replayed").is_none() {
                    first_responses += 1;
                }
                let order: Value = response.json().await.unwrap();
                order_ids.push(id_of(&order).to_owned());
            }
            StatusCode::CONFLICT => {
                let error = assert_error(response, StatusCode::CONFLICT).await;
                assert!(
                    error["message"]
                        .as_str()
                        .unwrap()
                        .contains("still being processed"),
                    "{error}"
                );
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(
        first_responses, 1,
        "the order was placed by exactly one request"
    );
    order_ids.dedup();
    assert_eq!(order_ids.len(), 1, "every 201 names the same order");
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 99);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn sequential_retry_replays_the_first_response_byte_for_byte(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 3);

    let first = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_bytes = first.bytes().await.unwrap();

    for _ in 0..2 {
        let retry = app.place_order(&customer.token, &key, &body).await;
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert_eq!(
            retry
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap()),
            Some("true")
        );
        assert_eq!(retry.bytes().await.unwrap(), first_bytes);
    }
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 7);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn same_key_with_another_body_is_422(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let placed = app
        .place_order(&customer.token, &key, &order_body(id_of(&product), 1))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);

    let response = app
        .place_order(&customer.token, &key, &order_body(id_of(&product), 2))
        .await;
    let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{error}"
    );
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 9);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn key_in_flight_is_409(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);

    // Claim the key exactly as the handler does, as if a first request were still running.
    let dto: PlaceOrderRequest = serde_json::from_value(body.clone()).unwrap();
    let fingerprint = orderly::idempotency::fingerprint(&serde_json::to_vec(&dto).unwrap());
    let claim = app
        .services
        .idempotency
        .begin(customer.id, "orders.create", &key, &fingerprint)
        .await
        .expect("key claimed");
    assert!(matches!(claim, orderly::idempotency::Begin::Proceed(_)));

    let response = app.place_order(&customer.token, &key, &body).await;
    let error = assert_error(response, StatusCode::CONFLICT).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("still being processed"),
        "{error}"
    );
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.stock_of(id_of(&product)).await, 10);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn expired_key_places_a_new_order(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);
    let first: Value = app
        .place_order(&customer.token, &key, &body)
        .await
        .json()
        .await
        .unwrap();

    // 24 hours later, as far as the key knows.
    let expires_in: f64 = sqlx::query_scalar(
        "select extract(epoch from expires_at - created_at)::float8 from idempotency_keys where key = $1",
    )
    .bind(&key)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        (expires_in - 86_400.0).abs() < 5.0,
        "keys should live 24 h, not {expires_in} s"
    );
    sqlx::query(
        "update idempotency_keys set expires_at = now() - interval '1 second' where key = $1",
    )
    .bind(&key)
    .execute(&pool)
    .await
    .unwrap();

    let response = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let second: Value = response.json().await.unwrap();
    assert_ne!(second["id"], first["id"]);
    assert_eq!(app.order_count().await, 2);
    assert_eq!(app.stock_of(id_of(&product)).await, 8);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn keys_belong_to_one_user(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let product = app.create_product(&admin, 100, 10).await;
    let customers = app.customers_without_password(2).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);

    let mut ids = Vec::new();
    for customer in &customers {
        let response = app.place_order(&customer.token, &key, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().get("idempotent-replayed").is_none());
        ids.push(response.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(app.order_count().await, 2);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn refused_order_is_replayed_as_refused(pool: PgPool) {
    // The stored answer is the answer: a retry after a 409 gets the 409 again even if stock
    // came back in between (a new attempt needs a new key).
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 1).await;
    let key = new_key();
    let body = order_body(id_of(&product), 2);
    let first = app.place_order(&customer.token, &key, &body).await;
    let first = assert_error(first, StatusCode::CONFLICT).await;

    let restock = app
        .patch_json(
            &format!("/api/v1/products/{}", id_of(&product)),
            Some(&admin.token),
            &serde_json::json!({"stock": 5}),
        )
        .await;
    assert_eq!(restock.status(), StatusCode::OK);
    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(assert_error(retry, StatusCode::CONFLICT).await, first);
    assert_eq!(app.order_count().await, 0);

    let fresh = app.place_order(&customer.token, &new_key(), &body).await;
    assert_eq!(fresh.status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn missing_or_malformed_key_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let body = order_body(id_of(&product), 1);

    let response = app
        .post_json("/api/v1/orders", Some(&customer.token), &body)
        .await;
    let error = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{error}"
    );
    for bad in ["x".repeat(256), "   ".to_owned(), "with space".to_owned()] {
        let response = app.place_order(&customer.token, &bad, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.stock_of(id_of(&product)).await, 10);
}
