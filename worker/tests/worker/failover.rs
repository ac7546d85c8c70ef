//! The failover drill: the shop on a Redis primary with one replica and three Sentinels
//! (`REDIS_MODE=sentinel`, `REDIS_WAIT_REPLICAS=1`), orders placed continuously over HTTP, two
//! real `orderly-worker` processes sending confirmations to a real SMTP server and order webhooks
//! to a real receiver, and the primary killed with SIGKILL mid-run. The Sentinels promote the
//! replica, the api and the workers follow it, the killed server comes back as a replica (as a
//! supervisor would restart it), and every order placed gets exactly one confirmation email and
//! its webhook, within a bound the test prints.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, routing::post};
use orderly::{
    config::Config,
    queue::testing::SentinelRedis,
    testing::{database_url, unique_prefix},
    users::{Actor, Role},
    webhooks::NewWebhookEndpoint,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::{
    helpers::{ServedApi, WorkerProcess, shop, stop_all, vars},
    smtp::{TestSmtp, unfold},
};

/// Webhook bodies as they arrived, with the time each did.
type Deliveries = Arc<Mutex<Vec<(Instant, String)>>>;

async fn webhook_receiver() -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hooks",
            post(|State(seen): State<Deliveries>, body: Bytes| async move {
                let body = String::from_utf8_lossy(&body).into_owned();
                seen.lock().unwrap().push((Instant::now(), body));
                "ok"
            }),
        )
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

/// One order placed: its id and when the api answered 201.
struct Placed {
    id: String,
    at: Instant,
}

