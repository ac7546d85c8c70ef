//! Test harness: `spawn_app` starts the api on 127.0.0.1:0 over the test's own database and a
//! Redis prefix of its own, and `TestApp` offers typed helpers (register, log in, create
//! products, place orders). Dropping a `TestApp` stops the server and deletes its Redis keys.

#![allow(dead_code)]

use std::collections::HashMap;

use orderly::{
    Config, Services,
    jobs::EmailJob,
    queue::Job,
    users::{DisplayName, Email, Password, Role, TokenIssuer, User},
};
use orderly_api::{AppState, app};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Redis every test uses (a test's keys live under its own prefix).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The variables every test config starts from; `overrides` win.
pub fn test_vars(prefix: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        // The pool comes from #[sqlx::test]; this URL only has to be well-formed.
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/unused"),
        ("REDIS_URL", redis_url().as_str()),
        ("REDIS_PREFIX", prefix),
        ("JWT_SECRET", test_secret()),
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("RUST_LOG", "warn"),
        // Off unless a test is about rate limits: tests fire many requests from one address.
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let dir = std::env::temp_dir().join(format!("orderly-test-{prefix}"));
    vars.insert("MAIL_DIR".into(), dir.join("mail").display().to_string());
    vars.insert(
        "STORAGE_DIR".into(),
        dir.join("storage").display().to_string(),
    );
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

/// The signing secret of every app this test process starts (one per process, so two apps of
/// one test accept each other's tokens, as instances of one deployment do).
pub fn test_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(orderly::testing::random_secret)
}

/// A unique Redis prefix for one test.
pub fn unique_prefix() -> String {
    format!("test-{}", Uuid::new_v4().simple())
}

/// A running api.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A client with no default headers.
    pub client: reqwest::Client,
    /// The app's services (to arrange state directly and to assert on it).
    pub services: Services,
    /// The test's Redis prefix.
    pub prefix: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A user with a token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// Starts the api over `pool` with default test settings.
pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, &[]).await
}

/// Starts the api over `pool` with some variables overridden.
pub async fn spawn_app_with(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_routes(pool, overrides, axum::Router::new()).await
}

