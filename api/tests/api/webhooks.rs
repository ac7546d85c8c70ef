//! Webhooks end to end: the admin routes, deliveries staged by real orders, and a worker running
//! in-process that sends them to real HTTP servers on loopback ports of this test. Signatures
//! are verified with the `standardwebhooks` crate, an implementation independent of ours.
//!
//! Waiting is done by bounded polling (never by sleeping a fixed time and hoping).

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode as AxumStatus},
    response::{IntoResponse, Response as AxumResponse},
};
use chrono::{DateTime, NaiveDate, Utc};
use orderly::{
    reports::ReportRequest,
    users::{Actor, Role},
};
use orderly_worker::runner::{self, WorkerOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app, spawn_app_with};

// ---------------------------------------------------------------------------------------------
// Test fixtures: a scripted receiver, a tripwire listener, an in-process worker.
// ---------------------------------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Reply {
    /// This status, no body.
    Status(u16),
    /// This status with these headers.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Answer 200, but only after this long (to trip the sender's timeout).
    Slow(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<VecDeque<Reply>>,
    /// The answer once the script is used up.
    otherwise: Mutex<Reply>,
    /// Requests being answered right now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers from a script
/// (200 once the script is used up).
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    server: JoinHandle<()>,
}

impl Receiver {
    async fn start(script: Vec<Reply>) -> Self {
        Self::start_answering(script, Reply::Status(200)).await
    }

