//! The whole system under load, the way its users feel it: the release api and workers started
//! on a fresh database, seeded through the API, then
//! 1. cold start to ready and idle memory of the api and of two workers (and their graceful stop),
//! 2. HTTP at saturation and at half of it with wrk: cached product, catalogue page, place order
//!    (workers stopped meanwhile, as on a separate machine, so the api's figures are its own),
//! 3. the workers draining the email and webhook jobs those orders left (real SMTP, real HTTP),
//! 4. end to end at a fixed order rate: `POST /api/v1/orders` returning → confirmation email
//!    accepted by the SMTP server, and → signed webhook received by the HTTP receiver.
//!
//! Memory is sampled from `/proc` throughout; every figure is emitted as a JSON line. The setup
//! ([`Stack`]), seeding and the saturation-then-fixed-rate measurement ([`measure`]) serve the
//! `orders` phase too.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    Options, disk, emit,
    procs::{CpuSample, Launcher, Proc, file_mb, sample_peak_rss},
    sinks::{self, Arrival, Arrivals},
    stats::{median, percentile, round},
    wrk::{self, Load, Shape, WrkResult},
};

const DATABASE: &str = "orderly_bench";
const PRODUCTS: usize = 100;
const WORKERS: usize = 2;
const ADMIN_EMAIL: &str = "admin@bench.example";
const ADMIN_PASSWORD: &str = "bench-admin-password-1";

/// How long the api is left alone after seeding before its idle memory is read. Seeding hashes
/// passwords on tokio's blocking pool, 46 MiB each (argon2id); mimalloc keeps what a thread
/// freed until that thread allocates again or ends, and tokio ends a blocking-pool thread after
/// 10 s without work. Read sooner, "idle" would count the seeding's hashes (reported apart, as
/// `api_rss_mb_after_seeding`).
const IDLE_AFTER_SEEDING: Duration = Duration::from_secs(12);

/// Everything the HTTP phases need from seeding.
pub(crate) struct Seeded {
    pub customer_token: String,
    pub product_ids: Vec<String>,
}

/// A fresh database, migrated and with its admin, the api serving it, and the sinks the workers
/// deliver to: what the `system` and `orders` phases both start from.
pub(crate) struct Stack {
    /// Starts more processes (workers, another api) with the same configuration.
    pub launcher: Launcher,
    pub api: Proc,
    /// From spawning the api to its first `/health` 200.
    pub api_ready: Duration,
    pub base_url: String,
    pub client: reqwest::Client,
    /// Where the webhook endpoint [`seed`] registers points.
    pub webhook_url: String,
    pub emails: Arrivals,
    pub webhooks: Arrivals,
    database: String,
    redis_prefix: String,
}

