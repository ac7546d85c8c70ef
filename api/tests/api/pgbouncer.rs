//! The shop through a real PgBouncer in transaction mode, with two server connections for many
//! clients, so every transaction may land on another server connection than the one before:
//! concurrent orders, an idempotent replay, the outbox relay and a report build all work, with
//! no setting of the shop's changed. sqlx names its prepared statements, so PgBouncer needs
//! `max_prepared_statements` (1.21 or later) to carry them across server connections; nothing
//! of the shop holds session state (the relay polls, it does not LISTEN).

use std::{collections::HashSet, time::Duration};

use orderly::{
    config::Config,
    queue::{JobSpec, UnitOfWork, outbox},
    testing::{PgBouncer, database_url},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{eventually, new_key, order_body, spawn_app_with, test_vars, unique_prefix};

/// Server connections PgBouncer keeps per database: fewer than the api's pool and the clients.
const SERVER_CONNECTIONS: u32 = 2;

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_shop_runs_through_pgbouncer_in_transaction_mode(direct: PgPool) {
    let server_url = database_url(&direct);
    let server_port = url::Url::parse(&server_url).unwrap().port().unwrap_or(5432);
    let bouncer = PgBouncer::start(server_port, SERVER_CONNECTIONS, 200);
    let bounced_url = bouncer.url_for(&server_url);
    // The pool the shop builds from its own settings, pointed at PgBouncer.
    let prefix = unique_prefix();
    let config = Config::from_map(&test_vars(
        &prefix,
        &[("DATABASE_URL", bounced_url.as_str())],
    ))
    .unwrap();
    let bounced = orderly::db::pool(&config.database).unwrap();

    // Eight client connections at once are served by at most two server backends: the
    // transactions really hop.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(bounced.acquire().await.unwrap());
    }
    let mut backends = HashSet::new();
    for connection in &mut held {
        let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        backends.insert(pid);
    }
    drop(held);
    assert!(
        backends.len() <= SERVER_CONNECTIONS as usize,
        "8 clients on {} backends",
        backends.len()
    );

    let app = spawn_app_with(
        bounced.clone(),
        &[
            ("REDIS_PREFIX", prefix.as_str()),
            ("DATABASE_URL", bounced_url.as_str()),
        ],
    )
    .await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 1250, 10_000).await;
    let product_id = product["id"].as_str().unwrap().to_owned();

    // Concurrent orders: each statement is prepared under a name on whichever server
    // connection its transaction got.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (address, token, product_id) = (
            app.address.clone(),
            customer.token.clone(),
            product_id.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            for _ in 0..15 {
                let response = http
                    .post(format!("{address}/api/v1/orders"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", new_key())
                    .json(&order_body(&product_id, 1))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                statuses.push((status, response.text().await.unwrap()));
            }
            statuses
        }));
    }
    for client in clients {
        for (status, body) in client.await.unwrap() {
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{body}\n--- pgbouncer log ---\n{}",
                bouncer.log()
            );
        }
    }
    assert_eq!(app.order_count().await, 120);
    assert_eq!(app.stock_of(&product_id).await, 10_000 - 120);

    // An idempotent retry replays the first answer byte for byte.
    let key = new_key();
    let placed = app
        .place_order(&customer.token, &key, &order_body(&product_id, 2))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let first = placed.bytes().await.unwrap();
    let replayed = app
        .place_order(&customer.token, &key, &order_body(&product_id, 2))
        .await;
    assert_eq!(
        replayed.headers().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(replayed.bytes().await.unwrap(), first);
    assert_eq!(app.order_count().await, 121);

    // A row the api committed but never pushed (a crash between commit and push) is pushed
    // by the relay, whose `for update skip locked` transaction also goes through PgBouncer.
    let mut uow = UnitOfWork::begin(&bounced).await.unwrap();
    let stranded = outbox::stage(
        &mut uow,
        JobSpec::new("emails", "email.welcome", json!({"user_id": customer.id})),
    )
    .await
    .unwrap();
    uow.commit().await.unwrap();
    sqlx::query("update outbox set created_at = now() - interval '1 minute' where id = $1")
        .bind(stranded)
        .execute(&direct)
        .await
        .unwrap();

    // A report, built by the worker through PgBouncer.
    let today = chrono::Utc::now().date_naive().to_string();
    let requested = app
        .post_json(
            "/api/v1/reports",
            Some(&customer.token),
            &json!({"kind": "my_orders", "from": today, "to": today}),
        )
        .await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    let report_id = requested.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let worker = app.start_worker(&["emails", "reports", "webhooks"]).await;
    eventually(
        "a confirmation for each of the 121 orders",
        Duration::from_secs(90),
        || async {
            let sent: i64 = sqlx::query_scalar(
                "select count(*) from sent_emails where kind = 'email.order_confirmation'",
            )
            .fetch_one(&direct)
            .await
            .unwrap();
            (sent == 121).then_some(())
        },
    )
    .await;
    eventually(
        "the relay pushed the stranded row and its email went out",
        Duration::from_secs(60),
        || async {
            // A pushed row is deleted.
            let left: i64 = sqlx::query_scalar("select count(*) from outbox where id = $1")
                .bind(stranded)
                .fetch_one(&direct)
                .await
                .unwrap();
            let welcomed: i64 = sqlx::query_scalar(
                "select count(*) from sent_emails where kind = 'email.welcome' and recipient = $1",
            )
            .bind(&customer.email)
            .fetch_one(&direct)
            .await
            .unwrap();
            (left == 0 && welcomed >= 1).then_some(())
        },
    )
    .await;
    let report = eventually("the report is built", Duration::from_secs(60), || async {
        let report: Value = app
            .get(
                &format!("/api/v1/reports/{report_id}"),
                Some(&customer.token),
            )
            .await
            .json()
            .await
            .unwrap();
        (report["status"] == "ready").then_some(report)
    })
    .await;
    assert_eq!(report["row_count"], 121, "{report}");
    worker.stop().await;

    let health = app.get("/health", None).await;
    assert_eq!(health.status(), StatusCode::OK);
}
