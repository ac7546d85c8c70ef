//! `orderly-bench`: measures Orderly the way its users feel it, on the machine it runs on.
//!
//! Phases (each prints JSON lines; a human summary comes last and the whole result is written
//! to `--out`):
//! - `queue`: the queue benchmark (`orderly-bench queue`, BullMQ's protocol, in [`queue`]) at
//!   1, 2 and 4 worker processes: the scaling curve;
//! - `pgbench`: PostgreSQL's own TPC-B-like benchmark (scale 1), the ceiling for
//!   one-transaction requests;
//! - `orders`: placing orders (in [`orders`]), spread over many products and all for one
//!   product, without and with workers, each held against pgbench at a matching scale measured
//!   in the same phase; the CPU time per order of the api, PostgreSQL and Redis; the statements,
//!   round trips and row-lock hold of one order (through a counting proxy, [`pgwire`]); and no
//!   oversold stock;
//! - `system`: the release api and workers on a fresh database: cold start, idle and loaded
//!   memory, HTTP at saturation and at half of it (wrk), the workers draining real email and
//!   webhook jobs, and end-to-end latency from an order to its email and webhook.
//!
//! `bench/run.sh` builds the release binaries, makes sure PostgreSQL, Redis, wrk and pgbench are
//! there and runs this with the right arguments.
//!
//! `orderly-bench queue [--jobs N --producers P --concurrency C --processes K]` runs the queue
//! benchmark once and prints its JSON line (the `queue` phase runs it as a child process, so
//! each run's peak RSS is its own); `bench-drain` is its hidden drain child.

// Standard output is this program's report.
#![allow(clippy::print_stdout)]

mod baseline;
mod disk;
mod orders;
mod pgwire;
mod procs;
mod queue;
mod sinks;
mod stats;
mod system;
mod wrk;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "orderly-bench",
    about = "Orderly's system benchmark",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// PostgreSQL server URL without a database (`postgres://user@127.0.0.1:5432`).
    #[arg(long, env = "BENCH_PG_SERVER_URL", required = true)]
    pg_server_url: Option<String>,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Folder holding the release `orderly-api` and `orderly-worker`.
    #[arg(long, required = true)]
    bin_dir: Option<PathBuf>,
    /// Phases to run, comma-separated: queue, pgbench, orders, system.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "queue,pgbench,orders,system"
    )]
    only: Vec<String>,
    /// Runs per saturation measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Orders per second in the end-to-end phase, one run per rate (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    e2e_rates: Vec<u64>,
    /// Seconds of orders in the end-to-end phase.
    #[arg(long, default_value_t = 10)]
    e2e_secs: u64,
    /// `RUST_LOG` of the api and workers under test.
    #[arg(long, default_value = "warn")]
    rust_log: String,
    /// The slowest median flush (`fdatasync` of a small file), in milliseconds, of a disk that
    /// nothing else writes to: before each measured run the bench waits until flushes are this
    /// quick again (the `disk` module says why). The project's machines take 0.1–0.4 ms, so 1
    /// leaves room; raise it where the quiet disk is slower (a spinning disk takes about 10).
    #[arg(long, default_value_t = 1.0)]
    quiet_fsync_ms: f64,
    /// Where the full result (JSON) is written.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
}

/// Single measurements, instead of the phases.
#[derive(Subcommand, Debug)]
enum Command {
    /// The queue benchmark once: enqueue N jobs from P producers, drain at concurrency C with K
    /// processes, idle wake-up latency (reads REDIS_URL); the last line is one JSON object.
    Queue(queue::BenchArgs),
    /// A drain process of the queue benchmark (started by `queue --processes K`).
    #[command(hide = true)]
    BenchDrain {
        /// Queue to drain.
        #[arg(long)]
        queue: String,
        /// Worker concurrency.
        #[arg(long)]
        concurrency: usize,
    },
}

/// Settings every phase reads.
#[derive(Debug, Clone)]
pub struct Options {
    pub pg_server_url: String,
    pub redis_url: String,
    pub bin_dir: PathBuf,
    pub runs: usize,
    pub duration: Duration,
    pub wrk_threads: usize,
    pub e2e_rates: Vec<u64>,
    pub e2e_secs: u64,
    pub rust_log: String,
    /// See the `--quiet-fsync-ms` option.
    pub quiet_fsync_ms: f64,
}

/// Prints one result line.
pub fn emit(value: Value) {
    println!("{value}");
}

async fn psql(options: &Options, sql: &str) -> anyhow::Result<()> {
    psql_in(options, "postgres", sql).await
}

