//! Worker test fixtures: services over the test's database and a unique Redis prefix, a test
//! job type, and an in-process worker running a test handler through the real runner.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    future::Future,
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        mpsc::{self, TryRecvError},
    },
    time::Duration,
};

use apalis_core::task::data::Data;
use orderly::{
    Config, Services,
    queue::{JobError, JobInfo, JobSpec, Priority, RetryPolicy},
    testing::{delete_prefix, redis_url, unique_prefix},
};
use orderly_worker::{
    jobs::JobContext,
    registrar::Registrar,
    runner::{WorkerOptions, run_with},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;

/// The job the runner tests enqueue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestJob {
    pub n: u64,
}

/// Variables of a test config; `overrides` win.
pub fn vars(prefix: &str, overrides: &[(&str, String)]) -> HashMap<String, String> {
    let dir = std::env::temp_dir().join(format!("orderly-worker-test-{prefix}"));
    let mut vars: HashMap<String, String> = [
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/unused".to_owned(),
        ),
        ("REDIS_URL", redis_url()),
        ("REDIS_PREFIX", prefix.to_owned()),
        ("JWT_SECRET", orderly::testing::random_secret()),
        (
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        ),
        ("MAIL_DIR", dir.join("mail").display().to_string()),
        ("STORAGE_DIR", dir.join("storage").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), v.clone());
    }
    vars
}

/// Services over `pool` under a fresh Redis prefix; the prefix's keys go when it is dropped.
pub struct TestServices {
    pub services: Services,
    pub prefix: String,
    url: String,
}

impl std::ops::Deref for TestServices {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl Drop for TestServices {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

pub fn services(pool: PgPool, overrides: &[(&str, String)]) -> TestServices {
    let prefix = unique_prefix("wtest");
    let vars = vars(&prefix, overrides);
    let url = vars["REDIS_URL"].clone();
    let config = Config::from_map(&vars).expect("valid test config");
    // Logs only: a test that exports traces installs its own telemetry first.
    let _ = orderly::telemetry::init(&config.log, &config.traces, "orderly-worker");
    TestServices {
        services: Services::build_with_pool(config, pool).expect("services"),
        prefix,
        url,
    }
}

/// Options for one test queue.
pub fn options(queue: &str, concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        queues: vec![queue.to_owned()],
        concurrency,
        lease: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(10),
        relay: false,
        schedules: false,
        ..WorkerOptions::default()
    }
}

/// A test job spec on `queue`.
pub fn test_job(queue: &str, n: u64, retry: RetryPolicy) -> JobSpec {
    JobSpec::new(
        queue,
        "test.job",
        serde_json::to_value(TestJob { n }).unwrap(),
    )
    .with_priority(Priority::NORMAL)
    .with_retry(retry)
}

/// A worker process running in this test, stopped by `stop()`.
pub struct RunningWorker {
    stop: Arc<Notify>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Sends the shutdown signal and waits for the runner to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.notify_one();
        self.handle.await?
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal(&self) {
        self.stop.notify_one();
    }

