//! Reliability drills, automated:
//! 1. 10,000 jobs across three worker processes while workers are `kill -9`-ed again and
//!    again: every job completes; the only repeats are runs that were cut short by a kill.
//! 2. Redis restarted mid-run: the api keeps taking orders while Redis is down, the workers
//!    keep running, and every order gets exactly one confirmation email once Redis is back.
//! 3. The api dies between commit and push: the outbox relay in a worker delivers the jobs.
//!
//! Drill 4, a job that always fails, is in `runner.rs`.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use orderly::{
    Config, Services,
    queue::{JobSpec, Priority, QueueEngine, Retention, RetryPolicy},
    testing::{
        PrivateRedis, database_url, delete_prefix, eventually, free_port, redis_url, unique_prefix,
    },
    users::{DisplayName, Email, Password},
};
use serde_json::{Value, json};
use sqlx::PgPool;

const WORKER: &str = env!("CARGO_BIN_EXE_orderly-worker");
/// The drills' worker: the real runner with a handler that records each execution.
const DRILL_WORKER: &str = env!("CARGO_BIN_EXE_orderly-drill-worker");

/// Waits for a child process to print `needle` on stdout (draining the rest in a thread).
fn wait_for_line(child: &mut Child, needle: &'static str) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("process never printed {needle:?}"));
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} ignored SIGTERM", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_drill_worker(prefix: &str, queue: &str, record_to: &str) -> Child {
    let vars = crate::helpers::vars(
        prefix,
        &[
            ("RUST_LOG", "error".to_owned()),
            // Completed jobs are trimmed as in production.
            ("QUEUE_COMPLETED_KEEP", "1000".to_owned()),
        ],
    );
    let mut child = Command::new(DRILL_WORKER)
        .args([
            "--queue",
            queue,
            "--concurrency",
            "16",
            "--work-ms",
            "2",
            "--lease-ms",
            "1000",
        ])
        .args(["--record-to", record_to])
        .envs(vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("drill worker binary runs");
    wait_for_line(&mut child, "ready");
    child
}

/// Drill 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_workers_killed_with_sigkill_lose_no_job() {
    const JOBS: usize = 10_000;
    let prefix = unique_prefix("drill1");
    let queue = "drill";
    let record_to = format!("{prefix}:drill-runs");
    let manager = orderly::queue::testing::connection(&redis_url());
    let engine = QueueEngine::new(manager.clone(), &prefix, Retention::default());
    let specs: Vec<JobSpec> = (0..JOBS)
        .map(|i| {
            JobSpec::new(queue, "drill.job", json!({ "i": i, "sent_at_us": 0 }))
                .with_priority(Priority::NORMAL)
                // A job may be cut short several times; each cut counts as an attempt.
                .with_retry(RetryPolicy::exponential(
                    25,
                    Duration::from_millis(20),
                    Duration::from_millis(200),
                ))
        })
        .collect();
    let ids: HashSet<String> = specs.iter().map(|s| s.id.clone()).collect();
    for chunk in specs.chunks(1000) {
        engine.enqueue(chunk).await.unwrap();
    }

    let mut workers: Vec<Child> = (0..3)
        .map(|_| spawn_drill_worker(&prefix, queue, &record_to))
        .collect();
    let mut killed = HashSet::new();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let victim = &mut workers[round % 3];
        killed.insert(victim.id().to_string());
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        workers[round % 3] = spawn_drill_worker(&prefix, queue, &record_to);
    }

    let done = eventually(Duration::from_secs(180), || async {
        let minutes = engine.throughput(queue, 10).await.unwrap();
        minutes.iter().map(|m| m.completed).sum::<u64>() as usize >= JOBS
    })
    .await;
    for worker in &mut workers {
        assert!(terminate(worker).success());
    }
    let counts = engine.counts(queue).await.unwrap();
    assert!(done, "not every job completed: {counts:?}");
    assert_eq!(
        (counts.waiting, counts.scheduled, counts.active, counts.dead),
        (0, 0, 0, 0)
    );

    // Every execution, in order: "<pid> <job id>".
    let mut conn = manager.clone();
    let runs: Vec<String> = redis::cmd("LRANGE")
        .arg(&record_to)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
    for run in &runs {
        let (pid, id) = run.split_once(' ').unwrap();
        by_job
            .entry(id.to_owned())
            .or_default()
            .push(pid.to_owned());
    }
    assert_eq!(
        by_job.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "some job never ran"
    );
    let mut repeats = 0;
    for (id, pids) in &by_job {
        // A job runs again only when an earlier run never got acknowledged, which happens only
        // to runs in a process that was killed.
        for pid in &pids[..pids.len() - 1] {
            assert!(
                killed.contains(pid),
                "job {id} ran again after a run in live process {pid}: {pids:?}"
            );
        }
        repeats += pids.len() - 1;
    }
    eprintln!(
        "drill 1: {JOBS} jobs, {} kills, {} executions, {repeats} repeats (all after kills)",
        killed.len(),
        runs.len()
    );
    delete_prefix(&redis_url(), &prefix);
}