/// Runs `sql` in database `database`.
async fn psql_in(options: &Options, database: &str, sql: &str) -> anyhow::Result<()> {
    psql_output(options, database, "-qc", sql).await.map(drop)
}

/// What `sql` returns in database `database`, unaligned and without headers: a single value, or
/// a row's values separated by `|`.
pub async fn psql_value(options: &Options, database: &str, sql: &str) -> anyhow::Result<String> {
    psql_output(options, database, "-tAc", sql).await
}

/// psql's standard output (trimmed) for `sql` run with `flags`, failing on the first error.
async fn psql_output(
    options: &Options,
    database: &str,
    flags: &str,
    sql: &str,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("psql")
        .arg(format!("{}/{database}", options.pg_server_url))
        .args(["-v", "ON_ERROR_STOP=1", flags, sql])
        .output()
        .await
        .context("running psql")?;
    anyhow::ensure!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Drops (disconnecting any session) and creates database `name`.
pub async fn recreate_database(options: &Options, name: &str) -> anyhow::Result<()> {
    drop_database(options, name).await?;
    psql(options, &format!("create database \"{name}\"")).await
}

/// `VACUUM (ANALYZE)` of database `name` before a measured run of the `system` phase, as pgbench
/// vacuums its tables before each of its runs: every order leaves dead row versions (its pushed
/// outbox rows, the stock), and without this each run would inherit the previous
/// runs' on a server whose autovacuum is slow or off (the machine info records which). The
/// `orders` phase does without, as a live system must.
pub async fn vacuum(options: &Options, name: &str) -> anyhow::Result<()> {
    psql_in(options, name, "vacuum (analyze)").await
}

/// Drops database `name` if it exists.
pub async fn drop_database(options: &Options, name: &str) -> anyhow::Result<()> {
    psql(
        options,
        &format!("drop database if exists \"{name}\" with (force)"),
    )
    .await
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What the figures came from.
fn machine(options: &Options) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| stats::round(kb / 1_048_576.0, 1))
        .unwrap_or(0.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "memory_gib": mem_gib,
        "kernel": command_output("uname", &["-sr"]),
        "postgres": command_output("psql", &[&format!("{}/postgres", options.pg_server_url), "-tAc", "show server_version"]),
        "postgres_autovacuum": command_output("psql", &[&format!("{}/postgres", options.pg_server_url), "-tAc", "show autovacuum"]),
        "redis": command_output("redis-server", &["--version"]),
        "wrk": command_output("sh", &["-c", "wrk -v 2>&1 | head -1"]),
        "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Queue(args)) => {
            emit(queue::run(args).await?);
            return Ok(());
        }
        Some(Command::BenchDrain {
            queue: name,
            concurrency,
        }) => return queue::drain_child(name, concurrency).await,
        None => {}
    }
    // Required by clap unless a subcommand is given.
    let (Some(pg_server_url), Some(bin_dir)) = (cli.pg_server_url, cli.bin_dir) else {
        anyhow::bail!("--pg-server-url and --bin-dir are required");
    };
    let options = Options {
        pg_server_url: pg_server_url.trim_end_matches('/').to_owned(),
        redis_url: cli.redis_url,
        bin_dir,
        runs: cli.runs.max(1),
        duration: Duration::from_secs(cli.duration.max(1)),
        wrk_threads: cli.wrk_threads.max(1),
        e2e_rates: cli.e2e_rates.iter().map(|r| (*r).max(1)).collect(),
        e2e_secs: cli.e2e_secs.max(1),
        rust_log: cli.rust_log,
        quiet_fsync_ms: cli.quiet_fsync_ms,
    };
    let mut machine = machine(&options);
    machine["disk_probe_on_database_disk"] = json!(disk::probe_on_database_disk(&options).await);
    emit(json!({"bench": "machine", "machine": machine}));
    let wants = |phase: &str| cli.only.iter().any(|p| p == phase);

    let mut result = serde_json::Map::new();
    result.insert("machine".into(), machine);
    if wants("queue") {
        result.insert(
            "queue".into(),
            Value::Array(baseline::queue(&options).await?),
        );
    }
    if wants("pgbench") {
        result.insert("pgbench".into(), baseline::pgbench(&options, 1).await?);
    }
    if wants("orders") {
        result.insert("orders".into(), orders::run(&options).await?);
    }
    if wants("system") {
        result.insert("system".into(), system::run(&options).await?);
    }
    let result = Value::Object(result);
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&result)?)?;
    println!("\n{}", summary(&result));
    println!("full result: {}", cli.out.display());
    Ok(())
}