impl Stack {
    /// Recreates `database`, starts the sinks, migrates, creates the admin and starts the api;
    /// `label` names the working folder and the Redis prefix.
    pub(crate) async fn start(
        options: &Options,
        database: &str,
        label: &str,
    ) -> anyhow::Result<Self> {
        let work_dir =
            std::env::temp_dir().join(format!("orderly-bench-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)?;
        crate::recreate_database(options, database).await?;
        let database_url = format!("{}/{database}", options.pg_server_url);
        let redis_prefix = format!("orderly-bench-{label}-{}", std::process::id());

        let (smtp_url, emails) = sinks::start_smtp()?;
        let (webhook_url, webhooks) = sinks::start_webhook_receiver().await?;
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", options.redis_url.as_str()),
            ("REDIS_PREFIX", redis_prefix.as_str()),
            (
                "JWT_SECRET",
                &format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
            ),
            ("HOST", "127.0.0.1"),
            ("PORT", &port.to_string()),
            ("PUBLIC_BASE_URL", base_url.as_str()),
            ("RUST_LOG", options.rust_log.as_str()),
            ("LOG_FORMAT", "json"),
            // The benchmark is one client: per-client limits would measure the limiter.
            ("RATE_LIMIT_PER_MINUTE", "0"),
            // One login serves the whole run, which outlasts the default access-token life.
            ("JWT_TTL_SECS", "86400"),
            ("SMTP_URL", smtp_url.as_str()),
            ("MAIL_FROM", "Orderly <orders@bench.example>"),
            ("WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
            ("MAIL_DIR", &work_dir.join("mail").display().to_string()),
            (
                "STORAGE_DIR",
                &work_dir.join("storage").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let launcher = Launcher {
            bin_dir: options.bin_dir.clone(),
            work_dir,
            env,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;

        run_once(&launcher, "orderly-api", &["migrate"], None).await?;
        run_once(
            &launcher,
            "orderly-api",
            &["create-admin", "--email", ADMIN_EMAIL],
            Some(ADMIN_PASSWORD),
        )
        .await?;
        let mut api = launcher.spawn("api", "orderly-api", &["serve"], None)?;
        let api_ready = api
            .wait_http_ok(
                &client,
                &format!("{base_url}/health"),
                Duration::from_secs(30),
            )
            .await?;
        Ok(Self {
            launcher,
            api,
            api_ready,
            base_url,
            client,
            webhook_url,
            emails,
            webhooks,
            database: database.to_owned(),
            redis_prefix,
        })
    }

    /// The launcher with some of its variables replaced (another port, another database URL).
    pub(crate) fn launcher_with(&self, overrides: &[(&str, String)]) -> Launcher {
        let mut launcher = self.launcher.clone();
        for (key, value) in overrides {
            launcher.env.retain(|(k, _)| k != key);
            launcher.env.push(((*key).to_owned(), value.clone()));
        }
        launcher
    }

    /// Stops the api gracefully, then removes the database, the Redis keys and the working
    /// folder; returns how long the api took to stop.
    pub(crate) async fn stop(self, options: &Options) -> anyhow::Result<Duration> {
        let api_stop = self.api.stop(Duration::from_secs(40)).await?;
        clean_redis(&options.redis_url, &self.redis_prefix).await?;
        crate::drop_database(options, &self.database).await?;
        let _ = std::fs::remove_dir_all(&self.launcher.work_dir);
        Ok(api_stop)
    }
}

/// Runs phases 1–4; returns the summary figures.
pub async fn run(options: &Options) -> anyhow::Result<Value> {
    let stack = Stack::start(options, DATABASE, "system").await?;
    let (launcher, client, base_url) = (&stack.launcher, &stack.client, stack.base_url.as_str());
    let work_dir = launcher.work_dir.as_path();
    let (emails, webhooks) = (&stack.emails, &stack.webhooks);
    let api = &stack.api;

    // 1. Cold start and idle footprint.
    let seeded = seed(client, base_url, &stack.webhook_url).await?;
    let api_rss_after_seeding = api.rss_mb();
    let cache = cache_probe(client, base_url, &seeded).await?;
    let mut workers = start_workers(launcher, "idle").await?;
    let worker_ready: Vec<f64> = workers.iter().map(|(_, ready)| ms(*ready)).collect();
    tokio::time::sleep(IDLE_AFTER_SEEDING).await;
    let api_idle_rss = api.rss_mb();
    let worker_idle_rss: Vec<f64> = workers.iter().map(|(w, _)| w.rss_mb()).collect();
    let mut worker_stop_ms = Vec::new();
    for (worker, _) in workers.drain(..) {
        worker_stop_ms.push(ms(worker.stop(Duration::from_secs(40)).await?));
    }
    let startup = json!({
        "bench": "footprint.idle",
        "api_cold_start_to_ready_ms": ms(stack.api_ready),
        "worker_cold_start_to_ready_ms": worker_ready,
        "api_rss_mb_after_seeding": round(api_rss_after_seeding, 1),
        "api_idle_rss_mb": round(api_idle_rss, 1),
        "worker_idle_rss_mb": worker_idle_rss.iter().map(|v| round(*v, 1)).collect::<Vec<_>>(),
        "worker_graceful_stop_ms": worker_stop_ms,
        "api_binary_mb": round(file_mb(&launcher.binary("orderly-api")), 1),
        "worker_binary_mb": round(file_mb(&launcher.binary("orderly-worker")), 1),
    });
    emit(startup.clone());

    // 2. HTTP load on the api alone.
    let (stop_sampler, stop_rx) = watch::channel(false);
    let api_sampler = tokio::spawn(sample_peak_rss(vec![api.pid()], stop_rx));
    let http = http_phase(options, work_dir, base_url, api.pid(), &seeded).await?;
    let _ = stop_sampler.send(true);
    let api_load_rss = api_sampler.await?.first().copied().unwrap_or(0.0);

    // 3. Workers drain what the orders left behind.
    let backlog = backlog(client, base_url).await?;
    let drain_started = Instant::now();
    let workers = start_workers(launcher, "load").await?;
    let mut pids: Vec<u32> = workers.iter().map(|(w, _)| w.pid()).collect();
    pids.push(api.pid());
    let (stop_sampler, stop_rx) = watch::channel(false);
    let load_sampler = tokio::spawn(sample_peak_rss(pids, stop_rx));
    wait_for_empty_queues(client, base_url, Duration::from_secs(600)).await?;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let drain = json!({
        "bench": "drain",
        "workers": WORKERS,
        "jobs": backlog,
        "seconds": round(drain_secs, 2),
        "jobs_per_s": round(backlog as f64 / drain_secs, 0),
        "emails_received": emails.len(),
        "webhooks_received": webhooks.len(),
    });
    emit(drain.clone());

    // 4. End to end at fixed order rates, with the queues empty before each.
    let mut e2e = Vec::new();
    for &rate in &options.e2e_rates {
        wait_for_empty_queues(client, base_url, Duration::from_secs(600)).await?;
        e2e.push(end_to_end(options, rate, client, base_url, &seeded, emails, webhooks).await?);
    }

    let _ = stop_sampler.send(true);
    let load_peaks = load_sampler.await?;
    let worker_load_rss: Vec<f64> = load_peaks[..WORKERS].iter().map(|v| round(*v, 1)).collect();
    let api_e2e_rss = load_peaks[WORKERS];
    let footprint = json!({
        "bench": "footprint.load",
        "api_peak_rss_mb_http_load": round(api_load_rss, 1),
        "api_peak_rss_mb_e2e": round(api_e2e_rss, 1),
        "api_vmhwm_mb": round(api.peak_rss_mb(), 1),
        "worker_peak_rss_mb_drain_and_e2e": worker_load_rss,
        "worker_vmhwm_mb": workers.iter().map(|(w, _)| round(w.peak_rss_mb(), 1)).collect::<Vec<_>>(),
    });
    emit(footprint.clone());

    for (worker, _) in workers {
        worker.stop(Duration::from_secs(40)).await?;
    }
    let api_stop = stack.stop(options).await?;
    emit(json!({"bench": "shutdown", "api_graceful_stop_ms": ms(api_stop)}));

    Ok(json!({
        "startup": startup,
        "product_cache": cache,
        "http": http,
        "drain": drain,
        "end_to_end": e2e,
        "footprint": footprint,
    }))
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 1)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs a one-shot subcommand (migrate, create-admin) to completion, `stdin` piped in.
pub(crate) async fn run_once(
    launcher: &Launcher,
    binary: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(launcher.binary(binary))
        .args(args)
        .envs(launcher.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&launcher.work_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes()).await?;
        pipe.write_all(b"\n").await?;
    }
    let output = child.wait_with_output().await?;
    anyhow::ensure!(
        output.status.success(),
        "{binary} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Starts the benchmark's workers and waits for each one's ready line; returns them with their
/// time from spawn to ready.
pub(crate) async fn start_workers(
    launcher: &Launcher,
    label: &str,
) -> anyhow::Result<Vec<(Proc, Duration)>> {
    let mut started = Vec::new();
    for i in 1..=WORKERS {
        started.push(launcher.spawn_with_log_filter(
            // The ready line is logged at info.
            ",orderly_worker::runner=info",
            &format!("worker-{label}-{i}"),
            "orderly-worker",
            &["run"],
            Some("worker ready"),
        )?);
    }
    let mut ready = Vec::new();
    for mut worker in started {
        let took = worker.wait_ready_line(Duration::from_secs(30)).await?;
        ready.push((worker, took));
    }
    Ok(ready)
}

pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "POST {url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

pub(crate) async fn login(
    client: &reqwest::Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body = post_json(
        client,
        &format!("{base_url}/api/v1/auth/login"),
        None,
        json!({"email": email, "password": password}),
    )
    .await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// Products with stock for every order the benchmark places, a customer, and a webhook
/// endpoint for `order.placed` at the receiver.
pub(crate) async fn seed(
    client: &reqwest::Client,
    base_url: &str,
    webhook_url: &str,
) -> anyhow::Result<Seeded> {
    let admin = login(client, base_url, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let mut product_ids = Vec::new();
    for i in 0..PRODUCTS {
        let product = post_json(
            client,
            &format!("{base_url}/api/v1/products"),
            Some(&admin),
            json!({
                "sku": format!("BENCH-{i:04}"),
                "name": format!("Benchmark product {i}"),
                "description": "Seeded by the benchmark",
                "price_cents": 1000 + i,
                "currency": "USD",
                "stock": 1_000_000_000,
                "active": true,
            }),
        )
        .await?;
        product_ids.push(product["id"].as_str().context("product id")?.to_owned());
    }
    post_json(
        client,
        &format!("{base_url}/api/v1/webhooks"),
        Some(&admin),
        json!({"url": webhook_url, "events": ["order.placed"]}),
    )
    .await?;
    let (email, password) = ("customer@bench.example", "bench-customer-password-1");
    post_json(
        client,
        &format!("{base_url}/api/v1/auth/register"),
        None,
        json!({"email": email, "password": password, "name": "Bench Customer"}),
    )
    .await?;
    let customer_token = login(client, base_url, email, password).await?;
    Ok(Seeded {
        customer_token,
        product_ids,
    })
}

/// One client, one request at a time: each freshly created product read three times: the first
/// read a cache miss (PostgreSQL, then filling Redis), the second a Redis hit (which the api
/// then keeps in its near cache), the third a near-cache hit (no Redis; with
/// `CACHE_NEAR_MAX_BYTES=0`, another Redis hit).
async fn cache_probe(
    client: &reqwest::Client,
    base_url: &str,
    seeded: &Seeded,
) -> anyhow::Result<Value> {
    let mut miss_ms = Vec::new();
    let mut redis_hit_ms = Vec::new();
    let mut near_hit_ms = Vec::new();
    for id in &seeded.product_ids {
        let url = format!("{base_url}/api/v1/products/{id}");
        for samples in [&mut miss_ms, &mut redis_hit_ms, &mut near_hit_ms] {
            let started = Instant::now();
            let response = client.get(&url).send().await?.error_for_status()?;
            response.bytes().await?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let summary = json!({
        "bench": "product_cache",
        "reads": miss_ms.len(),
        "uncached_p50_ms": round(percentile(&miss_ms, 50.0), 3),
        "uncached_p99_ms": round(percentile(&miss_ms, 99.0), 3),
        "cached_p50_ms": round(percentile(&redis_hit_ms, 50.0), 3),
        "cached_p99_ms": round(percentile(&redis_hit_ms, 99.0), 3),
        "near_p50_ms": round(percentile(&near_hit_ms, 50.0), 3),
        "near_p99_ms": round(percentile(&near_hit_ms, 99.0), 3),
    });
    emit(summary.clone());
    Ok(summary)
}

/// Where a load goes and whose CPU time it is charged with.
pub(crate) struct HttpTarget<'a> {
    pub work_dir: &'a Path,
    pub base_url: &'a str,
    pub api_pid: u32,
    /// Workers running meanwhile, whose CPU time is reported too.
    pub worker_pids: Vec<u32>,
    /// Database vacuumed before each measured run; with none, each run inherits the dead rows
    /// the runs before it left, as a live system does.
    pub vacuum: Option<&'a str>,
    /// Reads the api's `/metrics` just before and after the fixed-rate run when set
    /// ([`Measured::fixed_metrics`]).
    pub metrics: Option<&'a reqwest::Client>,
}

/// One load at saturation (`options.runs` runs, median reported), then at a fixed rate of half
/// of that.
pub(crate) struct Measured {
    pub connections: usize,
    pub runs: Vec<WrkResult>,
    pub saturation_rps: f64,
    pub fixed_target_rps: f64,
    pub fixed_connections: usize,
    pub fixed: WrkResult,
    /// PostgreSQL checkpoints begun during the saturation runs and during the fixed-rate run
    /// (`None` where they could not be read): a checkpoint's full-page writes make the commits
    /// after it slower, and whether one fell inside a 10-second run moves its tail.
    pub checkpoints: (Option<u64>, Option<u64>),
    /// CPU microseconds per request over the saturation runs, per process group.
    pub cpu_us_per_request: Value,
    /// The same over the fixed-rate run: where requests arrive at half the saturation rate,
    /// work that is shared under load (a statement for a group of orders) is shared less, and a
    /// request can cost more than at saturation.
    pub fixed_cpu_us_per_request: Value,
    /// The api's metric series just before and just after the fixed-rate run, if
    /// [`HttpTarget::metrics`] asked for them: what its histograms recorded at half load alone.
    pub fixed_metrics: Option<(MetricSeries, MetricSeries)>,
    /// What waiting for a quiet disk found before each saturation run and before the
    /// fixed-rate run, in that order ([`disk::settle`]): a long wait says what the run would
    /// otherwise have stalled on, and a disk that never became quiet marks the run's tail as
    /// suspect.
    pub disk_settlings: Vec<disk::Settling>,
}

impl Measured {
    /// Saturation responses that were not 2xx, plus socket errors.
    pub(crate) fn saturation_failures(&self) -> u64 {
        self.runs.iter().map(|r| r.non_2xx + r.socket_errors).sum()
    }

    /// Median over the saturation runs of one of their figures.
    pub(crate) fn saturation_median(&self, figure: impl Fn(&WrkResult) -> f64) -> f64 {
        median(&self.runs.iter().map(figure).collect::<Vec<_>>())
    }

    /// `head` (a JSON object) followed by the figures every HTTP measurement reports.
    pub(crate) fn figures(&self, mut head: Value) -> Value {
        let saturation_failures = self.saturation_failures();
        let fixed_failures = self.fixed.non_2xx + self.fixed.socket_errors;
        let figures = json!({
            "saturation_connections": self.connections,
            "saturation_rps": self.saturation_rps,
            "saturation_rps_runs": self.runs.iter().map(|r| r.requests_per_s).collect::<Vec<_>>(),
            "saturation_p50_ms": self.saturation_median(|r| r.latency_p50_ms),
            "saturation_p99_ms": self.saturation_median(|r| r.latency_p99_ms),
            "saturation_non_2xx_or_errors": saturation_failures,
            "fixed_rate_target_rps": round(self.fixed_target_rps, 0),
            "fixed_rate_achieved_rps": self.fixed.requests_per_s,
            "fixed_rate_connections": self.fixed_connections,
            "fixed_rate_p50_ms": self.fixed.latency_p50_ms,
            "fixed_rate_p99_ms": self.fixed.latency_p99_ms,
            "fixed_rate_max_ms": self.fixed.latency_max_ms,
            "saturation_checkpoints": self.checkpoints.0,
            "fixed_rate_checkpoints": self.checkpoints.1,
            "disk_before_runs": self.disk_settlings.iter().map(disk::Settling::to_json).collect::<Vec<_>>(),
            "non_2xx_or_errors": saturation_failures + fixed_failures,
            "cpu_us_per_request": self.cpu_us_per_request,
            "fixed_rate_cpu_us_per_request": self.fixed_cpu_us_per_request,
        });
        if let (Value::Object(head), Value::Object(figures)) = (&mut head, figures) {
            head.extend(figures);
        }
        head
    }
}

/// Runs `load` as [`Measured`] describes, after a short warm-up that fills caches and connection
/// pools; `name` labels the runs' lines and wrk scripts.
pub(crate) async fn measure(
    options: &Options,
    target: &HttpTarget<'_>,
    name: &str,
    load: &Load,
    connections: usize,
) -> anyhow::Result<Measured> {
    let warm = Shape {
        connections,
        threads: options.wrk_threads,
        duration: Duration::from_secs(2),
        rate: None,
    };
    wrk::run(target.work_dir, name, target.base_url, load, &warm).await?;
    let mut disk_settlings = Vec::with_capacity(options.runs + 1);
    let checkpoints_at_start = checkpoints(options).await;
    let cpu_before = CpuSample::take(target.api_pid, &target.worker_pids);
    let mut runs: Vec<WrkResult> = Vec::new();
    for run in 1..=options.runs {
        let shape = Shape {
            duration: options.duration,
            ..warm
        };
        if let Some(database) = target.vacuum {
            crate::vacuum(options, database).await?;
        }
        // After the vacuum, which writes: each run starts on a quiet disk.
        disk_settlings.push(disk::settle(options).await?);
        let result = wrk::run(target.work_dir, name, target.base_url, load, &shape).await?;
        emit(
            json!({"bench": "http.saturation.run", "endpoint": name, "run": run, "connections": connections, "result": result}),
        );
        runs.push(result);
    }
    let cpu_after = CpuSample::take(target.api_pid, &target.worker_pids);
    let checkpoints_after_saturation = checkpoints(options).await;
    let requests = runs.iter().map(|r| r.requests).sum();
    let saturation_rps = median(&runs.iter().map(|r| r.requests_per_s).collect::<Vec<_>>());

    let fixed_target_rps = (saturation_rps / 2.0).max(1.0);
    let paced = Shape::paced(fixed_target_rps, options.wrk_threads, options.duration);
    if let Some(database) = target.vacuum {
        crate::vacuum(options, database).await?;
    }
    disk_settlings.push(disk::settle(options).await?);
    let checkpoints_before_fixed = checkpoints(options).await;
    let metrics_before_fixed = match target.metrics {
        Some(client) => Some(metric_series(client, target.base_url).await?),
        None => None,
    };
    let cpu_before_fixed = CpuSample::take(target.api_pid, &target.worker_pids);
    let fixed = wrk::run(target.work_dir, name, target.base_url, load, &paced).await?;
    let cpu_after_fixed = CpuSample::take(target.api_pid, &target.worker_pids);
    let with_workers = !target.worker_pids.is_empty();
    let fixed_cpu_us_per_request =
        cpu_before_fixed.per_request_us(&cpu_after_fixed, fixed.requests, with_workers);
    let fixed_metrics = match (target.metrics, metrics_before_fixed) {
        (Some(client), Some(before)) => {
            Some((before, metric_series(client, target.base_url).await?))
        }
        _ => None,
    };
    let checkpoints_after_fixed = checkpoints(options).await;
    let between = |from: Option<u64>, to: Option<u64>| Some(to?.saturating_sub(from?));
    Ok(Measured {
        connections,
        runs,
        saturation_rps,
        fixed_target_rps,
        fixed_connections: paced.connections,
        fixed,
        checkpoints: (
            between(checkpoints_at_start, checkpoints_after_saturation),
            between(checkpoints_before_fixed, checkpoints_after_fixed),
        ),
        cpu_us_per_request: cpu_before.per_request_us(&cpu_after, requests, with_workers),
        fixed_cpu_us_per_request,
        fixed_metrics,
        disk_settlings,
    })
}

/// Checkpoints the PostgreSQL server has begun since its statistics were reset (PostgreSQL 17
/// moved the counters to `pg_stat_checkpointer`), or `None` if neither view answers.
async fn checkpoints(options: &Options) -> Option<u64> {
    for sql in [
        "select checkpoints_timed + checkpoints_req from pg_stat_bgwriter",
        "select num_timed + num_requested from pg_stat_checkpointer",
    ] {
        if let Ok(count) = crate::psql_value(options, "postgres", sql).await
            && let Ok(count) = count.parse()
        {
            return Some(count);
        }
    }
    None
}

/// Saturation (median of the runs) and a fixed rate at half of it, per endpoint, each run on a
/// freshly vacuumed database.
async fn http_phase(
    options: &Options,
    work_dir: &Path,
    base_url: &str,
    api_pid: u32,
    seeded: &Seeded,
) -> anyhow::Result<Value> {
    let endpoints: Vec<(&str, Load, usize)> = vec![
        (
            "product_by_id_cached",
            Load::Get {
                path: format!("/api/v1/products/{}", seeded.product_ids[0]),
            },
            64,
        ),
        (
            "product_page",
            Load::Get {
                path: "/api/v1/products?limit=20".to_owned(),
            },
            64,
        ),
        (
            "place_order",
            Load::PlaceOrder {
                token: seeded.customer_token.clone(),
                product_ids: seeded.product_ids.clone(),
            },
            32,
        ),
    ];
    let target = HttpTarget {
        work_dir,
        base_url,
        api_pid,
        worker_pids: Vec::new(),
        vacuum: Some(DATABASE),
        metrics: None,
    };
    let mut results = serde_json::Map::new();
    for (name, load, connections) in endpoints {
        let measured = measure(options, &target, name, &load, connections).await?;
        let summary = measured.figures(json!({"bench": "http", "endpoint": name}));
        emit(summary.clone());
        results.insert(name.to_owned(), summary);
    }
    let during_orders = reads_during_orders(options, work_dir, base_url, seeded).await?;
    results.insert("product_by_id_during_orders".to_owned(), during_orders);
    Ok(Value::Object(results))
}

/// Cached reads of one product at saturation while orders for that same product arrive at a
/// fixed 200 per second: every order replaces the product's cached copy (its stock changed), so
/// this is what reads cost when the cache must stay current under writes.
async fn reads_during_orders(
    options: &Options,
    work_dir: &Path,
    base_url: &str,
    seeded: &Seeded,
) -> anyhow::Result<Value> {
    const ORDERS_PER_S: f64 = 200.0;
    let product = seeded.product_ids[0].clone();
    let reads = Load::Get {
        path: format!("/api/v1/products/{product}"),
    };
    let orders = Load::PlaceOrder {
        token: seeded.customer_token.clone(),
        product_ids: vec![product],
    };
    let order_shape = Shape::paced(ORDERS_PER_S, 1, options.duration);
    let read_shape = Shape {
        connections: 64,
        threads: options.wrk_threads,
        duration: options.duration,
        rate: None,
    };
    crate::vacuum(options, DATABASE).await?;
    let (read_result, order_result) = tokio::try_join!(
        wrk::run(
            work_dir,
            "product_reads_during_orders",
            base_url,
            &reads,
            &read_shape
        ),
        wrk::run(
            work_dir,
            "orders_during_reads",
            base_url,
            &orders,
            &order_shape
        ),
    )?;
    let summary = json!({
        "bench": "http",
        "endpoint": "product_by_id_during_orders",
        "reads_rps": read_result.requests_per_s,
        "reads_p50_ms": read_result.latency_p50_ms,
        "reads_p99_ms": read_result.latency_p99_ms,
        "orders_rps": order_result.requests_per_s,
        "orders_p99_ms": order_result.latency_p99_ms,
        "non_2xx_or_errors": read_result.non_2xx + read_result.socket_errors
            + order_result.non_2xx + order_result.socket_errors,
    });
    emit(summary.clone());
    Ok(summary)
}

/// The series of a Prometheus endpoint, each as printed (name and labels) with its value.
pub(crate) type MetricSeries = Vec<(String, f64)>;

/// Every series of the api's Prometheus endpoint with its value (gauges are refreshed at each
/// scrape).
pub(crate) async fn metric_series(
    client: &reqwest::Client,
    base_url: &str,
) -> anyhow::Result<MetricSeries> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.parse().unwrap_or(0.0)))
        .collect())
}

/// Email and webhook jobs not finished yet, plus outbox rows not relayed, read from the api's
/// Prometheus endpoint.
async fn backlog(client: &reqwest::Client, base_url: &str) -> anyhow::Result<u64> {
    let mut total = 0.0;
    for (series, value) in metric_series(client, base_url).await? {
        let unfinished = [
            "state=\"waiting\"",
            "state=\"scheduled\"",
            "state=\"active\"",
        ]
        .iter()
        .any(|s| series.contains(s));
        if (series.starts_with("orderly_queue_jobs{") && unfinished)
            || series.starts_with("orderly_outbox_pending")
        {
            total += value;
        }
    }
    Ok(total as u64)
}

pub(crate) async fn wait_for_empty_queues(
    client: &reqwest::Client,
    base_url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if backlog(client, base_url).await? == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "queues did not drain within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places orders at `rate` per second for `options.e2e_secs` seconds and measures,
/// per order, the time from the API's response to its email and to its webhook.
async fn end_to_end(
    options: &Options,
    rate: u64,
    client: &reqwest::Client,
    base_url: &str,
    seeded: &Seeded,
    emails: &Arrivals,
    webhooks: &Arrivals,
) -> anyhow::Result<Value> {
    let total = (rate * options.e2e_secs) as usize;
    let returned: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let emails_before = emails.len();
    let webhooks_before = webhooks.len();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let client = client.clone();
        let url = base_url.to_owned();
        let token = seeded.customer_token.clone();
        let product = seeded.product_ids[i % seeded.product_ids.len()].clone();
        let returned = returned.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let response = order_request(&client, &url, &token, &product).send().await;
            let order_id = match response {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["id"].as_str().and_then(|id| id.parse::<Uuid>().ok())),
                _ => None,
            };
            let at = Instant::now();
            match order_id {
                Some(id) => {
                    returned
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(id, at);
                }
                None => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    futures::future::join_all(tasks).await;
    let sending_secs = started.elapsed().as_secs_f64();
    let returned = returned
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();

    let deadline = Instant::now() + Duration::from_secs(120);
    while (emails.len() - emails_before < returned.len()
        || webhooks.len() - webhooks_before < returned.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let email_ms = latencies(&returned, &emails.snapshot()[emails_before..]);
    let webhook_ms = latencies(&returned, &webhooks.snapshot()[webhooks_before..]);
    let summary = json!({
        "bench": "end_to_end",
        "order_rate_per_s": rate,
        "orders": total,
        "achieved_rate_per_s": round(total as f64 / sending_secs, 1),
        "failed_orders": failures.load(std::sync::atomic::Ordering::Relaxed),
        "workers": WORKERS,
        "emails_matched": email_ms.len(),
        "email_p50_ms": round(percentile(&email_ms, 50.0), 1),
        "email_p99_ms": round(percentile(&email_ms, 99.0), 1),
        "email_max_ms": round(percentile(&email_ms, 100.0), 1),
        "webhooks_matched": webhook_ms.len(),
        "webhook_p50_ms": round(percentile(&webhook_ms, 50.0), 1),
        "webhook_p99_ms": round(percentile(&webhook_ms, 99.0), 1),
        "webhook_max_ms": round(percentile(&webhook_ms, 100.0), 1),
    });
    emit(summary.clone());
    anyhow::ensure!(
        email_ms.len() == total && webhook_ms.len() == total,
        "end to end: {} orders, {} emails and {} webhooks matched",
        returned.len(),
        email_ms.len(),
        webhook_ms.len()
    );
    Ok(summary)
}

/// `POST /api/v1/orders` of one unit of `product`, under an idempotency key of its own (the
/// body wrk's orders have too).
pub(crate) fn order_request(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    product: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base_url}/api/v1/orders"))
        .bearer_auth(token)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(&json!({"items": [{"product_id": product, "quantity": 1}]}))
}

/// Per order found in `arrivals`: milliseconds from its API response to its arrival (0 when the
/// message beat the response back to the client). Each order counts once.
fn latencies(returned: &HashMap<Uuid, Instant>, arrivals: &[Arrival]) -> Vec<f64> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for arrival in arrivals {
        // Undo SMTP header folding and quoted-printable soft breaks so ids are contiguous.
        let text = arrival
            .text
            .replace("=\r\n", "")
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        for token in text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')) {
            if token.len() != 36 {
                continue;
            }
            let Ok(id) = token.parse::<Uuid>() else {
                continue;
            };
            if let Some(at) = returned.get(&id)
                && seen.insert(id)
            {
                out.push(arrival.at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    out
}

/// Deletes the benchmark's Redis keys.
pub(crate) async fn clean_redis(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