/// Starts the api with `extra` routes mounted inside its middleware stack (for behaviour no
/// real route can trigger on demand, such as a panicking handler).
pub async fn spawn_app_with_routes(
    pool: PgPool,
    overrides: &[(&str, &str)],
    extra: axum::Router<AppState>,
) -> TestApp {
    let prefix = overrides
        .iter()
        .find(|(k, _)| *k == "REDIS_PREFIX")
        .map(|(_, v)| (*v).to_owned())
        .unwrap_or_else(unique_prefix);
    let config = Config::from_map(&test_vars(&prefix, overrides)).expect("test config is valid");
    // Logs only: a test that exports traces installs its own telemetry first.
    let _ = orderly::telemetry::init(&config.log, &config.traces, "orderly-api");
    // The outbox deletes a row once its job is pushed: keep copies for tests that assert on
    // what a transaction staged. Not when the test's database is unreachable on purpose.
    let _ = orderly::queue::testing::keep_outbox_copies(&pool).await;
    let services = Services::build_with_pool(config, pool).expect("services build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let state = AppState::new(services.clone());
    let router = app::build_with_extra(state.clone(), extra);
    let server = tokio::spawn(async move {
        app::serve_app(listener, state, router, async move {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        services,
        prefix,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// POST JSON, optionally with a bearer token.
    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// GET, optionally with a bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// PATCH JSON, optionally with a bearer token.
    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.patch(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// DELETE, optionally with a bearer token.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.delete(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// Registers an account.
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post_json(
            "/api/v1/auth/register",
            None,
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let response = self
            .post_json(
                "/api/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "login of {email} failed");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// Registers a new customer with a unique email and logs them in.
    pub async fn customer(&self) -> TestUser {
        let email = format!("customer-{}@example.com", Uuid::new_v4().simple());
        let password = "customer-password".to_owned();
        let response = self.register(&email, &password, "Test Customer").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        let token = self.login(&email, &password).await;
        TestUser {
            id: body["id"].as_str().expect("id").parse().expect("uuid"),
            email,
            password,
            token,
        }
    }

    /// Creates an admin (as `orderly-api create-admin` does) and logs them in.
    pub async fn admin(&self) -> TestUser {
        let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
        let password = "admin-password".to_owned();
        let (user, _) = self
            .services
            .users
            .create_admin(
                Email::parse(&email).expect("email"),
                Password::parse(password.clone()).expect("password"),
                DisplayName::parse("Test Admin").expect("name"),
            )
            .await
            .expect("admin created");
        let token = self.login(&email, &password).await;
        TestUser {
            id: user.id,
            email,
            password,
            token,
        }
    }

    /// Creates `n` customers straight in the database, with tokens signed by this app's issuer.
    /// Registering over HTTP hashes a password per user (argon2); tests that need many
    /// distinct customers but are not about registration use this instead.
    pub async fn customers_without_password(&self, n: usize) -> Vec<TestUser> {
        let issuer = TokenIssuer::new(&self.services.config.auth);
        let mut users = Vec::with_capacity(n);
        for _ in 0..n {
            let email = format!("customer-{}@example.com", Uuid::new_v4().simple());
            let user: User = sqlx::query_as(
                "insert into users (id, email, name, password_hash, role) \
                 values ($1, $2, 'Test Customer', 'no-password-login', $3) \
                 returning id, email, name, role, created_at, updated_at",
            )
            .bind(Uuid::now_v7())
            .bind(&email)
            .bind(Role::Customer)
            .fetch_one(&self.services.db)
            .await
            .expect("customer inserted");
            let token = issuer
                .issue(&user, Uuid::new_v4(), 0)
                .expect("token issued")
                .token;
            users.push(TestUser {
                id: user.id,
                email,
                password: String::new(),
                token,
            });
        }
        users
    }

    /// Creates an active product (as `admin`) and returns its JSON.
    pub async fn create_product(&self, admin: &TestUser, price_cents: i64, stock: i64) -> Value {
        let sku = format!("SKU-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let response = self
            .post_json(
                "/api/v1/products",
                Some(&admin.token),
                &json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents,
                        "currency": "EUR", "stock": stock}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    /// Creates a product with the given fields (as `admin`), asserting 201; returns its JSON.
    pub async fn create_product_with(&self, admin: &TestUser, body: &Value) -> Value {
        let response = self
            .post_json("/api/v1/products", Some(&admin.token), body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "product {body} not created"
        );
        response.json().await.expect("json")
    }

    /// Current stock of a product, read from the database (not through the cache).
    pub async fn stock_of(&self, product_id: &str) -> i32 {
        sqlx::query_scalar("select stock from products where id = $1")
            .bind(product_id.parse::<Uuid>().expect("product id"))
            .fetch_one(&self.services.db)
            .await
            .expect("stock read")
    }

    /// Number of orders in the database.
    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orders")
            .fetch_one(&self.services.db)
            .await
            .expect("orders counted")
    }

    /// Number of outbox rows of `kind` ever written (pushed rows are deleted; the copies kept
    /// since the app started count them).
    pub async fn outbox_count(&self, kind: &str) -> i64 {
        sqlx::query_scalar("select count(*) from outbox_written where kind = $1")
            .bind(kind)
            .fetch_one(&self.services.db)
            .await
            .expect("outbox counted")
    }

    /// A Redis connection (the app's own multiplexed one).
    pub fn redis(&self) -> orderly::queue::RedisConnection {
        self.services.redis.clone()
    }

    /// Uploads a file as `multipart/form-data`: the text fields first, then the file.
    pub async fn upload(
        &self,
        token: Option<&str>,
        fields: &[(&str, &str)],
        file: Option<(&str, &str, Vec<u8>)>,
    ) -> Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text((*name).to_owned(), (*value).to_owned());
        }
        if let Some((filename, content_type, bytes)) = file {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(filename.to_owned())
                    .mime_str(content_type)
                    .expect("content type"),
            );
        }
        let mut request = self
            .client
            .post(self.url("/api/v1/uploads"))
            .multipart(form);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// Every file under the app's storage folder (paths relative to it).
    pub fn stored_files(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    out.push(relative.display().to_string());
                }
            }
        }
        let root = &self.services.config.storage.dir;
        let mut files = Vec::new();
        walk(root, root, &mut files);
        files.sort();
        files
    }

    /// Number of upload rows in the database.
    pub async fn upload_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from uploads")
            .fetch_one(&self.services.db)
            .await
            .expect("uploads counted")
    }

    /// Places an order with an idempotency key.
    pub async fn place_order(&self, token: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        orderly::testing::delete_prefix(&redis_url(), &self.prefix);
    }
}

/// The body of a one-line order for `quantity` units of `product_id`.
pub fn order_body(product_id: &str, quantity: i64) -> Value {
    json!({"items": [{"product_id": product_id, "quantity": quantity}]})
}

/// A fresh idempotency key.
pub fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// Asserts the one error shape and returns the body.
pub async fn assert_error(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error content type was {content_type:?}"
    );
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["statusCode"], status.as_u16(), "statusCode in {body}");
    assert_eq!(
        body["error"],
        status.canonical_reason().unwrap_or_default(),
        "error in {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    body
}

/// A worker process running in this test process (`orderly_worker::runner`), over the app's
/// services (same database, same Redis prefix). Stopped on drop.
pub struct TestWorker {
    /// `http://127.0.0.1:<port>` of its `/metrics` endpoint.
    pub metrics_address: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Stops the worker gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("worker task")
                .expect("worker stopped cleanly");
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// Starts a real worker serving `queues`, with its `/metrics` on a port of its own.
    pub async fn start_worker(&self, queues: &[&str]) -> TestWorker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics port");
        let metrics_address = format!("http://{}", listener.local_addr().expect("local addr"));
        let options = orderly_worker::runner::WorkerOptions {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            concurrency: 4,
            lease: std::time::Duration::from_secs(10),
            shutdown_grace: std::time::Duration::from_secs(5),
            relay: true,
            ..orderly_worker::runner::WorkerOptions::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let services = self.services.clone();
        let handle = tokio::spawn(orderly_worker::runner::run_with_metrics_listener(
            services,
            options,
            Some(listener),
            async move {
                let _ = stopped.await;
            },
        ));
        TestWorker {
            metrics_address,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Enqueues a welcome email for `user_id` on the `emails` queue (a job a real worker
    /// completes: it writes an `.eml` file) and returns its id.
    pub async fn enqueue_welcome_email(&self, user_id: Uuid, priority: u8) -> String {
        let id = Uuid::now_v7().to_string();
        let spec = orderly::queue::JobSpec::new(
            EmailJob::QUEUE.as_str(),
            "email.welcome",
            json!({"type": "welcome", "user_id": user_id}),
        )
        .with_id(id.clone())
        .with_priority(orderly::queue::Priority::new(priority));
        assert!(
            self.services.producer.enqueue(spec).await.expect("enqueue"),
            "job {id} was new"
        );
        id
    }

    /// Makes a dead welcome email: enqueued at the highest priority (so it is claimed before
    /// anything else waiting), then claimed and failed as a worker would, once with a retry and
    /// once for good. Returns its id. Call it while no worker serves the queue.
    pub async fn make_dead_email(&self, user_id: Uuid) -> String {
        let engine = &self.services.queue;
        let id = Uuid::now_v7().to_string();
        let mut spec = orderly::queue::JobSpec::new(
            EmailJob::QUEUE.as_str(),
            "email.welcome",
            json!({"type": "welcome", "user_id": user_id}),
        )
        .with_id(id.clone())
        .with_priority(orderly::queue::Priority::CRITICAL);
        spec.request_id = Some("req-dashboard-test".into());
        assert!(self.services.producer.enqueue(spec).await.expect("enqueue"));
        let lease = std::time::Duration::from_secs(30);
        for (error, retry_in) in [
            (
                "SMTP 451 4.3.0 mailbox temporarily unavailable",
                Some(std::time::Duration::ZERO),
            ),
            ("SMTP 554 5.7.1 message rejected as spam", None),
        ] {
            let claim = engine
                .claim(EmailJob::QUEUE.as_str(), "test-claimer", 1, lease)
                .await
                .expect("claim");
            let job = claim
                .jobs
                .into_iter()
                .next()
                .expect("the dead-to-be job is claimed first");
            assert_eq!(job.id, id, "the highest priority job is claimed first");
            assert!(engine.fail(&job, error, retry_in).await.expect("fail"));
        }
        let job = engine
            .job(EmailJob::QUEUE.as_str(), &id)
            .await
            .expect("read")
            .expect("job");
        assert_eq!(job.state, "dead");
        id
    }

    /// Enqueues `n` webhook deliveries in group `group` on the `webhooks` queue (straight to the
    /// engine, as the outbox would push them; their delivery rows do not exist, so nothing here
    /// should run them) and returns their ids, in the order they were added.
    pub async fn enqueue_grouped_webhooks(&self, group: &str, n: usize) -> Vec<String> {
        let specs: Vec<orderly::queue::JobSpec> = (0..n)
            .map(|_| {
                orderly::queue::JobSpec::new(
                    "webhooks",
                    "webhook.deliver",
                    json!({"delivery_id": Uuid::now_v7()}),
                )
                .with_id(Uuid::now_v7().to_string())
                .in_group(orderly::queue::JobGroup::new(group))
            })
            .collect();
        let added = self.services.queue.enqueue(&specs).await.expect("enqueue");
        assert!(added.iter().all(|a| *a), "every job was new");
        specs.into_iter().map(|spec| spec.id).collect()
    }

    /// Opens the breaker of webhook group `group`, as a worker whose deliveries to it keep
    /// failing would: claims its jobs and fails them with `error` (each to be retried at once)
    /// until the engine's breaker threshold is reached. Call it while no worker serves the queue
    /// and no other group has jobs waiting (claims rotate between groups).
    pub async fn open_webhook_breaker(&self, group: &str, error: &str) {
        let engine = &self.services.queue;
        let breaker = engine
            .limits("webhooks")
            .group
            .breaker
            .expect("the webhooks queue has a breaker per endpoint");
        for _ in 0..breaker.failures {
            let claim = engine
                .claim(
                    "webhooks",
                    "test-claimer",
                    1,
                    std::time::Duration::from_secs(30),
                )
                .await
                .expect("claim");
            let job = claim.jobs.into_iter().next().expect("a job of the group");
            let detail = engine
                .job("webhooks", &job.id)
                .await
                .expect("read")
                .expect("job");
            assert_eq!(
                detail.group.as_deref(),
                Some(group),
                "only {group} has jobs waiting"
            );
            assert!(
                engine
                    .fail(&job, error, Some(std::time::Duration::ZERO))
                    .await
                    .expect("fail")
            );
        }
        let status = engine.group("webhooks", group).await.expect("group");
        assert_eq!(
            status.breaker.map(|b| b.state).as_deref(),
            Some("open"),
            "the breaker of {group} opened"
        );
    }

    /// Signs in on the dashboard's login form like a browser and returns the session cookie
    /// (`orderly_admin=<token>`).
    pub async fn dashboard_login(&self, email: &str, password: &str) -> Response {
        let form = self
            .client
            .get(self.url("/admin/login"))
            .send()
            .await
            .expect("login form");
        let csrf_cookie = set_cookie(&form, "orderly_login_csrf").expect("login CSRF cookie");
        let html = form.text().await.expect("html");
        let csrf = hidden_field(&html, "csrf").expect("csrf field");
        self.client
            .post(self.url("/admin/login"))
            .header("cookie", format!("orderly_login_csrf={csrf_cookie}"))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/admin/queues"),
            ])
            .send()
            .await
            .expect("login post")
    }

    /// The `Cookie` header value of an admin's dashboard session.
    pub async fn dashboard_session(&self, user: &TestUser) -> String {
        let response = self.dashboard_login(&user.email, &user.password).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "dashboard login of {}",
            user.email
        );
        format!(
            "orderly_admin={}",
            set_cookie(&response, "orderly_admin").expect("session cookie")
        )
    }

    /// GET with a `Cookie` header.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("request sent")
    }

    /// POST a form with a `Cookie` header.
    pub async fn post_form(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .expect("request sent")
    }
}

/// The value a response sets for cookie `name`, if it sets it (to something non-empty).
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// The full `Set-Cookie` header a response sends for `name`.
pub fn set_cookie_header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first hidden input `name` in `html`.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit` (a generous bound on
/// something that normally takes milliseconds, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(what, limit, check, || async { String::new() }).await
}

/// [`eventually`], whose message on giving up ends with what `explain` says then (the state a
/// failure seen once on a loaded machine needs to be understood).
pub async fn eventually_explained<T, F, Fut, E, Explained>(
    what: &str,
    limit: std::time::Duration,
    mut check: F,
    explain: E,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
    E: FnOnce() -> Explained,
    Explained: std::future::Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            let context = explain().await;
            panic!("gave up waiting for: {what}{context}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