/// The human summary: one line per figure, next to its target where the project has one.
fn summary(result: &Value) -> String {
    let mut lines = vec!["== Orderly benchmark summary ==".to_owned()];
    let m = &result["machine"];
    lines.push(format!(
        "machine: {} cores, {} GiB, {}; PostgreSQL {}",
        m["cores"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or(""),
        m["postgres"].as_str().unwrap_or("")
    ));
    if let Some(queue) = result["queue"].as_array() {
        for q in queue {
            lines.push(format!(
                "queue, {} process(es): enqueue {}/s (target >= 40000), process {}/s (target >= 30000), wake-up p50 {} ms p99 {} ms, worker peak RSS {} MB",
                q["processes"], q["enqueue_per_s"], q["process_per_s"], q["wakeup_p50_ms"], q["wakeup_p99_ms"], q["worker_peak_rss_mb"]
            ));
        }
    }
    if let Some(tps) = result["pgbench"]["tps"].as_f64() {
        lines.push(format!(
            "pgbench (tpcb-like, scale 1, 16 clients): {tps} tps"
        ));
    }
    orders_summary(result, &mut lines);
    let system = &result["system"];
    if let Some(http) = system["http"].as_object() {
        for (name, h) in http {
            // Reads measured while orders arrive at a fixed rate: a shape of its own.
            if h.get("reads_rps").is_some() {
                lines.push(format!(
                    "http {name}: {} req/s, p50 {} ms, p99 {} ms, while orders at {}/s had p99 {} ms; non-2xx {}",
                    h["reads_rps"],
                    h["reads_p50_ms"],
                    h["reads_p99_ms"],
                    h["orders_rps"],
                    h["orders_p99_ms"],
                    h["non_2xx_or_errors"]
                ));
                continue;
            }
            lines.push(format!(
                "http {name}: {} req/s at saturation; at {} req/s: p50 {} ms, p99 {} ms, max {} ms; non-2xx {}",
                h["saturation_rps"],
                h["fixed_rate_achieved_rps"],
                h["fixed_rate_p50_ms"],
                h["fixed_rate_p99_ms"],
                h["fixed_rate_max_ms"],
                h["non_2xx_or_errors"]
            ));
        }
    }
    let c = &system["product_cache"];
    if c.is_object() {
        lines.push(format!(
            "product by id, one client: uncached p50 {} ms, Redis hit p50 {} ms, near-cache hit p50 {} ms",
            c["uncached_p50_ms"], c["cached_p50_ms"], c["near_p50_ms"]
        ));
    }
    let d = &system["drain"];
    if d.is_object() {
        lines.push(format!(
            "drain: {} email and webhook jobs in {} s with {} workers = {} jobs/s",
            d["jobs"], d["seconds"], d["workers"], d["jobs_per_s"]
        ));
    }
    for e in system["end_to_end"].as_array().into_iter().flatten() {
        lines.push(format!(
            "end to end at {} orders/s: email p50 {} ms p99 {} ms (target p99 <= 100); webhook p50 {} ms p99 {} ms",
            e["order_rate_per_s"], e["email_p50_ms"], e["email_p99_ms"], e["webhook_p50_ms"], e["webhook_p99_ms"]
        ));
    }
    let s = &system["startup"];
    let f = &system["footprint"];
    if s.is_object() {
        lines.push(format!(
            "footprint: api right after seeding {} MB (its password hashes), idle {} MB, under HTTP load {} MB; workers idle {} MB, under load {} MB (targets <= 60 MB); binaries api {} MB, worker {} MB; cold start api {} ms, workers {} ms",
            s["api_rss_mb_after_seeding"], s["api_idle_rss_mb"], f["api_peak_rss_mb_http_load"], s["worker_idle_rss_mb"], f["worker_peak_rss_mb_drain_and_e2e"], s["api_binary_mb"], s["worker_binary_mb"], s["api_cold_start_to_ready_ms"], s["worker_cold_start_to_ready_ms"]
        ));
    }
    lines.join("\n")
}

/// The `orders` phase's lines: per scenario and worker count, then the anatomy and the stock.
fn orders_summary(result: &Value, lines: &mut Vec<String>) {
    let orders = &result["orders"];
    if !orders.is_object() {
        return;
    }
    for p in orders["pgbench"].as_array().into_iter().flatten() {
        lines.push(format!(
            "pgbench (tpcb-like, scale {}, 16 clients): {} tps",
            p["scale"], p["tps"]
        ));
    }
    let autovacuum = result["machine"]["postgres_autovacuum"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    lines.push(format!(
        "orders: no VACUUM between runs (autovacuum {autovacuum}); fixed rate at half of saturation"
    ));
    // A target is printed only where the scenario has one.
    let target = |value: &Value, label: &str| match value.as_f64() {
        Some(max) => format!(" (target {label} {max})"),
        None => String::new(),
    };
    for o in orders["scenarios"].as_array().into_iter().flatten() {
        let t = &o["targets"];
        let cpu = &o["cpu_us_per_request"];
        let workers_cpu = if cpu["workers"].is_null() {
            String::new()
        } else {
            format!(", workers {}", cpu["workers"])
        };
        lines.push(format!(
            "orders {} ({} products), {} workers: {} orders/s = {}× pgbench scale {}, target >= {}; {} orders per statement; saturation p50 {} ms, p99 {} ms{}; at {} orders/s p99 {} ms{} ({} checkpoints began meanwhile); non-2xx {}{}; CPU µs per order: api {}, postgres {}, redis {}{}, wrk {}, whole machine {} (idle {}, stolen {}); targets {}",
            o["scenario"].as_str().unwrap_or(""),
            o["products"],
            o["workers"],
            o["saturation_rps"],
            o["ratio_to_pgbench"],
            o["pgbench_scale"],
            t["ratio_to_pgbench_min"],
            o["orders_per_statement"],
            o["saturation_p50_ms"],
            o["saturation_p99_ms"],
            target(&t["saturation_p99_max_ms"], "<="),
            o["fixed_rate_achieved_rps"],
            o["fixed_rate_p99_ms"],
            target(&t["fixed_rate_p99_max_ms"], "<="),
            o["fixed_rate_checkpoints"],
            o["non_2xx_or_errors"],
            target(&t["non_2xx_or_errors_max"], "<="),
            cpu["api"],
            cpu["postgres"],
            cpu["redis"],
            workers_cpu,
            cpu["wrk"],
            cpu["machine"],
            cpu["machine_idle_share"],
            cpu["machine_steal_share"],
            if o["meets_targets"].as_bool() == Some(true) { "met" } else { "missed" },
        ));
        let stages = &o["order_stages_mean_ms"];
        lines.push(format!(
            "  where an order's time went (mean ms): request {}: quote {}, write {} (waiting for a statement {}, its statement {}, the rest {}), stock read {}",
            stages["request"],
            stages["quote"],
            stages["write"],
            stages["waiting_for_statement"],
            stages["statement"],
            stages["write_rest"],
            stages["stock_read"],
        ));
        let tails = &o["half_load_order_stages"];
        if tails.is_object() {
            let stage = |name: &str| {
                format!(
                    "{} {}/{}",
                    name.replace('_', " "),
                    tails[name]["mean_ms"],
                    tails[name]["p99_ms"]
                )
            };
            lines.push(format!(
                "  at half load (mean/p99 ms, p99 from the buckets): {}; {}, {}, {}, {}, {}",
                stage("request"),
                stage("quote"),
                stage("write"),
                stage("waiting_for_statement"),
                stage("statement"),
                stage("stock_read"),
            ));
            let fixed_cpu = &o["fixed_rate_cpu_us_per_request"];
            lines.push(format!(
                "  at half load: {} orders per statement; CPU µs per order: api {}, postgres {}, redis {}, whole machine {} (idle {})",
                o["half_load_orders_per_statement"],
                fixed_cpu["api"],
                fixed_cpu["postgres"],
                fixed_cpu["redis"],
                fixed_cpu["machine"],
                fixed_cpu["machine_idle_share"],
            ));
        }
    }
    for a in orders["anatomy"].as_array().into_iter().flatten() {
        lines.push(format!(
            "order anatomy, {} (one at a time, {} orders): per order {} statements, {} round trips ({} of them pool pings), {} transactions, {} prepares; row lock held p50 {} µs, p99 {} µs; order p50 {} ms",
            a["scenario"].as_str().unwrap_or(""),
            a["orders"],
            a["statements_per_order"],
            a["round_trips_per_order"],
            a["pings_per_order"],
            a["transactions_per_order"],
            a["prepares_per_order"],
            a["lock_hold_p50_us"],
            a["lock_hold_p99_us"],
            a["order_p50_ms"],
        ));
    }
    let s = &orders["hot_stock"];
    if s.is_object() {
        lines.push(format!(
            "hot product stock: {} before, {} after, {} units sold: oversold {}",
            s["stock_before"], s["stock_after"], s["units_sold"], s["oversold"]
        ));
    }
}