/// Places orders one after another until `stop`, each retried with its own Idempotency-Key
/// until the api accepts it (what a client does with a 503); counts the refused attempts.
async fn customer(
    api: String,
    token: String,
    product_id: String,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
) -> Vec<Placed> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut placed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let key = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        loop {
            let response = client
                .post(format!("{api}/api/v1/orders"))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&serde_json::json!({"items": [{"product_id": product_id, "quantity": 1}]}))
                .send()
                .await;
            match response {
                Ok(response) if response.status() == 201 => {
                    let body: serde_json::Value = response.json().await.unwrap();
                    placed.push(Placed {
                        id: body["id"].as_str().unwrap().to_owned(),
                        at: Instant::now(),
                    });
                    break;
                }
                Ok(response) => {
                    let status = response.status();
                    assert!(
                        status.is_server_error() || status == 409,
                        "an order is refused only for a passing reason: {status} {}",
                        response.text().await.unwrap_or_default()
                    );
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => panic!("the api did not answer: {error}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "an order was refused for a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    placed
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_primary_killed_mid_run_loses_no_email_and_no_webhook(pool: PgPool) {
    let mut group = SentinelRedis::start("orderly");
    let smtp = TestSmtp::start(vec![], None);
    let (hook_url, deliveries) = webhook_receiver().await;
    let prefix = unique_prefix("failover");
    let settings = [
        ("DATABASE_URL", database_url(&pool)),
        ("REDIS_MODE", "sentinel".to_owned()),
        ("REDIS_URL", group.sentinel_urls().join(",")),
        ("REDIS_SENTINEL_MASTER", group.master.clone()),
        ("REDIS_WAIT_REPLICAS", "1".to_owned()),
        ("REDIS_WAIT_TIMEOUT_MS", "500".to_owned()),
        ("SMTP_URL", smtp.url.clone()),
        ("EMAIL_RETRY_BASE_MS", "100".to_owned()),
        ("MAIL_FROM", "Orderly <orders@shop.example>".to_owned()),
        ("WEBHOOK_ALLOWLIST", "127.0.0.0/8".to_owned()),
        ("WEBHOOK_RETRY_SCHEDULE", "1,1,1,1,1,1,1,1".to_owned()),
        ("RATE_LIMIT_PER_MINUTE", "1000000".to_owned()),
        ("RATE_LIMIT_BURST", "100000".to_owned()),
    ];
    let config = Config::from_map(&vars(&prefix, &settings)).expect("valid config");
    let _ = orderly::telemetry::init(&config.log, &config.traces, "orderly-api");
    let services = orderly::Services::build_with_pool(config, pool.clone()).expect("services");
    let fixture = shop(&services, 100_000).await;
    services
        .webhooks
        .create(
            &Actor {
                user_id: fixture.customer.id,
                role: Role::Admin,
            },
            NewWebhookEndpoint::parse(&hook_url, &["order.placed".to_owned()]).unwrap(),
        )
        .await
        .expect("endpoint registered");
    let token = services
        .users
        .login(&fixture.customer.email, "buyer-password".into())
        .await
        .expect("login")
        .access
        .token;

    // The api, in this process, behind the Sentinels like the workers.
    let served = ServedApi::start(&services).await;
    let api = served.url.clone();
    let mut workers = [
        WorkerProcess::start(&prefix, &[], &settings),
        WorkerProcess::start(&prefix, &[], &settings),
    ];
    for worker in &mut workers {
        worker.wait_ready().await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let customers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(customer(
                api.clone(),
                token.clone(),
                fixture.product.id.to_string(),
                stop.clone(),
                refused.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let old_primary = group.primary_port().expect("a primary");
    let killed_at = Instant::now();
    let killed = group.kill_primary();
    let probe = group.probe();
    let new_primary = tokio::task::spawn_blocking(move || {
        probe.wait_for_new_primary(old_primary, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .expect("the Sentinels promote the replica");
    let promoted_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A supervisor restarts the killed server; the Sentinels make it a replica of the new
    // primary, so pushes are confirmed by a replica again.
    group.servers[killed].restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut placed = Vec::new();
    for customer in customers {
        placed.extend(customer.await.unwrap());
    }
    let before_kill = placed.iter().filter(|p| p.at < killed_at).count();
    assert!(before_kill > 0, "orders were placed before the kill");
    assert!(
        placed.iter().any(|p| p.at > killed_at + promoted_after),
        "orders were placed after the promotion"
    );

    // Every order: exactly one confirmation, and its webhook.
    let expected: HashMap<&str, Instant> = placed.iter().map(|p| (p.id.as_str(), p.at)).collect();
    assert_eq!(expected.len(), placed.len(), "every order id is new");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (emails, hooks) = loop {
        let emails: Vec<(Instant, String)> = smtp
            .arrivals()
            .into_iter()
            .zip(smtp.received())
            .map(|(at, message)| (at, unfold(&message.data)))
            .filter(|(_, data)| data.contains("Subject: Your order "))
            .collect();
        let hooks = deliveries.lock().unwrap().clone();
        let confirmed = expected
            .keys()
            .filter(|id| emails.iter().any(|(_, data)| data.contains(*id)))
            .count();
        let hooked = expected
            .keys()
            .filter(|id| hooks.iter().any(|(_, body)| body.contains(*id)))
            .count();
        if (confirmed == expected.len() && hooked == expected.len()) || Instant::now() > deadline {
            break (emails, hooks);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut email_latency = Duration::ZERO;
    let mut webhook_latency = Duration::ZERO;
    let mut duplicate_webhooks = 0;
    for (id, placed_at) in &expected {
        let mails: Vec<Instant> = emails
            .iter()
            .filter(|(_, data)| data.contains(id))
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(mails.len(), 1, "order {id}: {} confirmations", mails.len());
        email_latency = email_latency.max(mails[0].saturating_duration_since(*placed_at));
        let calls: Vec<Instant> = hooks
            .iter()
            .filter(|(_, body)| body.contains(id))
            .map(|(at, _)| *at)
            .collect();
        assert!(!calls.is_empty(), "order {id}: no webhook delivered");
        duplicate_webhooks += calls.len() - 1;
        let first = calls.iter().min().unwrap();
        webhook_latency = webhook_latency.max(first.saturating_duration_since(*placed_at));
    }
    assert_eq!(
        emails.len(),
        expected.len(),
        "no confirmation for an order that was not placed"
    );
    let stock: i32 = sqlx::query_scalar("select stock from products where id = $1")
        .bind(fixture.product.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stock as usize,
        100_000 - placed.len(),
        "one unit per order placed"
    );
    // Delivery never waited longer than the failover, a replica-ack timeout and the relay's
    // grace and interval, with room for a loaded machine.
    let bound = Duration::from_secs(30);
    assert!(
        email_latency < bound && webhook_latency < bound,
        "a delivery took {email_latency:?} (email) / {webhook_latency:?} (webhook)"
    );
    eprintln!(
        "failover drill: {} orders ({before_kill} before the kill), {} refused attempts; \
         primary {old_primary} killed, {new_primary} promoted after {promoted_after:?}; \
         longest order-to-email {email_latency:?}, order-to-webhook {webhook_latency:?}; \
         {duplicate_webhooks} repeated webhook deliveries",
        placed.len(),
        refused.load(Ordering::Relaxed),
    );

    stop_all(&mut workers).await;
    let _ = served.stop().await;
}
