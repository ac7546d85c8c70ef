//! `Idempotency-Key` on `POST /orders`: concurrent duplicates make one order, a sequential retry
//! gets the first response byte for byte (`Idempotent-Replayed: true`), a key reused with another
//! body is 422, a key still in flight is 409 at once (not after the first request finishes),
//! keys expire after 24 hours, keys belong to one user, and a missing or malformed key is 400.
//! Crashes: an order committed whose response was never stored is answered from the order; a
//! claim left by an attempt that died before committing (as earlier versions, which claimed
//! outside the order's transaction, could leave) is taken over once its lock runs out, with the
//! same order id, and the dead attempt cannot then make a second order.

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
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 3);

    let first = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_bytes = first.bytes().await.unwrap();
    // The response was stored with the claim, in the order's transaction: the key is finished
    // as soon as the order exists.
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("select response_body from idempotency_keys where key = $1")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some(&first_bytes[..]));

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
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);

    // A first request is running: its transaction has claimed the key, exactly as the order
    // service does, and not committed.
    let mut first = pool.begin().await.unwrap();
    let claimed = app
        .services
        .idempotency
        .claim(
            &mut first,
            &attempt_for(customer.id, &key, &body),
            &orderly::idempotency::StoredResponse {
                status: 201,
                body: b"{}".to_vec(),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(claimed, orderly::idempotency::Claimed::Proceed),
        "{claimed:?}"
    );

    // The retry is told at once, rather than waiting for the first to finish.
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.place_order(&customer.token, &key, &body),
    )
    .await
    .expect("a request with a key in flight is answered without waiting for it");
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

    // The first request failed: its claim goes with its transaction, and a retry runs.
    first.rollback().await.unwrap();
    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.order_count().await, 1);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_failed_order_leaves_no_claim_behind(pool: PgPool) {
    // The claim is written in the order's transaction: an order that fails with a server error
    // after its claim (here: its outbox rows, written last, refused) leaves the key unused, and
    // the next request with it runs.
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);
    sqlx::query(
        "create function fail_outbox() returns trigger language plpgsql as \
         $$ begin raise exception 'the outbox is down'; end $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "create trigger fail_outbox before insert on outbox for each row execute function fail_outbox()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let failed = app.place_order(&customer.token, &key, &body).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let keys: i64 = sqlx::query_scalar("select count(*) from idempotency_keys where key = $1")
        .bind(&key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the claim rolled back with the order");

    sqlx::query("drop trigger fail_outbox on outbox")
        .execute(&pool)
        .await
        .unwrap();
    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 9);
}

/// The attempt the order handler makes for `body` under `key`.
fn attempt_for(user_id: uuid::Uuid, key: &str, body: &Value) -> orderly::idempotency::Attempt {
    let dto: PlaceOrderRequest = serde_json::from_value(body.clone()).unwrap();
    let fingerprint = orderly::idempotency::fingerprint(&serde_json::to_vec(&dto).unwrap());
    orderly::idempotency::Attempt::new(user_id, "orders.create", key, &fingerprint)
}

/// A claim for `body` under `key` as earlier versions of Orderly wrote it: committed on its own
/// before the order's transaction began, by an attempt that then died. Returns the claim.
async fn claim_left_by_a_dead_attempt(
    pool: &PgPool,
    user_id: uuid::Uuid,
    key: &str,
    body: &Value,
) -> orderly::idempotency::Claim {
    let attempt = attempt_for(user_id, key, body);
    let resource_id = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id) \
         values ($1, 'orders.create', $2, $3, now() + interval '5 minutes', now() + interval '24 hours', $4)",
    )
    .bind(user_id)
    .bind(key)
    .bind(&attempt.request_hash)
    .bind(resource_id)
    .execute(pool)
    .await
    .unwrap();
    orderly::idempotency::Claim {
        user_id,
        scope: "orders.create",
        key: key.to_owned(),
        resource_id,
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn order_committed_without_a_stored_response_is_answered_from_the_order(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 2);
    let first: Value = app
        .place_order(&customer.token, &key, &body)
        .await
        .json()
        .await
        .unwrap();

    // As an earlier version left it: the order committed with its claim, and the process died
    // before it stored the response (which it did after the commit).
    sqlx::query(
        "update idempotency_keys set response_status = null, response_body = null where key = $1",
    )
    .bind(&key)
    .execute(&pool)
    .await
    .unwrap();

    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let replayed: Value = retry.json().await.unwrap();
    assert_eq!(replayed, first);
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 8);
    let stored: Option<i16> =
        sqlx::query_scalar("select response_status from idempotency_keys where key = $1")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, Some(201), "the rebuilt response is stored");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn claim_of_an_attempt_that_died_before_committing_is_taken_over(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);
    let claim = claim_left_by_a_dead_attempt(&pool, customer.id, &key, &body).await;

    // While the claim's lock holds, a retry is told to wait.
    let early = app.place_order(&customer.token, &key, &body).await;
    assert_error(early, StatusCode::CONFLICT).await;

    // The attempt died without committing; its lock runs out.
    sqlx::query(
        "update idempotency_keys set locked_until = now() - interval '1 second' where key = $1",
    )
    .bind(&key)
    .execute(&pool)
    .await
    .unwrap();

    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    let order: Value = retry.json().await.unwrap();
    assert_eq!(
        id_of(&order),
        claim.resource_id.to_string(),
        "the order takes the id the key was claimed with"
    );
    assert_eq!(app.order_count().await, 1);

    let again = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap(), order);
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 9);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn attempt_presumed_dead_makes_no_second_order(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let key = new_key();
    let body = order_body(id_of(&product), 1);
    let claim = claim_left_by_a_dead_attempt(&pool, customer.id, &key, &body).await;
    sqlx::query(
        "update idempotency_keys set locked_until = now() - interval '1 second' where key = $1",
    )
    .bind(&key)
    .execute(&pool)
    .await
    .unwrap();
    // A retry takes the claim over and places the order...
    let retry = app.place_order(&customer.token, &key, &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    let order: Value = retry.json().await.unwrap();
    assert_eq!(id_of(&order), claim.resource_id.to_string());

    // ...then another attempt that also found the claim dead, only slower, tries to place the
    // order under the same id: it claims the key first, finds the retry's answer there, and
    // answers with it; no second order is made.
    let dto: PlaceOrderRequest = serde_json::from_value(body.clone()).unwrap();
    let late = app
        .services
        .orders
        .place(
            &orderly::users::Actor {
                user_id: customer.id,
                role: orderly::users::Role::Customer,
            },
            &dto.lines().unwrap(),
            &attempt_for(customer.id, &key, &body).taking_over(claim),
            |_| {
                Ok(orderly::idempotency::StoredResponse {
                    status: 201,
                    body: b"{}".to_vec(),
                })
            },
        )
        .await
        .unwrap();
    let orderly::idempotency::Keyed::Earlier(orderly::idempotency::Earlier::Replay(replayed)) =
        late
    else {
        panic!("the late attempt placed an order: {late:?}");
    };
    assert_eq!(replayed.status, 201);
    assert_eq!(
        serde_json::from_slice::<Value>(&replayed.body).unwrap(),
        order
    );
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.stock_of(id_of(&product)).await, 9);
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