struct Shop {
    address: String,
    http: reqwest::Client,
    services: Services,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

/// Starts the api in this process against `pool` and the Redis at `redis`.
async fn start_api(pool: PgPool, redis: &str, prefix: &str) -> Shop {
    let vars = crate::helpers::vars(
        prefix,
        &[
            ("REDIS_URL", redis.to_owned()),
            ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ],
    );
    let config = Config::from_map(&vars).unwrap();
    let services = Services::build_with_pool(config, pool).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = orderly_api::AppState::new(services.clone());
    let server = tokio::spawn(async move {
        let _ = orderly_api::app::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await;
    });
    Shop {
        address,
        http: reqwest::Client::new(),
        services,
        shutdown: Some(tx),
        server,
    }
}

impl Shop {
    /// An admin token, a product with plenty of stock, and a customer token.
    async fn arrange(&self) -> (String, String) {
        let admin_password = "drill-admin-password";
        let (admin, _) = self
            .services
            .users
            .create_admin(
                Email::parse("drill-admin@example.com").unwrap(),
                Password::parse(admin_password.into()).unwrap(),
                DisplayName::parse("Drill Admin").unwrap(),
            )
            .await
            .unwrap();
        let admin_token = self.login(&admin.email, admin_password).await;
        let product: Value = self
            .http
            .post(format!("{}/api/v1/products", self.address))
            .bearer_auth(&admin_token)
            .json(&json!({"sku": "DRILL-1", "name": "Drill mug", "price_cents": 1000, "currency": "EUR", "stock": 100000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let register = self
            .http
            .post(format!("{}/api/v1/auth/register", self.address))
            .json(&json!({"email": "drill-customer@example.com", "password": "drill-password", "name": "Drill Customer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(register.status(), 201);
        let token = self
            .login("drill-customer@example.com", "drill-password")
            .await;
        (product["id"].as_str().unwrap().to_owned(), token)
    }

    async fn login(&self, email: &str, password: &str) -> String {
        let body: Value = self
            .http
            .post(format!("{}/api/v1/auth/login", self.address))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn order(&self, token: &str, product_id: &str) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/orders", self.address))
            .bearer_auth(token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"items": [{"product_id": product_id, "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "orders are taken whatever Redis does"
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.server.await;
    }
}

fn spawn_shop_worker(
    database_url: &str,
    redis: &str,
    prefix: &str,
    mail_dir: &std::path::Path,
) -> Child {
    let mut child = Command::new(WORKER)
        .args(["--queues", "emails", "--concurrency", "8"])
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis)
        .env("REDIS_PREFIX", prefix)
        .env("JWT_SECRET", orderly::testing::random_secret())
        .env("MAIL_DIR", mail_dir)
        .env("STORAGE_DIR", mail_dir.join("storage"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker binary runs");
    wait_for_line(&mut child, "\"worker ready\"");
    child
}

/// How many confirmation emails each order got.
async fn confirmations(pool: &PgPool) -> HashMap<String, i64> {
    let rows: Vec<(String,)> =
        sqlx::query_as("select subject from sent_emails where kind = 'email.order_confirmation'")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut count = HashMap::new();
    for (subject,) in rows {
        // "Your order <id> (<total>)"
        let id = subject
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        *count.entry(id).or_insert(0) += 1;
    }
    count
}

/// Drill 2.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn drill_2_redis_restarted_mid_run_loses_no_order_job(pool: PgPool) {
    let mut redis = PrivateRedis::start_persistent();
    let prefix = unique_prefix("drill2");
    let mail = tempfile::tempdir().unwrap();
    let shop = start_api(pool.clone(), &redis.url(), &prefix).await;
    let (product, token) = shop.arrange().await;
    let mut workers: Vec<Child> = (0..2)
        .map(|_| spawn_shop_worker(&database_url(&pool), &redis.url(), &prefix, mail.path()))
        .collect();

    let mut orders = Vec::new();
    for _ in 0..15 {
        orders.push(shop.order(&token, &product).await);
    }
    redis.kill();
    // Redis is down: the api still takes orders (jobs wait in the outbox).
    for _ in 0..15 {
        orders.push(shop.order(&token, &product).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();

    let delivered = eventually(Duration::from_secs(90), || async {
        let sent = confirmations(&pool).await;
        orders.iter().all(|o| sent.contains_key(o))
    })
    .await;
    for worker in &mut workers {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "a worker exited during the Redis outage"
        );
    }
    let sent = confirmations(&pool).await;
    for worker in &mut workers {
        assert!(terminate(worker).success());
    }
    shop.stop().await;
    assert!(
        delivered,
        "missing confirmations: {} of {}",
        sent.len(),
        orders.len()
    );
    for order in &orders {
        assert_eq!(
            sent.get(order),
            Some(&1),
            "order {order} got {:?} confirmations",
            sent.get(order)
        );
    }
}

/// Drill 3.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn drill_3_the_relay_delivers_jobs_an_api_never_pushed(pool: PgPool) {
    let prefix = unique_prefix("drill3");
    let mail = tempfile::tempdir().unwrap();
    // The api's Redis is unreachable: it commits orders and never manages to push their jobs,
    // exactly as if it died right after each commit. Then it dies for real.
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let shop = start_api(pool.clone(), &dead_redis, &prefix).await;
    let (product, token) = shop.arrange().await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(shop.order(&token, &product).await);
    }
    shop.server.abort();
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox where dispatched_at is null and kind = 'email.order_confirmation'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 10);

    let mut worker = spawn_shop_worker(&database_url(&pool), &redis_url(), &prefix, mail.path());
    let delivered = eventually(Duration::from_secs(60), || async {
        let sent = confirmations(&pool).await;
        orders.iter().all(|o| sent.contains_key(o))
    })
    .await;
    let sent = confirmations(&pool).await;
    assert!(terminate(&mut worker).success());
    delete_prefix(&redis_url(), &prefix);
    assert!(delivered, "relay did not deliver: {sent:?}");
    for order in &orders {
        assert_eq!(sent.get(order), Some(&1));
    }
}
