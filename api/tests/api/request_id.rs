//! `x-request-id`: a sane incoming id is echoed back, a missing one is generated (a UUID), and
//! an absurd one (too long, control or non-ASCII bytes) is replaced, on successes and errors alike.

use reqwest::{Response, StatusCode, header::HeaderValue};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

async fn send_with_id(app: &TestApp, path: &str, id: HeaderValue) -> Response {
    app.client
        .get(app.url(path))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap()
}

fn returned_id(response: &Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("x-request-id on the response")
        .to_str()
        .expect("printable request id")
        .to_owned()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn incoming_request_id_is_echoed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = "lb-7f3a9c2e-0001";
    for path in ["/health/live", "/api/v1/no-such-route"] {
        let response = send_with_id(&app, path, HeaderValue::from_static(id)).await;
        assert_eq!(returned_id(&response), id, "{path}");
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn missing_request_id_is_generated_as_a_uuid(pool: PgPool) {
    let app = spawn_app(pool).await;
    let first = app.get("/health/live", None).await;
    let second = app.get("/api/v1/products/not-a-uuid", None).await;
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    let (first, second) = (returned_id(&first), returned_id(&second));
    Uuid::parse_str(&first).expect("generated id is a UUID");
    Uuid::parse_str(&second).expect("generated id is a UUID");
    assert_ne!(first, second, "each request gets its own id");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn absurd_request_ids_are_replaced(pool: PgPool) {
    let app = spawn_app(pool).await;
    let absurd = [
        HeaderValue::from_str(&"a".repeat(1000)).unwrap(),
        HeaderValue::from_str("two\twords").unwrap(),
        HeaderValue::from_str("with space").unwrap(),
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    ];
    for id in absurd {
        let response = send_with_id(&app, "/health/live", id.clone()).await;
        let returned = returned_id(&response);
        assert_ne!(returned.as_bytes(), id.as_bytes());
        Uuid::parse_str(&returned)
            .unwrap_or_else(|_| panic!("{id:?} was replaced by {returned:?}, not a UUID"));
    }
}
