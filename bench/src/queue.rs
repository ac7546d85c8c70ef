//! `orderly-bench queue`: the queue benchmark, with the same protocol as the BullMQ peer
//! benchmark so the figures compare: enqueue N jobs from P concurrent producers (each awaiting
//! each push), then drain them with worker processes at concurrency C running a no-op handler
//! through the real engine and the real apalis worker path. Also measures idle wake-up latency
//! (push to handler start with an idle worker) and the worker's peak RSS.
//!
//! Only `REDIS_URL` and `REDIS_MODE` are read (default one server at `redis://127.0.0.1:6379`;
//! `REDIS_MODE=cluster` with seed nodes in `REDIS_URL` runs it on a Redis Cluster); the benchmark
//! uses a queue of its own under the `orderly-bench` prefix and deletes it afterwards. The last line of output
//! is one JSON object.
//!
//! It runs the worker library's real runner (`orderly_worker::runner::run_with`) with a no-op
//! handler; with `--processes K` it starts K `orderly-bench bench-drain` children of its own.

// Standard output is this module's protocol: child processes say `ready` and report their peak
// memory on it, and the benchmark's result is a JSON line on it.
#![allow(clippy::print_stdout)]

use std::{
    io::{BufRead, Write},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis_core::task::data::Data;
use orderly::{
    Config, Services,
    queue::{JobError, JobGroup, JobInfo, JobSpec, Priority, RetryPolicy},
};
use orderly_worker::{
    jobs::JobContext,
    registrar::Registrar,
    runner::{WorkerOptions, run_with},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The benchmark's parameters (`orderly-bench queue --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Jobs to enqueue and then drain (N), all on a benchmark queue of their own.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent producers, each awaiting each push.
    #[arg(long, default_value_t = 50)]
    pub producers: usize,
    /// Worker concurrency per process.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Worker processes draining the queue.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Idle wake-up latency samples.
    #[arg(long, default_value_t = 200)]
    pub wakeup_samples: usize,
    /// A rate limit on the benchmark queue (`1000/s`): the drain then measures how close the
    /// claimed rate comes to the limit (one worker process only).
    #[arg(long)]
    pub rate: Option<String>,
    /// Spread the jobs over this many groups (round robin by sequence number), to measure what
    /// the rotation between groups costs; 0: no groups.
    #[arg(long, default_value_t = 0)]
    pub groups: usize,
    /// Split the benchmark queue into this many partitions (what `QUEUE_PARTITIONS` does): on
    /// a Redis Cluster they spread over the nodes. One worker process only.
    #[arg(long, default_value_t = 1)]
    pub partitions: u16,
}

/// The no-op job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchJob {
    /// Sequence number.
    pub i: u64,
    /// Push time (µs since the epoch), for wake-up latency.
    #[serde(default)]
    pub sent_at_us: i64,
}

const PREFIX: &str = "orderly-bench";

/// A config for benchmark processes: only Redis is used; the database is never contacted.
fn bench_config() -> anyhow::Result<Config> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Tokens are never issued here; the config still insists on a random signing secret.
    let jwt_secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    Ok(Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(redis_url.clone()),
        "REDIS_MODE" => std::env::var("REDIS_MODE").ok(),
        "REDIS_PREFIX" => Some(std::env::var("REDIS_PREFIX").unwrap_or_else(|_| PREFIX.into())),
        "DATABASE_URL" => Some("postgres://unused@127.0.0.1:1/unused".into()),
        "JWT_SECRET" => Some(jwt_secret.clone()),
        "RUST_LOG" => Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
        "MAIL_DIR" => Some(
            std::env::temp_dir()
                .join("orderly-bench-mail")
                .display()
                .to_string(),
        ),
        "STORAGE_DIR" => Some(
            std::env::temp_dir()
                .join("orderly-bench-storage")
                .display()
                .to_string(),
        ),
        // Completed jobs are trimmed as in production (BullMQ peer: removeOnComplete 1000).
        "QUEUE_COMPLETED_KEEP" => Some("1000".into()),
        _ => None,
    })?)
}

fn options(queue: &str, concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        queues: vec![queue.to_owned()],
        concurrency,
        lease: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
        relay: false,
        schedules: false,
        ..WorkerOptions::default()
    }
}

/// Peak resident memory of this process in MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    crate::procs::proc_status_kb(std::process::id(), "VmHWM:") / 1024.0
}

/// Current resident memory of this process in MB (VmRSS).
fn rss_mb() -> f64 {
    crate::procs::proc_status_kb(std::process::id(), "VmRSS:") / 1024.0
}

