//! PostgreSQL restarted under load, on a server of the test's own: while it is down the api
//! answers 503 in the one error shape within the request timeout and `/health` names
//! PostgreSQL; once it is back everything recovers by itself; a client retrying each failed
//! order with its Idempotency-Key ends with exactly one order per key; and every committed
//! order gets its confirmation email.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use orderly::testing::PrivatePostgres;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::helpers::{eventually, new_key, order_body, spawn_app_with};

/// What happened to one idempotency key's first attempt.
#[derive(Debug)]
struct Attempt {
    key: String,
    status: StatusCode,
    body: Value,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_and_duplicates_no_order() {
    let postgres = PrivatePostgres::start();
    let url = postgres.url("postgres");
    let timeout_ms = "3000";
    let overrides = [
        ("DATABASE_URL", url.as_str()),
        ("HTTP_REQUEST_TIMEOUT_MS", timeout_ms),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000"),
        ("DATABASE_MAX_CONNECTIONS", "10"),
    ];
    let config =
        orderly::config::Config::from_map(&crate::helpers::test_vars("unused", &overrides))
            .unwrap();
    let pool = orderly::db::pool(&config.database).unwrap();
    orderly::db::migrate(&pool).await.expect("migrations");
    let app = spawn_app_with(pool, &overrides).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 500, 100_000).await;
    let product_id = product["id"].as_str().unwrap().to_owned();

    // Six clients place orders back to back, each with a fresh key, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (app_url, token, product_id) = (
            app.url("/api/v1/orders"),
            customer.token.clone(),
            product_id.clone(),
        );
        let (stop, attempts) = (stop.clone(), attempts.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let key = new_key();
                let started = Instant::now();
                let response = client
                    .post(&app_url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&order_body(&product_id, 1))
                    .send()
                    .await
                    .expect("the api answers");
                let status = response.status();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                attempts.lock().await.push(Attempt {
                    key,
                    status,
                    body,
                    took: started.elapsed(),
                });
                if status != StatusCode::CREATED {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.stop_immediately();
    // While it is down: health names PostgreSQL, orders get 503s.
    let health = eventually(
        "health says PostgreSQL is down",
        Duration::from_secs(10),
        || async {
            let response = app.get("/health", None).await;
            (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        },
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(health["checks"]["postgres"]["status"], "down", "{health}");
    assert_eq!(health["checks"]["redis"]["status"], "up", "{health}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.restart();
    let back = Instant::now();
    eventually("orders succeed again", Duration::from_secs(30), || async {
        let attempts = attempts.lock().await;
        attempts
            .iter()
            .rev()
            .take(6)
            .all(|a| a.status == StatusCode::CREATED)
            .then_some(())
    })
    .await;
    let recovered_in = back.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let attempts = std::mem::take(&mut *attempts.lock().await);
    let failed: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status != StatusCode::CREATED)
        .collect();
    assert!(!failed.is_empty(), "the restart was felt by some requests");
    let limit = Duration::from_millis(timeout_ms.parse().unwrap()) + Duration::from_secs(2);
    for attempt in &failed {
        assert_eq!(
            attempt.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a database outage is a 503, never a 500: {attempt:?}"
        );
        assert_eq!(
            attempt.body["statusCode"], 503,
            "the one error shape: {attempt:?}"
        );
        assert!(attempt.body["message"].is_string(), "{attempt:?}");
        assert!(
            attempt.took < limit,
            "answered within the request timeout: {attempt:?}"
        );
    }
    eprintln!(
        "{} orders placed, {} refused during the outage, recovered {recovered_in:?} after the restart",
        attempts.len() - failed.len(),
        failed.len()
    );

    // The client retries every refused order with its key: each ends with one order. A key whose
    // first attempt was cut mid-way is free again: its claim went with that transaction.
    let mut orders_by_key: HashMap<String, String> = attempts
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .map(|a| (a.key.clone(), a.body["id"].as_str().unwrap().to_owned()))
        .collect();
    for attempt in &failed {
        let id = eventually(
            "the retried order is placed",
            Duration::from_secs(90),
            || async {
                let response = app
                    .place_order(&customer.token, &attempt.key, &order_body(&product_id, 1))
                    .await;
                match response.status() {
                    StatusCode::CREATED => {
                        let body: Value = response.json().await.unwrap();
                        Some(body["id"].as_str().unwrap().to_owned())
                    }
                    StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => None,
                    other => panic!("a retry got {other}"),
                }
            },
        )
        .await;
        orders_by_key.insert(attempt.key.clone(), id);
    }
    let placed = orders_by_key.len() as i64;
    assert_eq!(
        app.order_count().await,
        placed,
        "exactly one order per key: none lost, none twice"
    );
    assert_eq!(
        app.stock_of(&product_id).await as i64,
        100_000 - placed,
        "stock matches the orders"
    );

    // Every committed order gets its confirmation, including those committed around the crash.
    let worker = app.start_worker(&["emails"]).await;
    eventually(
        "a confirmation for every order",
        Duration::from_secs(90),
        || async {
            let sent: i64 = sqlx::query_scalar(
                "select count(*) from sent_emails where kind = 'email.order_confirmation'",
            )
            .fetch_one(&app.services.db)
            .await
            .ok()?;
            (sent == placed).then_some(())
        },
    )
    .await;
    let twice: i64 = sqlx::query_scalar(
        "select count(*) from (select recipient, subject from sent_emails \
         group by 1, 2 having count(*) > 1) as repeated",
    )
    .fetch_one(&app.services.db)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no order confirmed twice");
    worker.stop().await;
}
