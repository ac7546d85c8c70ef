//! The two measurements that need no api: the queue benchmark (`orderly-bench queue`, the
//! BullMQ-comparable protocol) at 1, 2 and 4 worker processes, and `pgbench`, the ceiling this
//! machine's PostgreSQL sets for one-transaction requests such as placing an order (at scale 1
//! every transaction updates the one branch row, as a flash sale updates one product; at a
//! larger scale the updates spread over that many branches).

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    Options, emit,
    stats::{median, round},
};

/// Runs the queue benchmark `options.runs` times per process count, each run a fresh
/// `orderly-bench queue` process (so its peak RSS is that run's alone); returns the medians per
/// process count.
pub async fn queue(options: &Options) -> anyhow::Result<Vec<Value>> {
    let mut medians = Vec::new();
    for processes in [1usize, 2, 4] {
        let mut enqueue = Vec::new();
        let mut process = Vec::new();
        let mut wake_p50 = Vec::new();
        let mut wake_p99 = Vec::new();
        let mut peak_rss: f64 = 0.0;
        for run in 1..=options.runs {
            let output = tokio::process::Command::new(std::env::current_exe()?)
                .args(["queue", "--jobs", "20000", "--producers", "50"])
                .args(["--concurrency", "50", "--processes", &processes.to_string()])
                .args([
                    "--wakeup-samples",
                    if processes == 1 { "200" } else { "20" },
                ])
                .env("REDIS_URL", &options.redis_url)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .context("running orderly-bench queue")?;
            anyhow::ensure!(
                output.status.success(),
                "orderly-bench queue failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let last = stdout.lines().last().context("no output")?;
            let result: Value = serde_json::from_str(last)?;
            let get = |k: &str| result[k].as_f64().unwrap_or(0.0);
            enqueue.push(get("enqueue_per_s"));
            process.push(get("process_per_s"));
            wake_p50.push(get("wakeup_p50_ms"));
            wake_p99.push(get("wakeup_p99_ms"));
            peak_rss = peak_rss.max(get("worker_peak_rss_mb"));
            emit(
                json!({"bench": "queue.run", "processes": processes, "run": run, "result": result}),
            );
        }
        let summary = json!({
            "bench": "queue",
            "N": 20000, "P": 50, "C": 50,
            "processes": processes,
            "runs": options.runs,
            "enqueue_per_s": median(&enqueue),
            "process_per_s": median(&process),
            "process_per_s_runs": process,
            "wakeup_p50_ms": round(median(&wake_p50), 2),
            "wakeup_p99_ms": round(median(&wake_p99), 2),
            "worker_peak_rss_mb": peak_rss,
        });
        emit(summary.clone());
        medians.push(summary);
    }
    Ok(medians)
}

/// `pgbench` with its default TPC-B-like script and 16 clients against a database of its own
/// on the same server, initialised at `scale` (`pgbench -i -s`); returns the median
/// transactions per second.
pub async fn pgbench(options: &Options, scale: u32) -> anyhow::Result<Value> {
    let url = format!("{}/orderly_bench_pgbench", options.pg_server_url);
    crate::recreate_database(options, "orderly_bench_pgbench").await?;
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string(), &url])
        .output()
        .await
        .context("running pgbench -i (PostgreSQL's pgbench)")?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut tps = Vec::new();
    for run in 1..=options.runs {
        // As before the api's runs: the initialisation's writes are on disk, and the disk is
        // quiet, before a run begins.
        let settling = crate::disk::settle(options).await?;
        let output = tokio::process::Command::new("pgbench")
            .args([
                "-c",
                "16",
                "-j",
                "2",
                "-T",
                &options.duration.as_secs().to_string(),
            ])
            .arg(&url)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no tps line in pgbench output: {stdout}"))?;
        tps.push(round(value, 0));
        emit(
            json!({"bench": "pgbench.run", "scale": scale, "run": run, "tps": round(value, 0), "disk_before_run": settling.to_json()}),
        );
    }
    crate::drop_database(options, "orderly_bench_pgbench").await?;
    let summary = json!({
        "bench": "pgbench",
        "script": "tpcb-like (default)",
        "scale": scale,
        "clients": 16,
        "threads": 2,
        "duration_s": options.duration.as_secs(),
        "runs": options.runs,
        "tps": median(&tps),
        "tps_runs": tps,
    });
    emit(summary.clone());
    // Let autovacuum and checkpoints from the pgbench tables settle before the next phase.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(summary)
}
