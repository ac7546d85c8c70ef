//! Uploads end to end: the api in-process takes the file over HTTP, the real worker runner
//! processes the job, and the outcome is read back through the api and from PostgreSQL and
//! storage. Covers a mixed valid/invalid import, a 50,000-row import (time and memory printed),
//! a retried import that must not double-count, a fake image, real images and a decompression
//! bomb.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis_core::task::data::Data;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use orderly::{
    jobs::UploadJob,
    queue::Job,
    queue::{JobControl, JobInfo},
    testing::png_bomb,
    uploads::{UploadReport, import::ImportBatch},
    users::{DisplayName, Email, Password, TokenIssuer},
};
use orderly_worker::jobs::JobContext;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::helpers::{TestServices, options, services};

/// The api and (optionally) a worker process in this test, sharing one set of services.
struct Shop {
    services: TestServices,
    address: String,
    http: reqwest::Client,
    token: String,
    api_stop: Option<oneshot::Sender<()>>,
    api: tokio::task::JoinHandle<()>,
    worker: Option<(Arc<Notify>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

async fn start_shop(pool: PgPool, with_worker: bool) -> Shop {
    // Tests poll the status endpoint in a loop; the rate limiter is not what they are about.
    let services = services(pool, &[("RATE_LIMIT_PER_MINUTE", "0".into())]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (api_stop, stopped) = oneshot::channel::<()>();
    let state = orderly_api::AppState::new(services.services.clone());
    let api = tokio::spawn(async move {
        let _ = orderly_api::app::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await;
    });
    let worker = with_worker.then(|| {
        let stop = Arc::new(Notify::new());
        let signal = stop.clone();
        let handle = tokio::spawn(orderly_worker::runner::run(
            services.services.clone(),
            options(UploadJob::QUEUE.as_str(), 2),
            async move { signal.notified().await },
        ));
        (stop, handle)
    });
    let (admin, _) = services
        .users
        .create_admin(
            Email::parse(&format!("admin-{}@example.com", Uuid::new_v4().simple())).unwrap(),
            Password::parse("upload-admin-password".into()).unwrap(),
            DisplayName::parse("Upload Admin").unwrap(),
        )
        .await
        .unwrap();
    let token = TokenIssuer::new(&services.config.auth)
        .issue(&admin, Uuid::new_v4(), 0)
        .unwrap()
        .token;
    Shop {
        services,
        address,
        http: reqwest::Client::new(),
        token,
        api_stop: Some(api_stop),
        api,
        worker,
    }
}

impl Shop {
    /// Uploads a file and returns the upload id, asserting 202.
    async fn upload(
        &self,
        fields: &[(&str, &str)],
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text((*name).to_owned(), (*value).to_owned());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(filename.to_owned())
                .mime_str(content_type)
                .unwrap(),
        );
        let response = self
            .http
            .post(format!("{}/api/v1/uploads", self.address))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn import(&self, csv: &str) -> String {
        self.upload(
            &[("purpose", "product_import")],
            "products.csv",
            "text/csv",
            csv.as_bytes().to_vec(),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Polls the upload until it is completed or failed (bounded), returning its last state and
    /// every progress value seen on the way.
    async fn finished(&self, id: &str) -> (Value, Vec<i64>) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen = Vec::new();
        loop {
            let upload = self.get(&format!("/api/v1/uploads/{id}")).await;
            seen.push(upload["progress"].as_i64().unwrap());
            if upload["status"] == "completed" || upload["status"] == "failed" {
                return (upload, seen);
            }
            assert!(
                Instant::now() < deadline,
                "upload {id} never finished: {upload}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn create_product(&self, sku: &str, price_cents: i64) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/products", self.address))
            .bearer_auth(&self.token)
            .json(
                &json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents,
                          "currency": "EUR", "stock": 1}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn product_by_sku(&self, sku: &str) -> Option<(String, i64, String, i32)> {
        sqlx::query_as("select name, price_cents, currency, stock from products where sku = $1")
            .bind(sku)
            .fetch_optional(&self.services.db)
            .await
            .unwrap()
    }

    async fn product_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from products")
            .fetch_one(&self.services.db)
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some((stop, handle)) = self.worker.take() {
            stop.notify_one();
            handle.await.unwrap().unwrap();
        }
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.api).await;
    }
}

/// Lines 2, 3 and 10 are valid; the others are refused for the reasons listed in `EXPECTED`.
const MIXED_CSV: &str = "sku,name,price_cents,currency,stock
MUG-1,Coffee mug,1299,EUR,10
CUP-1,Tea cup,899,EUR,5
BAD SKU,Broken,100,EUR,1
PLATE-1,Plate,12.50,EUR,3
BOWL-1,Bowl,700,euro,2
SPOON-1,Spoon,100,EUR
CUP-1,Tea cup again,999,EUR,1
\"FORK-1\",\"Fork, silver\",450,USD,-1
\"KNIFE-1\",\"Knife \"\"chef\"\"\",2500,USD,4
,No sku,100,EUR,1
";

/// (line, field, part of the message) of every refused row of `MIXED_CSV`.
const EXPECTED: [(i64, Option<&str>, &str); 7] = [
    (4, Some("sku"), "letters, digits"),
    (5, Some("price_cents"), "whole number"),
    (6, Some("currency"), "ISO 4217"),
    (7, None, "expected 5 fields, found 4"),
    (8, Some("sku"), "duplicate of line 3"),
    (9, Some("stock"), "between 0 and"),
    (11, Some("sku"), "letters, digits"),
];

fn assert_mixed_outcome(upload: &Value) {
    assert_eq!(upload["status"], "completed", "{upload}");
    assert_eq!(upload["progress"], 100);
    assert_eq!(upload["rows_total"], 10);
    assert_eq!(upload["rows_processed"], 10);
    assert_eq!(upload["rows_ok"], 3);
    assert_eq!(upload["rows_failed"], 7);
    assert_eq!(upload["errors_total"], 7);
    assert_eq!(upload["error"], Value::Null);
    assert_eq!(upload["result"]["errors_truncated"], false);
    let errors = upload["errors"].as_array().unwrap();
    assert_eq!(errors.len(), EXPECTED.len(), "{errors:?}");
    for (error, (line, field, says)) in errors.iter().zip(EXPECTED) {
        assert_eq!(error["line"], line, "{error}");
        assert_eq!(error["field"].as_str(), field, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "line {line}: {error}"
        );
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_mixed_import_applies_valid_rows_and_reports_the_rest_by_line(pool: PgPool) {
    let shop = start_shop(pool, true).await;
    shop.create_product("MUG-1", 500).await;
    // Warm the catalogue cache: the import must invalidate it.
    let before = shop.get("/api/v1/products?q=MUG-1").await;
    assert_eq!(before["items"][0]["price_cents"], 500);

    let id = shop.import(MIXED_CSV).await;
    let (upload, progress) = shop.finished(&id).await;

    assert_mixed_outcome(&upload);
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    // The existing product is updated, new ones created, refused rows leave no trace, and the
    // first of two lines with one SKU wins.
    assert_eq!(
        shop.product_by_sku("MUG-1").await,
        Some(("Coffee mug".into(), 1299, "EUR".into(), 10))
    );
    assert_eq!(
        shop.product_by_sku("CUP-1").await,
        Some(("Tea cup".into(), 899, "EUR".into(), 5))
    );
    assert_eq!(
        shop.product_by_sku("KNIFE-1").await,
        Some(("Knife \"chef\"".into(), 2500, "USD".into(), 4))
    );
    for refused in ["PLATE-1", "BOWL-1", "SPOON-1", "FORK-1"] {
        assert_eq!(shop.product_by_sku(refused).await, None, "{refused}");
    }
    assert_eq!(shop.product_count().await, 3);
    let after = shop.get("/api/v1/products?q=MUG-1").await;
    assert_eq!(
        after["items"][0]["price_cents"], 1299,
        "stale catalogue cache"
    );

    // The row errors page through in file order.
    let first = shop
        .get(&format!("/api/v1/uploads/{id}?errors_limit=3"))
        .await;
    let lines = |page: &Value| -> Vec<i64> {
        page["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["line"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(lines(&first), [4, 5, 6]);
    let cursor = first["errors_next_cursor"].as_str().unwrap();
    let second = shop
        .get(&format!(
            "/api/v1/uploads/{id}?errors_limit=3&errors_cursor={cursor}"
        ))
        .await;
    assert_eq!(lines(&second), [7, 8, 9]);
    let cursor = second["errors_next_cursor"].as_str().unwrap();
    let last = shop
        .get(&format!(
            "/api/v1/uploads/{id}?errors_limit=3&errors_cursor={cursor}"
        ))
        .await;
    assert_eq!(lines(&last), [11]);
    assert_eq!(last["errors_next_cursor"], Value::Null);
    shop.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_file_without_the_right_header_fails_with_a_clear_error(pool: PgPool) {
    let shop = start_shop(pool, true).await;

    let id = shop.import("name,price\nMug,100\n").await;
    let (upload, _) = shop.finished(&id).await;

    assert_eq!(upload["status"], "failed");
    let error = upload["error"].as_str().unwrap();
    assert!(
        error.contains("\"name\"") || error.contains("sku"),
        "{error}"
    );
    assert!(
        error.contains("sku,name,price_cents,currency,stock"),
        "{error}"
    );
    assert_eq!(upload["rows_ok"], 0);
    assert_eq!(shop.product_count().await, 0);
    shop.stop().await;
}

/// Peak and current resident memory of this process, in KiB (`VmHWM`, `VmRSS`).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let read = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (read("VmHWM:"), read("VmRSS:"))
}

/// Resets this process's peak resident memory to its current value (Linux `clear_refs` 5).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_50000_row_import_applies_every_row(pool: PgPool) {
    const ROWS: usize = 50_000;
    let shop = start_shop(pool, true).await;
    let mut csv = String::with_capacity(ROWS * 40);
    csv.push_str("sku,name,price_cents,currency,stock\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "SKU-{i:06},Product {i},{},EUR,{}\n",
            100 + i % 10_000,
            i % 500
        ));
    }
    let file_bytes = csv.len();

    let uploaded_at = Instant::now();
    let id = shop.import(&csv).await;
    let upload_time = uploaded_at.elapsed();
    drop(csv);
    let (_, rss_before) = memory_kib();
    reset_peak_memory();
    let started = Instant::now();
    let (upload, progress) = shop.finished(&id).await;
    let processing_time = started.elapsed();
    let (peak_during, _) = memory_kib();

    assert_eq!(upload["status"], "completed", "{upload}");
    assert_eq!(upload["rows_total"], ROWS);
    assert_eq!(upload["rows_ok"], ROWS);
    assert_eq!(upload["rows_failed"], 0);
    assert_eq!(upload["errors_total"], 0);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(shop.product_count().await, ROWS as i64);
    assert_eq!(
        shop.product_by_sku("SKU-049999").await,
        Some(("Product 49999".into(), 100 + 9_999, "EUR".into(), 499))
    );
    eprintln!(
        "50,000-row import ({:.1} MB): upload {:.2} s, processing {:.2} s ({:.0} rows/s); \
         resident memory before processing {} MiB, peak during processing {} MiB (+{} MiB); \
         progress values seen: {}",
        file_bytes as f64 / 1e6,
        upload_time.as_secs_f64(),
        processing_time.as_secs_f64(),
        ROWS as f64 / processing_time.as_secs_f64(),
        rss_before / 1024,
        peak_during / 1024,
        peak_during.saturating_sub(rss_before) / 1024,
        {
            let mut distinct = progress.clone();
            distinct.dedup();
            format!("{distinct:?}")
        }
    );
    shop.stop().await;
}

/// A CSV import of `rows` valid rows.
fn big_import(rows: usize) -> String {
    let mut csv = String::with_capacity(rows * 40);
    csv.push_str("sku,name,price_cents,currency,stock\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "SKU-{i:06},Product {i},{},EUR,1\n",
            100 + i % 10_000
        ));
    }
    csv
}

/// One server-sent event: `(event, id, data)`.
type SseEvent = (String, Option<String>, Value);

/// Reads events from an open SSE response until `stop` says so or the stream ends; returns
/// them and whether the stream ended.
async fn read_events(
    response: &mut reqwest::Response,
    mut stop: impl FnMut(&SseEvent) -> bool,
) -> (Vec<SseEvent>, bool) {
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let event = (name, id, serde_json::from_str(&data).unwrap());
            let done = stop(&event);
            events.push(event);
            if done {
                return (events, false);
            }
        }
        match tokio::time::timeout(Duration::from_secs(120), response.chunk())
            .await
            .expect("the stream stays alive")
            .unwrap()
        {
            Some(chunk) => buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
            None => return (events, true),
        }
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_import_streams_progress_then_its_final_state_and_resumes_after_a_reconnect(
    pool: PgPool,
) {
    let shop = start_shop(pool, true).await;
    let id = shop.import(&big_import(30_000)).await;
    let url = format!("{}/api/v1/uploads/{id}/events", shop.address);
    let mut first = shop
        .http
        .get(&url)
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (events, _) = read_events(&mut first, |(name, _, _)| name == "progress").await;
    let (_, resume_after, progress) = events.last().unwrap().clone();
    assert!(progress["fraction"].as_f64().unwrap() < 1.0, "{progress}");
    drop(first);

    // The browser's EventSource sends the last id it saw when it reconnects.
    let mut resumed = shop
        .http
        .get(&url)
        .bearer_auth(&shop.token)
        .header("last-event-id", resume_after.clone().unwrap())
        .send()
        .await
        .unwrap();
    let (events, ended) = read_events(&mut resumed, |_| false).await;
    assert!(ended, "the stream ends after the final event");
    let (name, _, upload) = events.last().unwrap();
    assert_eq!(name, "completed", "{events:?}");
    assert_eq!(upload["status"], "completed");
    assert_eq!(upload["rows_ok"], 30_000);
    let position = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    let after = position(resume_after.as_deref().unwrap());
    for (_, id, _) in &events {
        if let Some(id) = id {
            assert!(position(id) > after, "{id} came before the resume point");
        }
    }
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(name, _, _)| name == "progress" || name == "started"),
        "{events:?}"
    );
    shop.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_running_import_stops_on_cancel_and_keeps_the_rows_it_applied(pool: PgPool) {
    let shop = start_shop(pool, true).await;
    let id = shop.import(&big_import(50_000)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let upload = shop.get(&format!("/api/v1/uploads/{id}")).await;
        if upload["status"] == "processing" && upload["rows_ok"].as_i64().unwrap() > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import never started: {upload}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let response = shop
        .http
        .post(format!("{}/api/v1/uploads/{id}/cancel", shop.address))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let upload = loop {
        let upload = shop.get(&format!("/api/v1/uploads/{id}")).await;
        if upload["status"] != "processing" {
            break upload;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "still processing: {upload}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "import: cancel to cancelled {} ms",
        asked.elapsed().as_millis()
    );
    assert_eq!(upload["status"], "cancelled", "{upload}");
    assert!(upload["cancelled_at"].is_string());
    let applied = upload["rows_ok"].as_i64().unwrap();
    assert!(applied > 0 && applied < 50_000, "{upload}");
    assert_eq!(
        shop.product_count().await,
        applied,
        "what was applied stays"
    );
    // The job ended cancelled, and a second cancel is refused.
    let job_id: Uuid = sqlx::query_scalar("select job_id from uploads where id = $1::uuid")
        .bind(&id)
        .fetch_one(&shop.services.db)
        .await
        .unwrap();
    let state = |job_id: String| {
        let queue = shop.services.queue.clone();
        async move {
            queue
                .job("uploads", &job_id)
                .await
                .unwrap()
                .map(|j| j.state)
        }
    };
    assert!(
        orderly::testing::eventually(Duration::from_secs(10), || {
            let state = state(job_id.to_string());
            async move { state.await.as_deref() == Some("cancelled") }
        })
        .await
    );
    let again = shop
        .http
        .post(format!("{}/api/v1/uploads/{id}/cancel", shop.address))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    shop.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_retried_import_counts_each_row_once(pool: PgPool) {
    let shop = start_shop(pool, false).await;
    let id: Uuid = shop.import(MIXED_CSV).await.parse().unwrap();
    let context = JobContext::new(shop.services.services.clone())
        .await
        .unwrap();
    let run = |attempt: u32| {
        orderly_worker::jobs::upload::handle(
            UploadJob { upload_id: id },
            Data::new(context.clone()),
            Data::new(JobInfo {
                id: Uuid::now_v7().to_string(),
                queue: UploadJob::QUEUE.to_string(),
                kind: "upload.process".into(),
                attempt,
                max_attempts: 3,
                request_id: None,
                control: JobControl::detached(),
            }),
        )
    };

    run(1).await.unwrap();
    let first = shop.get(&format!("/api/v1/uploads/{id}")).await;
    assert_mixed_outcome(&first);

    // An attempt that died half-way (its lease expired): counters and errors of its own, still
    // "processing". The next attempt starts over and ends with the same numbers.
    let stale_run = Uuid::now_v7();
    sqlx::query(
        "update uploads set status = 'processing', run_id = $2, rows_ok = 2, rows_failed = 5, \
         progress = 40, completed_at = null where id = $1",
    )
    .bind(id)
    .bind(stale_run)
    .execute(&shop.services.db)
    .await
    .unwrap();
    sqlx::query("insert into upload_errors (upload_id, line, message) values ($1, 99, 'stale')")
        .bind(id)
        .execute(&shop.services.db)
        .await
        .unwrap();
    run(2).await.unwrap();
    let second = shop.get(&format!("/api/v1/uploads/{id}")).await;
    assert_mixed_outcome(&second);
    assert_eq!(shop.product_count().await, 3);

    // The dead attempt, if it were still running, could not write another batch.
    let late = shop
        .services
        .uploads
        .apply_import_batch(
            id,
            stale_run,
            &ImportBatch {
                errors: vec![orderly::uploads::RowError::row(2, "late")],
                ..ImportBatch::default()
            },
        )
        .await;
    assert!(late.is_err(), "a superseded attempt wrote a batch");
    let UploadReport { upload, errors } = shop
        .services
        .uploads
        .report(id, Default::default())
        .await
        .unwrap();
    assert_eq!((upload.rows_ok, upload.rows_failed), (3, 7));
    assert_eq!(errors.total, 7);

    // A completed upload delivered again is left alone.
    run(3).await.unwrap();
    assert_eq!(shop.get(&format!("/api/v1/uploads/{id}")).await, second);
    shop.stop().await;
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 200])
    }))
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_real_image_gets_a_thumbnail_whatever_it_claims_to_be(pool: PgPool) {
    let shop = start_shop(pool, true).await;
    let product = shop.create_product("MUG-1", 500).await;
    let fields = [
        ("purpose", "product_image"),
        ("product_id", product.as_str()),
    ];

    let png = shop
        .upload(
            &fields,
            "mug.png",
            "image/png",
            encode(gradient(1024, 512), ImageFormat::Png),
        )
        .await;
    // A JPEG sent as a PNG: the bytes decide.
    let jpeg = shop
        .upload(
            &fields,
            "photo.png",
            "image/png",
            encode(gradient(300, 600), ImageFormat::Jpeg),
        )
        .await;

    for (id, format, size, thumbnail) in [
        (&png, "png", (1024, 512), (256, 128)),
        (&jpeg, "jpeg", (300, 600), (128, 256)),
    ] {
        let (upload, _) = shop.finished(id).await;
        assert_eq!(upload["status"], "completed", "{upload}");
        assert_eq!(upload["progress"], 100);
        let result = &upload["result"];
        assert_eq!(result["format"], format);
        assert_eq!(
            (result["width"].as_u64(), result["height"].as_u64()),
            (Some(size.0), Some(size.1))
        );
        assert_eq!(
            (
                result["thumbnail_width"].as_u64(),
                result["thumbnail_height"].as_u64()
            ),
            (Some(thumbnail.0), Some(thumbnail.1))
        );
        let key = result["thumbnail_key"].as_str().unwrap();
        assert_eq!(key, format!("uploads/{id}/thumbnail.png"));
        let stored = shop.services.storage.read_all(key).await.unwrap();
        assert_eq!(image::guess_format(&stored).unwrap(), ImageFormat::Png);
        let decoded = image::load_from_memory(&stored).unwrap();
        assert_eq!(
            (u64::from(decoded.width()), u64::from(decoded.height())),
            thumbnail
        );
    }
    shop.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_fake_image_fails_with_a_clear_error(pool: PgPool) {
    let shop = start_shop(pool, true).await;
    let product = shop.create_product("MUG-1", 500).await;

    let id = shop
        .upload(
            &[("purpose", "product_image"), ("product_id", &product)],
            "mug.png",
            "image/png",
            b"this is plain text pretending to be a picture\n".to_vec(),
        )
        .await;
    let (upload, _) = shop.finished(&id).await;

    assert_eq!(upload["status"], "failed");
    let error = upload["error"].as_str().unwrap();
    assert!(error.contains("not an image"), "{error}");
    assert!(error.contains("image/png"), "{error}");
    assert_eq!(upload["result"], Value::Null);
    assert!(
        shop.services
            .storage
            .read_all(&format!("uploads/{id}/thumbnail.png"))
            .await
            .is_err(),
        "a thumbnail was stored for a fake image"
    );
    shop.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_decompression_bomb_is_refused_before_decoding(pool: PgPool) {
    let shop = start_shop(pool, true).await;
    let product = shop.create_product("MUG-1", 500).await;
    let bomb = png_bomb(100_000, 100_000);
    assert!(bomb.len() < 100, "the bomb is {} bytes", bomb.len());

    let id = shop
        .upload(
            &[("purpose", "product_image"), ("product_id", &product)],
            "bomb.png",
            "image/png",
            bomb,
        )
        .await;
    let (upload, _) = shop.finished(&id).await;

    // 100,000 x 100,000 RGBA would be 40 GB: the header check refused it, no decoder ran.
    assert_eq!(upload["status"], "failed");
    let error = upload["error"].as_str().unwrap();
    assert!(error.contains("image too large: 100000x100000"), "{error}");
    shop.stop().await;
}