    /// A receiver answering `otherwise` once `script` is used up.
    async fn start_answering(script: Vec<Reply>, otherwise: Reply) -> Self {
        let state = Arc::new(ReceiverState {
            hits: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
            otherwise: Mutex::new(otherwise),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("hits").clone()
    }

    fn answer_from_now_on(&self, reply: Reply) {
        *self.state.otherwise.lock().expect("otherwise") = reply;
    }

    fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    async fn wait_for_hits(&self, count: usize) -> Vec<Hit> {
        eventually(&format!("{count} requests at the receiver"), || async {
            let hits = self.hits();
            (hits.len() >= count).then_some(hits)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumResponse {
    state.hits.lock().expect("hits").push(Hit {
        headers,
        body,
        at: Instant::now(),
    });
    let reply = state
        .script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or_else(|| state.otherwise.lock().expect("otherwise").clone());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = answer(reply).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(reply: Reply) -> AxumResponse {
    match reply {
        Reply::Status(code) => AxumStatus::from_u16(code).expect("status").into_response(),
        Reply::WithHeaders(code, headers) => {
            let mut response = AxumStatus::from_u16(code).expect("status").into_response();
            for (name, value) in headers {
                response.headers_mut().insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&value).expect("header value"),
                );
            }
            response
        }
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            AxumStatus::OK.into_response()
        }
    }
}

/// A listener that only counts connections, to prove that none was made.
struct Tripwire {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Tripwire {
    async fn start(bind: &str) -> Self {
        let listener = TcpListener::bind(bind).await.expect("bind tripwire");
        let port = listener.local_addr().expect("tripwire address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The worker process, in-process, serving the `webhooks` queue of the app's Redis prefix.
struct Worker {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Worker {
    async fn start(app: &TestApp) -> Self {
        Self::start_with(app, 4).await
    }

    /// A worker running up to `concurrency` deliveries at once.
    async fn start_with(app: &TestApp, concurrency: usize) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = WorkerOptions {
            queues: vec!["webhooks".into()],
            concurrency,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            // The api pushes staged jobs right after commit; no relay needed.
            relay: false,
            schedules: false,
            ..WorkerOptions::default()
        };
        let services = app.services.clone();
        let task = tokio::spawn(runner::run(services, options, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "worker did not stop cleanly: {result:?}"
            );
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// [`crate::helpers::eventually`] with this file's generous bound (the machine may be busy).
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::helpers::eventually(what, Duration::from_secs(60), check).await
}

// ---------------------------------------------------------------------------------------------
// Typed helpers over the api.
// ---------------------------------------------------------------------------------------------

async fn create_webhook(app: &TestApp, admin: &TestUser, url: &str, events: &[&str]) -> Value {
    let response = app
        .post_json(
            "/api/v1/webhooks",
            Some(&admin.token),
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "creating a webhook for {url}"
    );
    response.json().await.expect("json")
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

async fn deliveries(app: &TestApp, admin: &TestUser, endpoint_id: &str) -> Vec<Value> {
    let response = app
        .get(
            &format!("/api/v1/webhooks/{endpoint_id}/deliveries?limit=100"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("json");
    page["items"].as_array().expect("items").clone()
}

/// Waits until the endpoint's newest delivery satisfies `done`, and returns it.
async fn wait_for_delivery(
    app: &TestApp,
    admin: &TestUser,
    endpoint_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        &format!("a settled delivery for endpoint {endpoint_id}"),
        || async {
            deliveries(app, admin, endpoint_id)
                .await
                .into_iter()
                .next()
                .filter(|d| done(d))
        },
    )
    .await
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == status
}

/// An order of two units of a fresh product, placed over HTTP by a fresh customer.
async fn place_order(app: &TestApp, admin: &TestUser) -> (TestUser, Value) {
    let product = app.create_product(admin, 1250, 10).await;
    let customer = app.customer().await;
    let response = app
        .place_order(
            &customer.token,
            &Uuid::new_v4().to_string(),
            &json!({"items": [{"product_id": product["id"], "quantity": 2}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    (customer, response.json().await.expect("json"))
}

/// Verifies a received request the way a receiver would, with the `standardwebhooks` crate.
fn verify_signature(secret: &str, hit: &Hit) {
    let verifier = standardwebhooks::Webhook::new(secret).expect("whsec_ secret");
    verifier
        .verify(&hit.body, &hit.headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e}; headers {:?}", hit.headers));
}

fn header<'a>(hit: &'a Hit, name: &str) -> &'a str {
    hit.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn body_json(hit: &Hit) -> Value {
    serde_json::from_slice(&hit.body).expect("delivery body is JSON")
}

const LOCAL: &[(&str, &str)] = &[("WEBHOOK_ALLOWLIST", "127.0.0.0/8")];

// ---------------------------------------------------------------------------------------------
// The admin routes.
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn create_returns_the_secret_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let created = create_webhook(
        &app,
        &admin,
        "https://erp.example.com/hooks",
        &["order.placed", "report.ready"],
    )
    .await;
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(
        standardwebhooks::Webhook::new(secret).is_ok(),
        "the secret is a valid Standard Webhooks key"
    );
    assert_eq!(created["url"], "https://erp.example.com/hooks");
    assert_eq!(created["events"], json!(["order.placed", "report.ready"]));
    assert_eq!(created["enabled"], true);

    let listed: Value = app
        .get("/api/v1/webhooks", Some(&admin.token))
        .await
        .json()
        .await
        .expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], created["id"]);
    assert!(
        items[0].get("secret").is_none(),
        "the list must not show the secret: {}",
        items[0]
    );
    assert!(!listed.to_string().contains(secret));

    let one = app
        .get(
            &format!("/api/v1/webhooks/{}", id_of(&created)),
            Some(&admin.token),
        )
        .await;
    assert_eq!(one.status(), StatusCode::OK);
    let one: Value = one.json().await.expect("json");
    assert!(one.get("secret").is_none());
    assert!(deliveries(&app, &admin, &id_of(&created)).await.is_empty());

    let openapi: Value = app
        .get("/api-docs/openapi.json", None)
        .await
        .json()
        .await
        .expect("json");
    for path in [
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}",
        "/api/v1/webhooks/{id}/deliveries",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn customers_and_anonymous_callers_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let created = create_webhook(
        &app,
        &admin,
        "https://erp.example.com/hooks",
        &["order.placed"],
    )
    .await;
    let id = id_of(&created);
    let body = json!({"url": "https://evil.example.com/", "events": ["order.placed"]});

    assert_error(
        app.post_json("/api/v1/webhooks", Some(&customer.token), &body)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get("/api/v1/webhooks", Some(&customer.token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get(&format!("/api/v1/webhooks/{id}"), Some(&customer.token))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get(
            &format!("/api/v1/webhooks/{id}/deliveries"),
            Some(&customer.token),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let delete = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&customer.token)
        .send()
        .await
        .expect("request");
    assert_error(delete, StatusCode::FORBIDDEN).await;
    assert_error(
        app.post_json("/api/v1/webhooks", None, &body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_error(
        app.get("/api/v1/webhooks", None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Nothing was created by the refused calls.
    let listed: Value = app
        .get("/api/v1/webhooks", Some(&admin.token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn invalid_urls_and_events_are_422(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cases = [
        (
            json!({"url": "ftp://example.com/in", "events": ["order.placed"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["order.placed"]}),
            "url",
        ),
        (
            json!({"url": "/relative/path", "events": ["order.placed"]}),
            "url",
        ),
        (
            json!({"url": "https://user:pw@example.com/", "events": ["order.placed"]}),
            "url",
        ),
        (json!({"url": "", "events": ["order.placed"]}), "url"),
        (
            json!({"url": "https://example.com/", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/", "events": ["order.shipped"]}),
            "events[0]",
        ),
        (
            json!({"url": "https://example.com/", "events": ["order.placed", "user.registered"]}),
            "events[1]",
        ),
    ];
    for (body, field) in cases {
        let error = assert_error(
            app.post_json("/api/v1/webhooks", Some(&admin.token), &body)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error["details"][0]["field"], field, "for {body}: {error}");
    }
    // A missing field or an unknown one is a malformed body, in the same error shape.
    assert_error(
        app.post_json(
            "/api/v1/webhooks",
            Some(&admin.token),
            &json!({"url": "https://example.com/"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let listed: Value = app
        .get("/api/v1/webhooks", Some(&admin.token))
        .await
        .json()
        .await
        .expect("json");
    assert!(listed["items"].as_array().expect("items").is_empty());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn delete_removes_the_endpoint_and_its_deliveries(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let created = create_webhook(
        &app,
        &admin,
        "https://erp.example.com/hooks",
        &["order.placed"],
    )
    .await;
    let id = id_of(&created);
    place_order(&app, &admin).await;
    assert_eq!(deliveries(&app, &admin, &id).await.len(), 1);

    let delete = |token: String| {
        let request = app
            .client
            .delete(app.url(&format!("/api/v1/webhooks/{id}")))
            .bearer_auth(token);
        async move { request.send().await.expect("request") }
    };
    assert_eq!(
        delete(admin.token.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(delete(admin.token.clone()).await, StatusCode::NOT_FOUND).await;
    assert_error(
        app.get(&format!("/api/v1/webhooks/{id}"), Some(&admin.token))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.get(
            &format!("/api/v1/webhooks/{id}/deliveries"),
            Some(&admin.token),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The next order finds no endpoint to deliver to.
    place_order(&app, &admin).await;
    let left: i64 = sqlx::query_scalar("select count(*) from webhook_deliveries")
        .fetch_one(&app.services.db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn each_event_becomes_one_delivery_per_subscribed_endpoint(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let orders_only =
        id_of(&create_webhook(&app, &admin, "https://a.example.com/", &["order.placed"]).await);
    let reports_only =
        id_of(&create_webhook(&app, &admin, "https://b.example.com/", &["report.ready"]).await);
    let everything = id_of(
        &create_webhook(
            &app,
            &admin,
            "https://c.example.com/",
            &[
                "order.placed",
                "order.cancelled",
                "order.status_changed",
                "report.ready",
            ],
        )
        .await,
    );

    let (customer, order) = place_order(&app, &admin).await;
    let cancel = app
        .post_json(
            &format!("/api/v1/orders/{}/cancel", id_of(&order)),
            Some(&customer.token),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);

    let actor = Actor {
        user_id: customer.id,
        role: Role::Customer,
    };
    let day = NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
    let report = app
        .services
        .reports
        .request(
            &actor,
            ReportRequest::parse("my_orders", "csv", day, day, None).expect("request"),
        )
        .await
        .expect("report requested");
    app.services
        .reports
        .mark_ready(report.id, 3, 120, "reports/test.csv")
        .await
        .expect("report ready");

    let types = |list: Vec<Value>| -> Vec<String> {
        let mut types: Vec<String> = list
            .iter()
            .map(|d| d["event_type"].as_str().expect("type").to_owned())
            .collect();
        types.sort();
        types
    };
    assert_eq!(
        types(deliveries(&app, &admin, &orders_only).await),
        ["order.placed"]
    );
    assert_eq!(
        types(deliveries(&app, &admin, &reports_only).await),
        ["report.ready"]
    );
    let all = deliveries(&app, &admin, &everything).await;
    assert_eq!(
        types(all.clone()),
        ["order.cancelled", "order.placed", "report.ready"]
    );

    // Their ids are made by PostgreSQL in the fan-out statement: UUIDv7 carrying the creation
    // time, like every id the application makes.
    for delivery in &all {
        let id: uuid::Uuid = delivery["id"].as_str().expect("id").parse().expect("uuid");
        assert_eq!(id.get_version_num(), 7, "{id}");
        let (seconds, _) = id.get_timestamp().expect("timestamp").to_unix();
        let age = chrono::Utc::now().timestamp() - seconds as i64;
        assert!((0..60).contains(&age), "{id} is {age} s old");
    }
    for delivery in &all {
        assert_eq!(delivery["status"], "pending");
        assert_eq!(delivery["attempts"], 0);
        assert_eq!(delivery["payload"]["type"], delivery["event_type"]);
        assert!(
            delivery["payload"]["timestamp"]
                .as_str()
                .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
        );
    }
    let by_type = |kind: &str| {
        all.iter()
            .find(|d| d["event_type"] == kind)
            .expect("delivery")
            .clone()
    };
    let cancelled = &by_type("order.cancelled")["payload"]["data"];
    assert_eq!(cancelled["id"], order["id"]);
    assert_eq!(cancelled["status"], "cancelled");
    let ready = &by_type("report.ready")["payload"]["data"];
    assert_eq!(ready["id"], report.id.to_string());
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["row_count"], 3);
}

/// An event's deliveries reach the queue through one fan-out job, staged by the order's own
/// statement only when it wrote deliveries, and carrying them. Right after the commit the api
/// pushes one job per delivery in its place, under the delivery's id; if the relay pushes the
/// fan-out itself instead (the api died first), its handler queues the same jobs, so nothing is
/// queued twice however often either runs.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_events_deliveries_are_queued_once_by_its_fan_out(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    place_order(&app, &admin).await;
    assert_eq!(
        app.outbox_count("webhook.fan_out").await,
        0,
        "no endpoint, no fan-out"
    );

    let first =
        id_of(&create_webhook(&app, &admin, "https://a.example.com/", &["order.placed"]).await);
    let second =
        id_of(&create_webhook(&app, &admin, "https://b.example.com/", &["order.placed"]).await);
    place_order(&app, &admin).await;
    let staged: Vec<(Uuid, Value)> =
        sqlx::query_as("select id, spec from outbox_written where kind = 'webhook.fan_out'")
            .fetch_all(&pool)
            .await
            .expect("fan-out rows");
    assert_eq!(staged.len(), 1, "{staged:?}");
    let (fan_out_id, spec) = &staged[0];
    let fan_out_job: orderly::jobs::WebhookFanOutJob =
        serde_json::from_value(spec["payload"].clone()).expect("delivery rows");
    let mut carried: Vec<(String, String)> = fan_out_job
        .rows
        .iter()
        .map(|row| (row.endpoint_id.to_string(), row.id.to_string()))
        .collect();
    carried.sort();
    let mut written = Vec::new();
    for endpoint in [&first, &second] {
        for delivery in deliveries(&app, &admin, endpoint).await {
            written.push((endpoint.clone(), id_of(&delivery)));
        }
    }
    written.sort();
    assert_eq!(
        carried, written,
        "the fan-out carries exactly the deliveries written"
    );

    // Pushed by the api in the fan-out's place: one job per delivery, under its id.
    for row in &fan_out_job.rows {
        let job = eventually("the delivery's job", || async {
            app.services
                .queue
                .job("webhooks", &row.id.to_string())
                .await
                .unwrap()
        })
        .await;
        assert_eq!(job.kind, "webhook.deliver");
        assert_eq!(job.payload["endpoint_id"], row.endpoint_id.to_string());
    }
    let queued = || async { app.services.queue.counts("webhooks").await.unwrap().waiting };
    assert_eq!(queued().await, 2, "the fan-out itself is not queued");

    // The api died before deleting the row: the relay pushes the fan-out job itself, and its
    // handler (run here twice, as after a worker's crash) queues nothing new.
    sqlx::query("insert into outbox select * from outbox_written where id = $1")
        .bind(fan_out_id)
        .execute(&pool)
        .await
        .expect("the row is back");
    let relayed = app
        .services
        .outbox
        .relay_once(Duration::ZERO)
        .await
        .expect("relay");
    assert_eq!(relayed, 1);
    let fan_out = app
        .services
        .queue
        .job("webhooks", &fan_out_id.to_string())
        .await
        .unwrap()
        .expect("the relayed fan-out");
    assert_eq!(fan_out.kind, "webhook.fan_out");
    for _ in 0..2 {
        app.services
            .webhooks
            .fan_out(&fan_out_job)
            .await
            .expect("fan-out");
    }
    assert_eq!(
        queued().await,
        3,
        "the two deliveries' jobs and the fan-out"
    );
}

// ---------------------------------------------------------------------------------------------
// Deliveries, with a worker running.
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_placed_order_reaches_the_receiver_signed(pool: PgPool) {
    let app = spawn_app_with(pool, LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![]).await;
    let created = create_webhook(
        &app,
        &admin,
        &receiver.url(),
        &["order.placed", "order.status_changed", "order.cancelled"],
    )
    .await;
    let endpoint_id = id_of(&created);
    let secret = created["secret"].as_str().expect("secret").to_owned();
    // The same receiver by name: resolved at connect time, and reachable because allow-listed.
    let by_name_receiver = Receiver::start(vec![]).await;
    let by_name = create_webhook(
        &app,
        &admin,
        &format!("http://localhost:{}/by-name", by_name_receiver.addr.port()),
        &["order.placed"],
    )
    .await;
    let worker = Worker::start(&app).await;

    let (_customer, order) = place_order(&app, &admin).await;

    let hit = receiver.wait_for_hits(1).await.remove(0);
    verify_signature(&secret, &hit);
    assert_eq!(header(&hit, "content-type"), "application/json");
    let body = body_json(&hit);
    assert_eq!(body["type"], "order.placed");
    assert!(DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("timestamp")).is_ok());
    let data = &body["data"];
    assert_eq!(data["id"], order["id"]);
    assert_eq!(data["status"], "placed");
    assert_eq!(data["total_cents"], 2500);
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["items"][0]["quantity"], 2);
    assert_eq!(data["items"][0]["unit_price_cents"], 1250);

    let delivered = wait_for_delivery(&app, &admin, &endpoint_id, status_is("delivered")).await;
    assert_eq!(
        header(&hit, "webhook-id"),
        delivered["id"].as_str().expect("id"),
        "webhook-id is the delivery id"
    );
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["last_status_code"], 200);
    assert!(delivered["last_latency_ms"].as_i64().is_some());
    assert!(delivered["delivered_at"].is_string());
    assert!(delivered["next_retry_at"].is_null());
    assert!(delivered["last_error"].is_null());

    let by_name_hit = by_name_receiver.wait_for_hits(1).await.remove(0);
    verify_signature(by_name["secret"].as_str().expect("secret"), &by_name_hit);
    wait_for_delivery(&app, &admin, &id_of(&by_name), status_is("delivered")).await;

    // A status change and a cancellation follow the same way.
    let paid = app
        .client
        .patch(app.url(&format!("/api/v1/orders/{}", id_of(&order))))
        .bearer_auth(&admin.token)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .expect("request");
    assert_eq!(paid.status(), StatusCode::OK);
    let hit = receiver.wait_for_hits(2).await.remove(1);
    verify_signature(&secret, &hit);
    let body = body_json(&hit);
    assert_eq!(body["type"], "order.status_changed");
    assert_eq!(body["data"]["status"], "paid");
    assert_eq!(body["data"]["previous_status"], "placed");

    // An order that fails (not enough stock) rolls back, and with it its deliveries.
    let scarce = app.create_product(&admin, 100, 1).await;
    let customer = app.customer().await;
    let refused = app
        .place_order(
            &customer.token,
            &Uuid::new_v4().to_string(),
            &json!({"items": [{"product_id": scarce["id"], "quantity": 5}]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(deliveries(&app, &admin, &endpoint_id).await.len(), 2);

    worker.stop().await;
    assert_eq!(receiver.hits().len(), 2);
}

/// The attempt a worker records rewrites its delivery row in place: a heap-only update, with no
/// new index entries, the cheapest write PostgreSQL has. An index on a column the attempt
/// changes (the status, say), or pages packed full, would make every delivery write all of its
/// indexes again.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn recording_an_attempt_rewrites_the_delivery_in_place(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![]).await;
    let endpoint = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let worker = Worker::start(&app).await;
    place_order(&app, &admin).await;
    wait_for_delivery(&app, &admin, &id_of(&endpoint), status_is("delivered")).await;
    worker.stop().await;
    app.stop().await;

    // A backend reports its table statistics at the latest when it exits: close them all.
    let options = pool.connect_options();
    pool.close().await;
    let stats = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*options).clone())
        .await
        .expect("a connection of its own");
    let (updates, in_place) = eventually("the attempt counted in the table's statistics", || {
        let stats = &stats;
        async move {
            let (updates, in_place): (i64, i64) = sqlx::query_as(
                "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables \
                     where relname = 'webhook_deliveries'",
            )
            .fetch_one(stats)
            .await
            .expect("table statistics");
            (updates > 0).then_some((updates, in_place))
        }
    })
    .await;
    stats.close().await;
    assert!(updates >= 1, "the attempt was never counted as an update");
    assert_eq!(
        in_place, updates,
        "every attempt record is a heap-only update"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn failures_are_retried_until_the_receiver_accepts(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.05,0.1,0.1"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::Status(500), Reply::Status(502)]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let secret = created["secret"].as_str().expect("secret");
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    let delivered = wait_for_delivery(&app, &admin, &id_of(&created), status_is("delivered")).await;
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(delivered["last_status_code"], 200);
    assert!(delivered["next_retry_at"].is_null());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    for hit in &hits {
        verify_signature(secret, hit);
        assert_eq!(
            header(hit, "webhook-id"),
            delivered["id"].as_str().expect("id")
        );
        assert_eq!(hit.body, hits[0].body, "every attempt sends the same bytes");
    }
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn retry_after_is_honoured(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.05"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::WithHeaders(
        503,
        vec![("retry-after", "2".into())],
    )])
    .await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let endpoint_id = id_of(&created);
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    // Between the attempts, the listing shows the failure and when the next attempt is due.
    let waiting = wait_for_delivery(&app, &admin, &endpoint_id, |d| {
        d["attempts"] == 1 && d["status"] == "pending"
    })
    .await;
    assert_eq!(waiting["last_status_code"], 503);
    assert!(
        waiting["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    );
    assert!(waiting["last_latency_ms"].as_i64().is_some());
    let attempted: DateTime<Utc> = waiting["last_attempt_at"]
        .as_str()
        .expect("last attempt")
        .parse()
        .expect("time");
    let next: DateTime<Utc> = waiting["next_retry_at"]
        .as_str()
        .expect("next retry")
        .parse()
        .expect("time");
    assert!(
        next - attempted > chrono::Duration::milliseconds(1500),
        "the next retry follows Retry-After (2 s), not the 50 ms schedule: {attempted} -> {next}"
    );

    let delivered = wait_for_delivery(&app, &admin, &endpoint_id, status_is("delivered")).await;
    assert_eq!(delivered["attempts"], 2);
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2);
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_secs(2),
        "retried before Retry-After: {:?}",
        hits[1].at.duration_since(hits[0].at)
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn gone_disables_the_endpoint(pool: PgPool) {
    let app = spawn_app_with(pool, LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::Status(410)]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let endpoint_id = id_of(&created);
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    let failed = wait_for_delivery(&app, &admin, &endpoint_id, status_is("failed")).await;
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["last_status_code"], 410);
    assert!(failed["next_retry_at"].is_null());
    let endpoint: Value = app
        .get(
            &format!("/api/v1/webhooks/{endpoint_id}"),
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(endpoint["enabled"], false);
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410"))
    );
    assert!(endpoint["disabled_at"].is_string());

    // A disabled endpoint gets no further deliveries.
    place_order(&app, &admin).await;
    assert_eq!(deliveries(&app, &admin, &endpoint_id).await.len(), 1);
    worker.stop().await;
    assert_eq!(receiver.hits().len(), 1);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn redirects_are_not_followed(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.05"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let target = Receiver::start(vec![]).await;
    let redirect = || Reply::WithHeaders(302, vec![("location", target.url())]);
    let redirecting = Receiver::start(vec![redirect(), redirect()]).await;
    let created = create_webhook(&app, &admin, &redirecting.url(), &["order.placed"]).await;
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    // Two attempts (the schedule allows one retry), both answered 302, and then it gives up.
    let failed = wait_for_delivery(&app, &admin, &id_of(&created), status_is("failed")).await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_status_code"], 302);
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not followed")),
        "{failed}"
    );
    worker.stop().await;
    assert_eq!(redirecting.hits().len(), 2);
    assert!(
        target.hits().is_empty(),
        "the redirect target must get no request"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn timeouts_are_retried(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.05"),
            ("WEBHOOK_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::Slow(Duration::from_secs(5))]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    let delivered = wait_for_delivery(&app, &admin, &id_of(&created), status_is("delivered")).await;
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["last_status_code"], 200);
    assert_eq!(receiver.hits().len(), 2);
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn blocked_addresses_are_refused_without_any_connection(pool: PgPool) {
    // No allow-list: production rules.
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let v4 = Tripwire::start("127.0.0.1:0").await;
    let v6 = Tripwire::start("[::1]:0").await;
    let port = v4.port;
    let targets = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{}/", v6.port),
        format!("http://0.0.0.0:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        // Resolved at connect time to 127.0.0.1: refused there.
        format!("http://localhost:{port}/"),
        "http://10.0.0.1/hooks".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://100.64.0.1/".to_owned(),
    ];
    // Registering any of them is refused at once, naming the setting that would allow it.
    for url in &targets {
        let response = app
            .post_json(
                "/api/v1/webhooks",
                Some(&admin.token),
                &json!({"url": url, "events": ["order.placed"]}),
            )
            .await;
        let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let message = body.to_string();
        assert!(
            message.contains("no permitted address") && message.contains("WEBHOOK_ALLOWLIST"),
            "{url}: {message}"
        );
    }
    // Deliveries check again when they connect (a name can resolve elsewhere later, and rows
    // may predate a stricter allow-list): the same endpoints, written as such rows.
    let mut endpoints = Vec::new();
    for url in &targets {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into webhook_endpoints (id, url, events, secret, created_by) \
             values ($1, $2, array['order.placed'], $3, $4)",
        )
        .bind(id)
        .bind(url)
        .bind(orderly::webhooks::signature::WebhookSecret::generate().expose())
        .bind(admin.id)
        .execute(&app.services.db)
        .await
        .expect("endpoint row");
        endpoints.push((url, id.to_string()));
    }
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;

    for (url, endpoint_id) in &endpoints {
        let failed = wait_for_delivery(&app, &admin, endpoint_id, status_is("failed")).await;
        assert_eq!(failed["attempts"], 1, "{url}: a refusal is final");
        assert!(
            failed["last_status_code"].is_null(),
            "{url}: nothing answered"
        );
        assert!(
            failed["last_latency_ms"].is_null(),
            "{url}: nothing was sent"
        );
        assert!(failed["next_retry_at"].is_null());
        let error = failed["last_error"].as_str().unwrap_or_default();
        assert!(error.starts_with("refused"), "{url}: {error}");
        if url.contains("localhost") {
            // Refused by the resolver, on the address the name resolved to.
            assert!(
                error.contains("localhost resolves to no permitted address"),
                "{error}"
            );
        }
    }
    worker.stop().await;
    assert_eq!(
        v4.accepted(),
        0,
        "a connection reached the IPv4 loopback listener"
    );
    assert_eq!(
        v6.accepted(),
        0,
        "a connection reached the IPv6 loopback listener"
    );

    // Control: the listeners do count a connection when one is made.
    let _v4 = tokio::net::TcpStream::connect(("127.0.0.1", v4.port))
        .await
        .expect("connect");
    let _v6 = tokio::net::TcpStream::connect(("::1", v6.port))
        .await
        .expect("connect");
    eventually("the control connections to be counted", || async {
        (v4.accepted() == 1 && v6.accepted() == 1).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Isolation between endpoints: per-endpoint caps, fair turns and the breaker.
// ---------------------------------------------------------------------------------------------

/// The order id a delivery's body carries.
fn order_id_of(hit: &Hit) -> String {
    body_json(hit)["data"]["id"]
        .as_str()
        .expect("order id")
        .to_owned()
}

/// Places `count` one-unit orders of one product over HTTP, one after the other, and returns
/// each order's id with the moment its response arrived.
async fn place_orders(
    app: &TestApp,
    admin: &TestUser,
    count: usize,
) -> std::collections::HashMap<String, Instant> {
    let product = app.create_product(admin, 500, count as i64 * 2).await;
    let customer = app.customer().await;
    let mut placed = std::collections::HashMap::with_capacity(count);
    for _ in 0..count {
        let response = app
            .place_order(
                &customer.token,
                &Uuid::new_v4().to_string(),
                &json!({"items": [{"product_id": product["id"], "quantity": 1}]}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let at = Instant::now();
        let order: Value = response.json().await.expect("json");
        placed.insert(id_of(&order), at);
    }
    placed
}

/// The isolation scenario: one endpoint answers after 5 s, another at once, 500 orders.
/// The slow endpoint never holds more than its cap of the worker's slots, so the fast one's
/// deliveries go out as their orders are placed instead of queueing behind the slow backlog
/// (which would take 500 × 5 s / 4 ≈ 10 minutes to drain).
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_slow_endpoint_does_not_hold_back_a_fast_one(pool: PgPool) {
    const ORDERS: usize = 500;
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_ENDPOINT_CONCURRENCY", "4"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let slow = Receiver::start_answering(vec![], Reply::Slow(Duration::from_secs(5))).await;
    let fast = Receiver::start(vec![]).await;
    let slow_endpoint = id_of(&create_webhook(&app, &admin, &slow.url(), &["order.placed"]).await);
    create_webhook(&app, &admin, &fast.url(), &["order.placed"]).await;
    let worker = Worker::start_with(&app, 16).await;

    let placed = place_orders(&app, &admin, ORDERS).await;
    let hits = fast.wait_for_hits(ORDERS).await;

    let mut delays: Vec<Duration> = hits
        .iter()
        .map(|hit| {
            let order_placed = placed[&order_id_of(hit)];
            hit.at.saturating_duration_since(order_placed)
        })
        .collect();
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    eprintln!(
        "fast endpoint: {} deliveries, p50 {p50:?}, p99 {p99:?}, max {:?}; slow endpoint: {} \
         requests so far, at most {} at once",
        delays.len(),
        delays[delays.len() - 1],
        slow.hits().len(),
        slow.most_in_flight()
    );
    // Structural bounds (the 200 ms p99 target is a measurement, quoted in the docs): behind
    // the slow endpoint's backlog a fast delivery would wait for 5 s answers; isolated, it
    // waits for no slow answer at all.
    assert!(
        p99 < Duration::from_millis(2500),
        "the fast endpoint waited behind the slow one: p99 {p99:?}"
    );
    assert!(
        slow.most_in_flight() <= 4,
        "the slow endpoint held {} slots at once, above its cap of 4",
        slow.most_in_flight()
    );
    let group = app
        .services
        .queue
        .group("webhooks", &slow_endpoint)
        .await
        .expect("group");
    assert!(
        group.running <= 4 && group.waiting >= (ORDERS as u64) - 100,
        "the slow endpoint's backlog drains at its own cap: {group:?}"
    );
    drop(worker);
}

/// An endpoint answering 503 opens its breaker after `WEBHOOK_BREAKER_FAILURES` failures in a
/// row: its deliveries then wait without using attempts, one probe per cool-down decides, and
/// once the endpoint recovers a successful probe lets everything through.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_failing_endpoint_opens_its_breaker_and_stops_using_attempts(pool: PgPool) {
    const ORDERS: usize = 8;
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            // Without a breaker these would be retried every 50 ms.
            ("WEBHOOK_RETRY_SCHEDULE", "0.05,0.05,0.05,0.05,0.05,0.05"),
            ("WEBHOOK_BREAKER_FAILURES", "3"),
            ("WEBHOOK_BREAKER_COOLDOWN_SECS", "1"),
            ("WEBHOOK_ENDPOINT_CONCURRENCY", "1"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let failing = Receiver::start_answering(vec![], Reply::Status(503)).await;
    let endpoint = id_of(&create_webhook(&app, &admin, &failing.url(), &["order.placed"]).await);
    let healthy = Receiver::start(vec![]).await;
    create_webhook(&app, &admin, &healthy.url(), &["order.placed"]).await;
    let worker = Worker::start_with(&app, 8).await;
    place_orders(&app, &admin, ORDERS).await;

    // Three failures in a row open it; the other endpoint is not affected.
    let queue = &app.services.queue;
    let opened = eventually("the breaker to open", || async {
        let group = queue.group("webhooks", &endpoint).await.expect("group");
        group
            .breaker
            .clone()
            .filter(|b| b.state == "open")
            .map(|_| group)
    })
    .await;
    healthy.wait_for_hits(ORDERS).await;
    let hits_when_opened = failing.hits().len();
    assert_eq!(hits_when_opened, 3, "one request per failure: {opened:?}");

    // While it is open nothing is sent (50 ms retries would otherwise have sent several), and
    // the waiting deliveries keep their attempts.
    let probe = eventually("the probe after the cool-down", || async {
        (failing.hits().len() > hits_when_opened).then(|| failing.hits().len())
    })
    .await;
    assert_eq!(probe, hits_when_opened + 1, "one probe, not a burst");
    let reopened = eventually("the failed probe to reopen the breaker", || async {
        let group = queue.group("webhooks", &endpoint).await.expect("group");
        group
            .breaker
            .clone()
            .filter(|b| b.state == "open" && b.opens == 2)
    })
    .await;
    let cooldown = reopened.reopens_at_ms.expect("reopens at") - Utc::now().timestamp_millis();
    assert!(
        cooldown > 1000,
        "the second cool-down is longer than the first: {cooldown} ms left"
    );
    let attempts: i64 = deliveries(&app, &admin, &endpoint)
        .await
        .iter()
        .map(|d| d["attempts"].as_i64().expect("attempts"))
        .sum();
    assert_eq!(
        attempts as usize,
        failing.hits().len(),
        "every attempt made was a request; none was used while the breaker was open"
    );

    // The endpoint recovers: the next probe succeeds, the breaker closes, all are delivered.
    failing.answer_from_now_on(Reply::Status(200));
    eventually("every delivery to be delivered", || async {
        let all = deliveries(&app, &admin, &endpoint).await;
        (all.len() == ORDERS && all.iter().all(status_is("delivered"))).then_some(())
    })
    .await;
    let group = queue.group("webhooks", &endpoint).await.expect("group");
    assert_eq!(group.breaker, None, "a success closes the breaker");
    assert_eq!(failing.hits().len(), hits_when_opened + 1 + ORDERS);
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Managing an endpoint: changes, disabling and re-enabling, secret rotation, pings, resends.
// ---------------------------------------------------------------------------------------------

async fn get_webhook(app: &TestApp, admin: &TestUser, id: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/webhooks/{id}"), Some(&admin.token))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

async fn patch_webhook(app: &TestApp, admin: &TestUser, id: &str, body: &Value) -> Value {
    let response = app
        .patch_json(&format!("/api/v1/webhooks/{id}"), Some(&admin.token), body)
        .await;
    assert_eq!(response.status(), StatusCode::OK, "PATCH {body}");
    response.json().await.expect("json")
}

/// `POST` with no body at all.
async fn post_empty(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn ping(app: &TestApp, admin: &TestUser, id: &str) -> Value {
    let response = post_empty(app, &format!("/api/v1/webhooks/{id}/ping"), &admin.token).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.expect("json")
}

async fn retry(app: &TestApp, admin: &TestUser, id: &str, delivery: &str) -> reqwest::Response {
    post_empty(
        app,
        &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry"),
        &admin.token,
    )
    .await
}

/// The `v1,` signatures of a request, in header order.
fn signatures(hit: &Hit) -> Vec<String> {
    header(hit, "webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// What `secret` makes of the request, as a Standard Webhooks library signs it.
fn expected_signature(secret: &str, hit: &Hit) -> String {
    standardwebhooks::Webhook::new(secret)
        .expect("whsec_ secret")
        .sign(
            header(hit, "webhook-id"),
            header(hit, "webhook-timestamp").parse().expect("timestamp"),
            &hit.body,
        )
        .expect("sign")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn patch_changes_an_endpoint_and_refuses_bad_input_changing_nothing(pool: PgPool) {
    // No allow-list: a loopback URL can never be reached and is refused.
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let created = create_webhook(
        &app,
        &admin,
        "https://erp.example.com/hooks",
        &["order.placed"],
    )
    .await;
    let id = id_of(&created);

    let changed = patch_webhook(
        &app,
        &admin,
        &id,
        &json!({"url": "https://erp.example.com/hooks/v2", "events": ["report.ready", "order.cancelled"]}),
    )
    .await;
    assert_eq!(changed["url"], "https://erp.example.com/hooks/v2");
    assert_eq!(
        changed["events"],
        json!(["order.cancelled", "report.ready"])
    );
    assert_eq!(changed["enabled"], true);
    assert!(changed.get("secret").is_none(), "{changed}");
    assert!(
        !changed
            .to_string()
            .contains(created["secret"].as_str().expect("secret"))
    );

    let before = get_webhook(&app, &admin, &id).await;
    let cases = [
        (json!({"url": "ftp://example.com/in"}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/hooks", "events": ["order.placed"]}),
            "url",
        ),
        (json!({"url": ""}), "url"),
        (json!({"events": []}), "events"),
        (
            json!({"events": ["order.placed", "order.shipped"]}),
            "events[1]",
        ),
        (json!({"events": ["webhook.ping"]}), "events[0]"),
    ];
    for (body, field) in cases {
        let error = assert_error(
            app.patch_json(&format!("/api/v1/webhooks/{id}"), Some(&admin.token), &body)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error["details"][0]["field"], field, "for {body}: {error}");
    }
    for body in [
        json!({}),
        json!({"enabled": "yes"}),
        json!({"secret": "whsec_x"}),
    ] {
        assert_error(
            app.patch_json(&format!("/api/v1/webhooks/{id}"), Some(&admin.token), &body)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    assert_eq!(
        get_webhook(&app, &admin, &id).await,
        before,
        "refused changes change nothing"
    );

    assert_error(
        app.patch_json(
            &format!("/api/v1/webhooks/{}", Uuid::now_v7()),
            Some(&admin.token),
            &json!({"enabled": false}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for path in [
        format!("/api/v1/webhooks/{id}/rotate-secret"),
        format!("/api/v1/webhooks/{id}/ping"),
        format!("/api/v1/webhooks/{id}/deliveries/{}/retry", Uuid::now_v7()),
    ] {
        assert_error(
            post_empty(&app, &path, &customer.token).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    assert_error(
        app.patch_json(
            &format!("/api/v1/webhooks/{id}"),
            Some(&customer.token),
            &json!({"enabled": false}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(get_webhook(&app, &admin, &id).await, before);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_endpoint_gone_with_410_is_re_enabled_and_its_failed_delivery_resent(pool: PgPool) {
    let app = spawn_app_with(pool, LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::Status(410)]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let secret = created["secret"].as_str().expect("secret");
    let id = id_of(&created);
    let worker = Worker::start(&app).await;

    place_order(&app, &admin).await;
    let failed = wait_for_delivery(&app, &admin, &id, status_is("failed")).await;
    let delivery_id = id_of(&failed);
    assert_eq!(get_webhook(&app, &admin, &id).await["enabled"], false);
    assert_error(
        retry(&app, &admin, &id, &delivery_id).await,
        StatusCode::CONFLICT,
    )
    .await;

    let enabled = patch_webhook(&app, &admin, &id, &json!({"enabled": true})).await;
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    assert!(enabled["disabled_at"].is_null(), "{enabled}");

    let response = retry(&app, &admin, &id, &delivery_id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let resent: Value = response.json().await.expect("json");
    assert_eq!(resent["id"], failed["id"]);
    assert_eq!(resent["status"], "pending");

    let delivered = wait_for_delivery(&app, &admin, &id, status_is("delivered")).await;
    assert_eq!(delivered["id"], failed["id"]);
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["last_status_code"], 200);
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2);
    for hit in &hits {
        verify_signature(secret, hit);
        assert_eq!(
            header(hit, "webhook-id"),
            delivery_id,
            "the same webhook-id"
        );
        assert_eq!(hit.body, hits[0].body, "the same bytes");
    }

    // Disabled by hand: the reason says so, and nothing more is delivered.
    let disabled = patch_webhook(&app, &admin, &id, &json!({"enabled": false})).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "disabled by an admin");
    assert!(disabled["disabled_at"].is_string());
    place_order(&app, &admin).await;
    assert_eq!(deliveries(&app, &admin, &id).await.len(), 1);
    worker.stop().await;
    assert_eq!(receiver.hits().len(), 2);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_delivery_that_exhausted_its_retries_is_resent_and_a_delivered_one_again(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("WEBHOOK_RETRY_SCHEDULE", "0.05"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![Reply::Status(500), Reply::Status(503)]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let secret = created["secret"].as_str().expect("secret");
    let id = id_of(&created);
    let other = id_of(
        &create_webhook(
            &app,
            &admin,
            "https://other.example.com/",
            &["report.ready"],
        )
        .await,
    );

    // A pending delivery (no worker yet) cannot be resent.
    place_order(&app, &admin).await;
    let pending = deliveries(&app, &admin, &id).await.remove(0);
    assert_eq!(pending["status"], "pending");
    let delivery_id = id_of(&pending);
    assert_error(
        retry(&app, &admin, &id, &delivery_id).await,
        StatusCode::CONFLICT,
    )
    .await;
    // Unknown ids, and a delivery asked for through another endpoint, are 404.
    for (endpoint, delivery) in [
        (id.clone(), Uuid::now_v7().to_string()),
        (Uuid::now_v7().to_string(), delivery_id.clone()),
        (other.clone(), delivery_id.clone()),
    ] {
        assert_error(
            retry(&app, &admin, &endpoint, &delivery).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    let worker = Worker::start(&app).await;
    let failed = wait_for_delivery(&app, &admin, &id, status_is("failed")).await;
    assert_eq!(failed["attempts"], 2, "the schedule allows one retry");
    assert_eq!(failed["last_status_code"], 503);

    let response = retry(&app, &admin, &id, &delivery_id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let delivered = wait_for_delivery(&app, &admin, &id, status_is("delivered")).await;
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(receiver.hits().len(), 3);

    // A delivered one is sent once more on request, with the same id and body.
    let response = retry(&app, &admin, &id, &delivery_id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let hits = receiver.wait_for_hits(4).await;
    let again = wait_for_delivery(&app, &admin, &id, |d| {
        d["status"] == "delivered" && d["attempts"] == 4
    })
    .await;
    assert_eq!(again["id"], pending["id"]);
    for hit in &hits {
        verify_signature(secret, hit);
        assert_eq!(header(hit, "webhook-id"), delivery_id);
        assert_eq!(hit.body, hits[0].body);
    }
    assert_eq!(
        deliveries(&app, &admin, &id).await.len(),
        1,
        "no new delivery row"
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_ping_reaches_only_its_endpoint_signed(pool: PgPool) {
    let app = spawn_app_with(pool, LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![]).await;
    let bystander = Receiver::start(vec![]).await;
    // Subscribed to something else entirely: a ping goes to an endpoint whatever it wants.
    let created = create_webhook(&app, &admin, &receiver.url(), &["report.ready"]).await;
    let secret = created["secret"].as_str().expect("secret");
    let id = id_of(&created);
    let bystander_id =
        id_of(&create_webhook(&app, &admin, &bystander.url(), &["report.ready"]).await);
    let worker = Worker::start(&app).await;

    let staged = ping(&app, &admin, &id).await;
    assert_eq!(staged["event_type"], "webhook.ping");
    assert_eq!(staged["status"], "pending");
    let delivery_id = id_of(&staged);

    let hits = receiver.wait_for_hits(1).await;
    verify_signature(secret, &hits[0]);
    assert_eq!(header(&hits[0], "webhook-id"), delivery_id);
    let body = body_json(&hits[0]);
    assert_eq!(body["type"], "webhook.ping");
    assert_eq!(body["data"]["endpoint_id"], id.as_str());
    let delivered = wait_for_delivery(&app, &admin, &id, status_is("delivered")).await;
    assert_eq!(delivered["id"], staged["id"]);
    assert_eq!(delivered["event_type"], "webhook.ping");

    assert_error(
        post_empty(
            &app,
            &format!("/api/v1/webhooks/{}/ping", Uuid::now_v7()),
            &admin.token,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    patch_webhook(&app, &admin, &id, &json!({"enabled": false})).await;
    assert_error(
        post_empty(&app, &format!("/api/v1/webhooks/{id}/ping"), &admin.token).await,
        StatusCode::CONFLICT,
    )
    .await;
    worker.stop().await;
    assert_eq!(receiver.hits().len(), 1);
    assert!(bystander.hits().is_empty(), "another endpoint gets no ping");
    assert!(deliveries(&app, &admin, &bystander_id).await.is_empty());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn rotate_secret_takes_an_optional_overlap(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let created = create_webhook(
        &app,
        &admin,
        "https://erp.example.com/hooks",
        &["order.placed"],
    )
    .await;
    let id = id_of(&created);
    let path = format!("/api/v1/webhooks/{id}/rotate-secret");

    // No body: the previous secret signs for a day.
    let response = post_empty(&app, &path, &admin.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.expect("json");
    let secret = rotated["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_") && secret != created["secret"].as_str().expect("old"));
    assert!(standardwebhooks::Webhook::new(secret).is_ok());
    let until: DateTime<Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("previous secret expiry")
        .parse()
        .expect("time");
    let left = until - Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{left}"
    );
    let shown = get_webhook(&app, &admin, &id).await;
    assert_eq!(
        shown["previous_secret_expires_at"],
        rotated["previous_secret_expires_at"]
    );
    assert!(shown.get("secret").is_none());
    assert!(!shown.to_string().contains(secret));

    // Zero: the previous secret stops at once.
    let response = app
        .post_json(&path, Some(&admin.token), &json!({"overlap_secs": 0}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.expect("json");
    assert!(rotated["previous_secret_expires_at"].is_null(), "{rotated}");

    let current = get_webhook(&app, &admin, &id).await;
    for body in [
        json!({"overlap_secs": 604_801}),
        json!({"overlap_secs": -1}),
        json!({"overlap": 10}),
    ] {
        assert_error(
            app.post_json(&path, Some(&admin.token), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    assert_eq!(
        get_webhook(&app, &admin, &id).await,
        current,
        "nothing rotated"
    );
    assert_error(
        post_empty(
            &app,
            &format!("/api/v1/webhooks/{}/rotate-secret", Uuid::now_v7()),
            &admin.token,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn after_a_rotation_deliveries_carry_both_signatures_until_the_overlap_ends(pool: PgPool) {
    let app = spawn_app_with(pool, LOCAL).await;
    let admin = app.admin().await;
    let receiver = Receiver::start(vec![]).await;
    let created = create_webhook(&app, &admin, &receiver.url(), &["order.placed"]).await;
    let old = created["secret"].as_str().expect("secret").to_owned();
    let id = id_of(&created);
    let worker = Worker::start(&app).await;

    let response = app
        .post_json(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            Some(&admin.token),
            // Long enough that a busy machine still delivers the ping inside it.
            &json!({"overlap_secs": 15}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.expect("json");
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    let until: DateTime<Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("previous secret expiry")
        .parse()
        .expect("time");

    // Inside the window: both signatures, the new one first; either secret verifies.
    ping(&app, &admin, &id).await;
    let hit = receiver.wait_for_hits(1).await.remove(0);
    assert!(
        Utc::now() < until,
        "the delivery was made after the window; the machine is too slow for this test"
    );
    let both = signatures(&hit);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(
        both[0],
        expected_signature(&new, &hit),
        "the new secret signs first"
    );
    assert_eq!(both[1], expected_signature(&old, &hit));
    verify_signature(&new, &hit);
    verify_signature(&old, &hit);

    // After it: only the new secret signs.
    let wait = (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(200);
    tokio::time::sleep(wait).await;
    assert!(get_webhook(&app, &admin, &id).await["previous_secret_expires_at"].is_null());
    place_order(&app, &admin).await;
    let hit = receiver.wait_for_hits(2).await.remove(1);
    assert_eq!(signatures(&hit), vec![expected_signature(&new, &hit)]);
    verify_signature(&new, &hit);
    assert!(
        standardwebhooks::Webhook::new(&old)
            .expect("old secret")
            .verify(&hit.body, &hit.headers)
            .is_err(),
        "the old secret no longer verifies"
    );
    worker.stop().await;
}
