//! Domain events through the transactional outbox: placing an order stages an
//! `email.order_confirmation` job in the same transaction as the order (carrying the order id and
//! the request id), cancelling stages `email.order_cancelled`, and a refused order stages nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{assert_error, new_key, order_body, spawn_app};

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    queue: String,
    spec: sqlx::types::Json<Value>,
    /// The transaction that wrote the row (its copy is written by the same one).
    written_by: String,
}

/// The outbox rows of `kind` written since the app started (copies: a pushed row is deleted).
async fn outbox_rows(pool: &PgPool, kind: &str) -> Vec<OutboxRow> {
    sqlx::query_as("select queue, spec, xmin::text as written_by from outbox_written where kind = $1 order by id")
        .bind(kind)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn outbox_total(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox_written")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn placing_an_order_stages_its_confirmation_email_in_the_same_transaction(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 10).await;
    let request_id = "events-test-request-1";

    let response = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&customer.token)
        .header("Idempotency-Key", new_key())
        .header("x-request-id", request_id)
        .json(&order_body(product["id"].as_str().unwrap(), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let order_id: Uuid = order["id"].as_str().unwrap().parse().unwrap();

    let rows = outbox_rows(&pool, "email.order_confirmation").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.queue, "emails");
    assert_eq!(row.spec["payload"]["order_id"], order_id.to_string());
    assert_eq!(row.spec["request_id"], request_id);
    // `xmin` is the id of the transaction that wrote a row: the same id means one transaction.
    let order_written_by: String =
        sqlx::query_scalar("select xmin::text from orders where id = $1")
            .bind(order_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        row.written_by, order_written_by,
        "the job was not staged in the order's transaction"
    );

    let cancel = app
        .post_json(
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&customer.token),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let rows = outbox_rows(&pool, "email.order_cancelled").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].spec["payload"]["order_id"], order_id.to_string());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn refused_order_stages_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 100, 1).await;
    let before = outbox_total(&pool).await;

    let response = app
        .place_order(
            &customer.token,
            &new_key(),
            &order_body(product["id"].as_str().unwrap(), 2),
        )
        .await;
    let error = assert_error(response, StatusCode::CONFLICT).await;
    assert_eq!(error["message"], "insufficient stock");

    assert_eq!(outbox_total(&pool).await, before);
    assert_eq!(app.outbox_count("email.order_confirmation").await, 0);
    assert_eq!(app.order_count().await, 0);
}