    /// Waits for the runner to return.
    pub async fn join(self) -> anyhow::Result<()> {
        self.handle.await?
    }
}

/// Starts the real runner in-process with `handler` serving `options.queues[0]`.
pub fn start_worker<H, Fut>(
    services: &Services,
    options: WorkerOptions,
    handler: H,
) -> RunningWorker
where
    H: Fn(TestJob, Data<JobContext>, Data<JobInfo>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let queue = options.queues[0].clone();
    let handle = tokio::spawn(run_with(
        services.clone(),
        options,
        async move { signal.notified().await },
        move |workers: Registrar| {
            workers.serve_queue::<TestJob, _, _>(&queue, Duration::from_secs(60), handler)
        },
    ));
    RunningWorker { stop, handle }
}

/// A customer, a product and the services to place orders with, arranged through the domain
/// services (what the api would do).
pub struct ShopFixture {
    pub customer: orderly::users::User,
    pub actor: orderly::users::Actor,
    pub product: orderly::products::Product,
}

pub async fn shop(services: &Services, stock: i32) -> ShopFixture {
    use orderly::users::{Actor, DisplayName, Email, Password};
    let email = format!("buyer-{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = services
        .users
        .register(
            Email::parse(&email).unwrap(),
            Password::parse("buyer-password".into()).unwrap(),
            DisplayName::parse("Ada Buyer").unwrap(),
        )
        .await
        .unwrap();
    let product = services
        .products
        .create(orderly::products::NewProduct {
            sku: format!("MUG-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            name: "Blue mug".into(),
            description: String::new(),
            price_cents: 1299,
            currency: "EUR".into(),
            stock,
            active: true,
        })
        .await
        .unwrap();
    ShopFixture {
        actor: Actor {
            user_id: customer.id,
            role: customer.role,
        },
        customer,
        product,
    }
}

impl ShopFixture {
    /// Registers a webhook endpoint at `url` for `order.placed` (as an admin) and signs the
    /// customer in; returns the customer's access token, to order over HTTP.
    pub async fn hook_orders_and_sign_in(&self, services: &Services, url: &str) -> String {
        use orderly::{
            users::{Actor, Role},
            webhooks::NewWebhookEndpoint,
        };
        let admin = Actor {
            user_id: self.customer.id,
            role: Role::Admin,
        };
        services
            .webhooks
            .create(
                &admin,
                NewWebhookEndpoint::parse(url, &["order.placed".to_owned()]).unwrap(),
            )
            .await
            .expect("endpoint registered");
        services
            .users
            .login(&self.customer.email, "buyer-password".into())
            .await
            .expect("login")
            .access
            .token
    }

    /// Places an order of `quantity` units (under a fresh idempotency key).
    pub async fn order(&self, services: &Services, quantity: i32) -> orderly::orders::Order {
        let key = uuid::Uuid::now_v7().to_string();
        let attempt =
            orderly::idempotency::Attempt::new(self.actor.user_id, "orders.create", &key, "test");
        match services
            .orders
            .place(
                &self.actor,
                &[orderly::orders::NewOrderLine {
                    product_id: self.product.id,
                    quantity,
                }],
                &attempt,
                |_| {
                    Ok(orderly::idempotency::StoredResponse {
                        status: 201,
                        body: Vec::new(),
                    })
                },
            )
            .await
            .unwrap()
        {
            orderly::idempotency::Keyed::Done((order, _)) => order,
            earlier => panic!("a fresh key has no earlier request: {earlier:?}"),
        }
    }
}

/// Runs the shop's real worker (every handler) in-process on `queues`.
pub fn start_shop_worker(services: &Services, queues: &[&str]) -> RunningWorker {
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let mut opts = options(queues[0], 8);
    opts.queues = queues.iter().map(|q| q.to_string()).collect();
    let handle = tokio::spawn(orderly_worker::runner::run(
        services.clone(),
        opts,
        async move { signal.notified().await },
    ));
    RunningWorker { stop, handle }
}

/// Peak resident memory of this process in MB (`VmHWM`), 0 where `/proc` has no answer.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One `orderly-worker` process; killed if the test ends without stopping it.
pub struct WorkerProcess {
    child: Child,
    ready: mpsc::Receiver<()>,
}

impl WorkerProcess {
    /// Starts `orderly-worker` with `args` on `prefix`, with a clean environment (no stray
    /// `.env` is read) made of the test settings and `overrides`.
    pub fn start(prefix: &str, args: &[&str], overrides: &[(&str, String)]) -> Self {
        let mut overrides = overrides.to_vec();
        overrides.push(("RUST_LOG", "warn,orderly_worker=info".to_owned()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderly-worker"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars(prefix, &overrides))
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker binary runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready) = mpsc::channel();
        // Drains stdout for the life of the process, so the worker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"worker ready\"") {
                    let _ = ready_tx.send(());
                }
            }
        });
        Self { child, ready }
    }

    /// Waits until the worker said it is ready (its workers and schedule loop are running).
    pub async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.ready.try_recv() {
                Ok(()) => return,
                Err(TryRecvError::Disconnected) => {
                    panic!("worker exited before it was ready: {:?}", self.child.wait())
                }
                Err(TryRecvError::Empty) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Waits for the process to exit after [`Self::terminate`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on the worker") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops every worker with SIGTERM (all signalled first, as an operator stopping a fleet) and
/// checks each exits cleanly.
pub async fn stop_all(workers: &mut [WorkerProcess]) {
    for worker in workers.iter() {
        worker.terminate();
    }
    for worker in workers.iter_mut() {
        let status = worker.wait_exit().await;
        assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    }
}

/// The api serving `services` on 127.0.0.1:0 in this process, stopped by [`ServedApi::stop`].
pub struct ServedApi {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServedApi {
    pub async fn start(services: &Services) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = orderly_api::state::AppState::new(services.clone());
        let router = orderly_api::app::build(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(orderly_api::app::serve_app(
            listener,
            state,
            router,
            async {
                let _ = stopped.await;
            },
        ));
        Self { url, stop, server }
    }

    /// Stops serving (graceful) and waits until the server is done; its result.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.server.await.expect("the api task ran to its end")
    }
}