fn spec(queue: &str, i: u64, sent_at_us: i64) -> JobSpec {
    JobSpec::new(
        queue,
        "bench.noop",
        serde_json::to_value(BenchJob { i, sent_at_us }).unwrap_or_default(),
    )
    .with_priority(Priority::NORMAL)
    .with_retry(RetryPolicy::exponential(
        3,
        Duration::from_secs(1),
        Duration::from_secs(10),
    ))
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn completed_total(services: &Services, queue: &str) -> u64 {
    services
        .queue
        .throughput(queue, 5)
        .await
        .map(|m| m.iter().map(|s| s.completed).sum())
        .unwrap_or(0)
}

/// Runs a worker process on `queue` with the benchmark handler until `stop` is notified; `done`
/// counts handled jobs, `latencies` receives wake-up samples (µs) when jobs carry a send time.
async fn run_noop_worker(
    services: Services,
    queue: String,
    concurrency: usize,
    done: Arc<AtomicUsize>,
    latencies: Arc<std::sync::Mutex<Vec<i64>>>,
    stop: Arc<Notify>,
) -> anyhow::Result<()> {
    let register = {
        let queue = queue.clone();
        move |workers: Registrar| {
            let handler = move |job: BenchJob, _ctx: Data<JobContext>, _info: Data<JobInfo>| {
                let done = done.clone();
                let latencies = latencies.clone();
                async move {
                    if job.sent_at_us > 0
                        && let Ok(mut samples) = latencies.lock()
                    {
                        samples.push(now_us() - job.sent_at_us);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), JobError>(())
                }
            };
            workers.serve_queue::<BenchJob, _, _>(&queue, Duration::from_secs(30), handler)
        }
    };
    run_with(
        services,
        options(&queue, concurrency),
        async move { stop.notified().await },
        register,
    )
    .await
}

/// The benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<serde_json::Value> {
    let mut services = Services::build(bench_config()?)?;
    let queue = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let n = args.jobs;
    let rate = args
        .rate
        .as_deref()
        .map(orderly::queue::RateLimit::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--rate: {e}"))?;
    if let Some(rate) = rate {
        anyhow::ensure!(args.processes <= 1, "--rate runs with one worker process");
        services.queue = services.queue.clone().with_limits([(
            queue.clone(),
            orderly::queue::QueueLimits {
                rate: Some(rate),
                ..Default::default()
            },
        )]);
    }

    if args.partitions > 1 {
        anyhow::ensure!(
            args.processes <= 1,
            "--partitions runs with one worker process"
        );
        orderly::queue::partitions::parse_count(&args.partitions.to_string())
            .map_err(|e| anyhow::anyhow!("--partitions: {e}"))?;
        services.queue = services
            .queue
            .clone()
            .with_partitions(orderly::queue::Partitions::new([(
                queue.clone(),
                args.partitions,
            )]));
        services.producer = orderly::queue::Producer::new(services.queue.clone());
    }

    // Phase 1: enqueue from P producers, each awaiting each push.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut producers = Vec::new();
    let groups = args.groups;
    for _ in 0..args.producers.max(1) {
        let next = next.clone();
        let producer = services.producer.clone();
        let queue = queue.clone();
        producers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), redis::RedisError>(());
                }
                let mut job = spec(&queue, i as u64, 0);
                if groups > 0 {
                    job = job.in_group(JobGroup::new(format!("g{}", i % groups)));
                }
                producer.enqueue(job).await?;
            }
        }));
    }
    for p in producers {
        p.await??;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let waiting = services.queue.counts(&queue).await?.waiting;
    anyhow::ensure!(
        waiting as usize == n,
        "expected {n} waiting jobs, found {waiting}"
    );
    eprintln!(
        "enqueued {n} jobs from {} producers in {enqueue_secs:.3} s",
        args.producers
    );

    // Phase 2: drain with K worker processes at concurrency C.
    let (process_secs, worker_rss_mb) = if args.processes <= 1 {
        drain_in_process(&services, &queue, n, args.concurrency).await?
    } else {
        drain_with_children(&services, &queue, n, args.concurrency, args.processes).await?
    };
    eprintln!(
        "processed {n} jobs with {} process(es) at concurrency {} in {process_secs:.3} s",
        args.processes.max(1),
        args.concurrency
    );

    if let Some(rate) = rate {
        // The bucket starts full: the burst is not the rate.
        let claimed_per_s = (n as f64 - f64::from(rate.burst())) / process_secs;
        eprintln!(
            "rate limit {rate}: claimed {claimed_per_s:.0}/s ({:+.2}% of the limit)",
            (claimed_per_s / rate.per_second() - 1.0) * 100.0
        );
        services.queue.obliterate(&queue).await?;
        return Ok(serde_json::json!({
            "bench": "orderly-queue-rate-limit",
            "N": n,
            "C": args.concurrency,
            "limit_per_s": rate.per_second(),
            "claimed_per_s": claimed_per_s.round(),
            "deviation_pct": ((claimed_per_s / rate.per_second() - 1.0) * 10_000.0).round() / 100.0,
        }));
    }

    // Phase 3: idle wake-up latency on a fresh queue.
    let wake_queue = format!("{queue}-wake");
    let (p50, p99) = wakeup_latency(&services, &wake_queue, args.wakeup_samples).await?;
    eprintln!("idle wake-up latency: p50 {p50:.2} ms, p99 {p99:.2} ms");

    services.queue.obliterate(&queue).await?;
    services.queue.obliterate(&wake_queue).await?;

    Ok(serde_json::json!({
        "bench": "orderly-queue",
        "N": n,
        "P": args.producers,
        "C": args.concurrency,
        "processes": args.processes.max(1),
        "groups": args.groups,
        "partitions": args.partitions,
        "enqueue_per_s": (n as f64 / enqueue_secs).round(),
        "process_per_s": (n as f64 / process_secs).round(),
        "wakeup_p50_ms": (p50 * 100.0).round() / 100.0,
        "wakeup_p99_ms": (p99 * 100.0).round() / 100.0,
        "worker_peak_rss_mb": (worker_rss_mb * 10.0).round() / 10.0,
    }))
}

