//! `POST /api/v1/uploads` and `GET /api/v1/uploads/{id}`: who may upload, what the form must
//! hold, the size limit (413 with no row and no object left), and what is recorded and queued
//! for an accepted file. Processing itself is tested with the worker (worker/tests/worker).

use std::time::Duration;

use orderly::testing::eventually;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};

const CSV: &str = "sku,name,price_cents,currency,stock\nMUG-1,Mug,1299,EUR,10\n";

fn csv_file() -> Option<(&'static str, &'static str, Vec<u8>)> {
    Some(("products.csv", "text/csv", CSV.as_bytes().to_vec()))
}

async fn upload_status(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("select status from uploads where id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_optional(&app.services.db)
        .await
        .unwrap()
}

/// Asserts that a refused upload left nothing behind.
async fn assert_nothing_recorded(app: &TestApp) {
    assert_eq!(app.upload_count().await, 0, "an upload row was written");
    assert_eq!(
        app.outbox_count("upload.process").await,
        0,
        "a job was staged"
    );
    assert_eq!(
        app.stored_files(),
        Vec::<String>::new(),
        "files left in storage"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_admin_import_is_stored_recorded_and_queued(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            csv_file(),
        )
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "queued");
    assert_eq!(location, format!("/api/v1/uploads/{id}"));
    assert_eq!(upload_status(&app, &id).await.as_deref(), Some("queued"));
    assert_eq!(app.outbox_count("upload.process").await, 1);
    // The file sits under its final key, nothing under the temporary one.
    assert_eq!(app.stored_files(), [format!("uploads/{id}/original")]);
    let stored = app
        .services
        .storage
        .read_all(&format!("uploads/{id}/original"))
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), CSV.as_bytes());

    let response = app.get(&location, Some(&admin.token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let upload: Value = response.json().await.unwrap();
    assert_eq!(upload["id"], id.as_str());
    assert_eq!(upload["purpose"], "product_import");
    assert_eq!(upload["status"], "queued");
    assert_eq!(upload["filename"], "products.csv");
    assert_eq!(upload["content_type"], "text/csv");
    assert_eq!(upload["byte_size"], CSV.len());
    assert_eq!(upload["progress"], 0);
    assert_eq!(upload["rows_total"], Value::Null);
    assert_eq!(upload["rows_processed"], 0);
    assert_eq!(upload["errors"], serde_json::json!([]));
    assert_eq!(upload["errors_total"], 0);
    assert_eq!(upload["completed_at"], Value::Null);
    assert_eq!(upload["expired_at"], Value::Null, "the original is kept");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn only_admins_may_upload_or_read_uploads(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;

    let response = app
        .upload(
            Some(&customer.token),
            &[("purpose", "product_import")],
            csv_file(),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN).await;
    let response = app
        .upload(None, &[("purpose", "product_import")], csv_file())
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED).await;
    assert_nothing_recorded(&app).await;

    let admin = app.admin().await;
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            csv_file(),
        )
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/uploads/{id}");
    assert_error(
        app.get(&path, Some(&customer.token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(app.get(&path, None).await, StatusCode::UNAUTHORIZED).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn purpose_is_required_and_checked(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let response = app.upload(Some(&admin.token), &[], csv_file()).await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "purpose");

    let response = app
        .upload(Some(&admin.token), &[("purpose", "avatar")], csv_file())
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "purpose");

    let response = app
        .upload(Some(&admin.token), &[("purpose", "product_import")], None)
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "file");

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            Some(("empty.csv", "text/csv", Vec::new())),
        )
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["message"].as_str().unwrap().contains("empty"),
        "{body}"
    );

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import"), ("colour", "red")],
            csv_file(),
        )
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "colour");

    assert_nothing_recorded(&app).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_purpose_sent_after_the_file_is_checked_and_the_file_deleted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(CSV.as_bytes().to_vec()).file_name("products.csv"),
        )
        .text("purpose", "avatar");

    let response = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&admin.token)
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_nothing_recorded(&app).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_image_needs_an_existing_product(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let image = || Some(("mug.png", "image/png", b"\x89PNG\r\n\x1a\n....".to_vec()));

    let response = app
        .upload(Some(&admin.token), &[("purpose", "product_image")], image())
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "product_id");

    let unknown = Uuid::now_v7().to_string();
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_image"), ("product_id", &unknown)],
            image(),
        )
        .await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["details"][0]["field"], "product_id");

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_image"), ("product_id", "not-a-uuid")],
            image(),
        )
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    // An import names its products in the file, not in the form.
    let product = app.create_product(&admin, 1000, 5).await;
    let product_id = product["id"].as_str().unwrap();
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import"), ("product_id", product_id)],
            csv_file(),
        )
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_nothing_recorded(&app).await;

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_image"), ("product_id", product_id)],
            image(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let upload: Value = app
        .get(&format!("/api/v1/uploads/{id}"), Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(upload["purpose"], "product_image");
    assert_eq!(upload["product_id"], product_id);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_file_over_the_limit_is_413_and_leaves_nothing(pool: PgPool) {
    let app = spawn_app_with(pool, &[("UPLOAD_MAX_BYTES", "1024")]).await;
    let admin = app.admin().await;
    let file = |size: usize| Some(("big.csv", "text/csv", vec![b'x'; size]));

    // Exactly the limit is fine.
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            file(1024),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted = app.stored_files();
    assert_eq!(accepted.len(), 1);

    // One byte more: the request fits the body limit, the file does not (counted as it streams).
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            file(1025),
        )
        .await;
    let body = assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");

    // Far more: refused from the Content-Length before the handler runs.
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            file(300_000),
        )
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Far more, without a Content-Length (chunked): cut off while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b'y'; 1000])).collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "product_import")
        .part(
            "file",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks,
            )))
            .file_name("big.csv"),
        );
    let response = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&admin.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    assert_eq!(
        app.upload_count().await,
        1,
        "only the first upload is recorded"
    );
    assert_eq!(
        app.stored_files(),
        accepted,
        "a refused file was left in storage"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_connection_lost_mid_file_leaves_nothing(pool: PgPool) {
    use futures::SinkExt;

    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    // More than the storage writer buffers in memory (10 MB), so part of the file is already
    // on disk when the client goes away.
    let (mut chunks, body) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let form = reqwest::multipart::Form::new()
        .text("purpose", "product_import")
        .part(
            "file",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
                .file_name("broken.csv"),
        );
    let request = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&admin.token)
        .multipart(form)
        .send();
    let client = tokio::spawn(request);
    for _ in 0..12 {
        chunks.send(Ok(vec![b'z'; 1_000_000])).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            !app.stored_files().is_empty()
        })
        .await,
        "the partial file never reached storage"
    );

    chunks
        .send(Err(std::io::Error::other("the client went away")))
        .await
        .unwrap();
    drop(chunks);
    let _ = client.await.unwrap();

    assert!(
        eventually(Duration::from_secs(30), || async {
            app.stored_files().is_empty()
        })
        .await,
        "a partial file was left in storage: {:?}",
        app.stored_files()
    );
    assert_eq!(app.upload_count().await, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn other_routes_keep_the_small_body_limit(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_BODY_LIMIT_BYTES", "2048"),
            ("UPLOAD_MAX_BYTES", "100000"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let big_name = "n".repeat(4000);

    let response = app
        .post_json(
            "/api/v1/products",
            Some(&admin.token),
            &serde_json::json!({"sku": "BIG-1", "name": big_name, "price_cents": 1, "currency": "EUR", "stock": 1}),
        )
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            Some(("big.csv", "text/csv", vec![b'x'; 50_000])),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_body_that_is_not_multipart_is_415(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let response = app
        .post_json(
            "/api/v1/uploads",
            Some(&admin.token),
            &serde_json::json!({"purpose": "product_import"}),
        )
        .await;

    assert_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_nothing_recorded(&app).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn unknown_uploads_are_404_and_bad_error_pages_422(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let response = app
        .get(
            &format!("/api/v1/uploads/{}", Uuid::now_v7()),
            Some(&admin.token),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND).await;

    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            csv_file(),
        )
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for query in ["errors_limit=0", "errors_limit=501", "errors_cursor=abc"] {
        let response = app
            .get(&format!("/api/v1/uploads/{id}?{query}"), Some(&admin.token))
            .await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_queued_upload_is_cancelled_at_once_and_its_stream_ends_with_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let response = app
        .upload(
            Some(&admin.token),
            &[("purpose", "product_import")],
            csv_file(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/uploads/{id}/cancel");
    // Customers cannot; the admin can, at once (no worker runs here).
    let customer = app.customer().await;
    assert_error(
        app.post_json(&path, Some(&customer.token), &serde_json::json!({}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let response = app
        .post_json(&path, Some(&admin.token), &serde_json::json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert!(body["cancelled_at"].is_string());
    assert_eq!(upload_status(&app, &id).await.as_deref(), Some("cancelled"));
    assert_error(
        app.post_json(&path, Some(&admin.token), &serde_json::json!({}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    // A follower gets the end at once, in the shape `GET` answers.
    let events = app
        .get(&format!("/api/v1/uploads/{id}/events"), Some(&admin.token))
        .await;
    assert_eq!(events.status(), StatusCode::OK);
    let text = events.text().await.unwrap();
    assert!(text.contains("event: cancelled"), "{text}");
    assert!(text.contains("\"status\":\"cancelled\""), "{text}");
    app.stop().await;
}
