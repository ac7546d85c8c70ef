//! Orders placed continuously over HTTP while a drill breaks something underneath (a Redis
//! failover, a Redis Cluster resharding): the shop set up for it ([`OrderDrill`]: an SMTP sink,
//! a webhook receiver, the api served in this process, two real worker processes, three
//! customers), and the check every such drill ends with: each order got exactly one
//! confirmation email and at least one webhook.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, routing::post};
use orderly::{Services, config::Config, testing::database_url};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    helpers::{ServedApi, ShopFixture, WorkerProcess, shop, stop_all, vars},
    smtp::{TestSmtp, unfold},
};

/// The shop under a drill: orders flow from [`OrderDrill::start`] until
/// [`OrderDrill::stop_ordering`].
pub struct OrderDrill {
    pub services: Services,
    pub fixture: ShopFixture,
    pub smtp: TestSmtp,
    pub deliveries: Deliveries,
    served: ServedApi,
    workers: [WorkerProcess; 2],
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    customers: Vec<JoinHandle<Vec<Placed>>>,
}

impl OrderDrill {
    /// Sets the shop up on `pool` under key prefix `prefix`, with `redis` settings (the Redis
    /// layout under test) added to the drill's own (fast email retries, webhooks to a local
    /// receiver, no rate limit in the way): 100,000 units of one product, an endpoint for
    /// `order.placed`, the api in this process, two worker processes, and three customers
    /// ordering one unit at a time.
    pub async fn start(pool: &PgPool, prefix: &str, redis: &[(&'static str, String)]) -> Self {
        let smtp = TestSmtp::start(vec![], None);
        let (hook_url, deliveries) = webhook_receiver().await;
        let mut settings = vec![
            ("DATABASE_URL", database_url(pool)),
            ("SMTP_URL", smtp.url.clone()),
            ("EMAIL_RETRY_BASE_MS", "100".to_owned()),
            ("MAIL_FROM", "Orderly <orders@shop.example>".to_owned()),
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8".to_owned()),
            ("WEBHOOK_RETRY_SCHEDULE", "1,1,1,1,1,1,1,1".to_owned()),
            ("RATE_LIMIT_PER_MINUTE", "1000000".to_owned()),
            ("RATE_LIMIT_BURST", "100000".to_owned()),
        ];
        settings.extend_from_slice(redis);
        let config = Config::from_map(&vars(prefix, &settings)).expect("valid config");
        let _ = orderly::telemetry::init(&config.log, &config.traces, "orderly-api");
        let services = Services::build_with_pool(config, pool.clone()).expect("services");
        let fixture = shop(&services, 100_000).await;
        let token = fixture.hook_orders_and_sign_in(&services, &hook_url).await;

        let served = ServedApi::start(&services).await;
        let mut workers = [
            WorkerProcess::start(prefix, &[], &settings),
            WorkerProcess::start(prefix, &[], &settings),
        ];
        for worker in &mut workers {
            worker.wait_ready().await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let customers = (0..3)
            .map(|_| {
                tokio::spawn(customer(
                    served.url.clone(),
                    token.clone(),
                    fixture.product.id.to_string(),
                    stop.clone(),
                    refused.clone(),
                ))
            })
            .collect();
        Self {
            services,
            fixture,
            smtp,
            deliveries,
            served,
            workers,
            stop,
            refused,
            customers,
        }
    }

    /// The api's base URL.
    pub fn api(&self) -> &str {
        &self.served.url
    }

    /// Stops the customers; returns every order they placed.
    pub async fn stop_ordering(&mut self) -> Vec<Placed> {
        self.stop.store(true, Ordering::Relaxed);
        let mut placed = Vec::new();
        for customer in self.customers.drain(..) {
            placed.extend(customer.await.unwrap());
        }
        placed
    }

    /// Order attempts the api refused (each retried until accepted).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// Waits until every order in `placed` has its email and webhook (see
    /// [`every_order_delivered`]) and checks the stock went down one unit per order.
    pub async fn every_order_delivered(
        &self,
        placed: &[Placed],
        limit: Duration,
    ) -> DeliveryReport {
        let report = every_order_delivered(&self.smtp, &self.deliveries, placed, limit).await;
        let stock: i32 = sqlx::query_scalar("select stock from products where id = $1")
            .bind(self.fixture.product.id)
            .fetch_one(&self.services.db)
            .await
            .unwrap();
        assert_eq!(
            stock as usize,
            100_000 - placed.len(),
            "one unit per order placed"
        );
        report
    }

    /// Stops the workers and the api.
    pub async fn finish(mut self) {
        stop_all(&mut self.workers).await;
        let _ = self.served.stop().await;
    }
}

/// Webhook bodies as they arrived, with the time each did.
pub type Deliveries = Arc<Mutex<Vec<(Instant, String)>>>;

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
pub struct Placed {
    pub id: String,
    pub at: Instant,
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

/// The longest waits a drill saw from an order's 201 to its deliveries.
pub struct DeliveryReport {
    pub email_latency: Duration,
    pub webhook_latency: Duration,
    /// Webhook deliveries beyond the first per order (at least once allows them).
    pub duplicate_webhooks: usize,
}

impl std::fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "longest order-to-email {:?}, order-to-webhook {:?}; {} repeated webhook deliveries",
            self.email_latency, self.webhook_latency, self.duplicate_webhooks
        )
    }
}

/// Waits up to `limit` until every order in `placed` has its confirmation email on `smtp` and
/// its webhook among `deliveries`, then asserts exactly one email per order, no email for an
/// order that was not placed, and at least one webhook each.
pub async fn every_order_delivered(
    smtp: &TestSmtp,
    deliveries: &Deliveries,
    placed: &[Placed],
    limit: Duration,
) -> DeliveryReport {
    let expected: HashMap<&str, Instant> = placed.iter().map(|p| (p.id.as_str(), p.at)).collect();
    assert_eq!(expected.len(), placed.len(), "every order id is new");
    let deadline = Instant::now() + limit;
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
    DeliveryReport {
        email_latency,
        webhook_latency,
        duplicate_webhooks,
    }
}