/// Waits until `n` jobs of `queue` are acknowledged in Redis (not merely handled), sampling this
/// process's RSS meanwhile; returns the highest sample in MB.
async fn wait_until_acknowledged(
    services: &Services,
    queue: &str,
    n: usize,
    started: Instant,
) -> anyhow::Result<f64> {
    let mut peak = 0.0f64;
    loop {
        peak = peak.max(rss_mb());
        if completed_total(services, queue).await as usize >= n {
            return Ok(peak);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "drain did not finish"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn drain_in_process(
    services: &Services,
    queue: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(Notify::new());
    let started = Instant::now();
    let worker = tokio::spawn(run_noop_worker(
        services.clone(),
        queue.to_owned(),
        concurrency,
        done.clone(),
        Arc::new(std::sync::Mutex::new(Vec::new())),
        stop.clone(),
    ));
    let peak = wait_until_acknowledged(services, queue, n, started).await?;
    let secs = started.elapsed().as_secs_f64();
    stop.notify_one();
    worker.await??;
    Ok((secs, peak.max(peak_rss_mb())))
}

async fn drain_with_children(
    services: &Services,
    queue: &str,
    n: usize,
    concurrency: usize,
    processes: usize,
) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "bench-drain",
                "--queue",
                queue,
                "--concurrency",
                &concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout);
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await?;
        anyhow::ensure!(line.trim() == "ready", "child said {line:?}");
        children.push((child, lines));
    }
    let started = Instant::now();
    for (child, _) in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            tokio::io::AsyncWriteExt::write_all(stdin, b"go\n").await?;
        }
    }
    wait_until_acknowledged(services, queue, n, started).await?;
    let secs = started.elapsed().as_secs_f64();
    let mut peak: f64 = 0.0;
    for (mut child, mut lines) in children {
        drop(child.stdin.take()); // EOF: the child stops and reports its peak RSS
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await?;
        if let Some(mb) = line.trim().strip_prefix("peak_rss_mb ") {
            peak = peak.max(mb.parse().unwrap_or(0.0));
        }
        let _ = child.wait().await;
    }
    Ok((secs, peak))
}

/// A child drain process: prints `ready`, starts its worker on `go`, stops at end of stdin and
/// prints its peak RSS.
pub async fn drain_child(queue: String, concurrency: usize) -> anyhow::Result<()> {
    let services = Services::build(bench_config()?)?;
    println!("ready");
    std::io::stdout().flush()?;
    let stdin_lines = tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let _go = lines.next();
        // Wait for EOF.
        for _ in lines.by_ref() {}
    });
    let stop = Arc::new(Notify::new());
    let worker = tokio::spawn(run_noop_worker(
        services,
        queue,
        concurrency,
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
        stop.clone(),
    ));
    let _ = stdin_lines.await;
    stop.notify_one();
    worker.await??;
    println!("peak_rss_mb {:.1}", peak_rss_mb());
    Ok(())
}

async fn wakeup_latency(
    services: &Services,
    queue: &str,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let done = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(Notify::new());
    let worker = tokio::spawn(run_noop_worker(
        services.clone(),
        queue.to_owned(),
        4,
        done.clone(),
        latencies.clone(),
        stop.clone(),
    ));
    // Let the worker reach its idle wait first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..samples {
        let before = done.load(Ordering::Relaxed);
        services
            .producer
            .enqueue(spec(queue, i as u64, now_us()))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::Relaxed) == before {
            anyhow::ensure!(Instant::now() < deadline, "wake-up sample {i} never ran");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Idle again before the next sample.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.notify_one();
    worker.await??;
    let mut values: Vec<i64> = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    values.sort_unstable();
    let pick = |q: f64| -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let idx = ((values.len() as f64 - 1.0) * q).round() as usize;
        values[idx] as f64 / 1000.0
    };
    Ok((pick(0.5), pick(0.99)))
}
