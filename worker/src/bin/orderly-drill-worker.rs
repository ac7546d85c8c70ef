//! `orderly-drill-worker`: the worker process the reliability drills (`tests/worker/drills.rs`)
//! start and `kill -9`. A test binary of this crate (so the drills find it through
//! `CARGO_BIN_EXE_orderly-drill-worker`); it is not `orderly-worker` and is not shipped.
//!
//! It serves one queue through the real runner ([`runner::run_with`]) with a handler that records
//! every execution as `<pid> <job id>` in a Redis list, then simulates `--work-ms` of work; it
//! runs until SIGTERM (or SIGKILL, which is the point) and prints `ready` once it serves. Its
//! config comes from the environment, as `orderly-worker`'s does.

// `ready` on standard output is what the drills wait for.
#![allow(clippy::print_stdout)]

use std::{io::Write, time::Duration};

use apalis_core::task::data::Data;
use clap::Parser;
use orderly::{
    Config, Services,
    queue::{JobError, JobInfo},
};
use orderly_worker::{
    context::JobContext,
    registrar::Registrar,
    runner::{self, WorkerOptions},
};

#[derive(Parser)]
#[command(
    name = "orderly-drill-worker",
    about = "The reliability drills' worker (a test binary)"
)]
struct Cli {
    /// Queue to serve.
    #[arg(long)]
    queue: String,
    /// Worker concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Simulated work per job, in ms.
    #[arg(long, default_value_t = 2)]
    work_ms: u64,
    /// Lease length, in ms.
    #[arg(long, default_value_t = 1000)]
    lease_ms: u64,
    /// Redis list receiving `<pid> <job id>` per execution.
    #[arg(long)]
    record_to: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Installed first, so a SIGTERM during start-up is a graceful stop.
    let shutdown = runner::shutdown_signal();
    let services = Services::build(Config::from_env()?)?;
    let options = WorkerOptions {
        queues: vec![cli.queue.clone()],
        concurrency: cli.concurrency,
        lease: Duration::from_millis(cli.lease_ms),
        shutdown_grace: Duration::from_secs(10),
        relay: false,
        schedules: false,
        ..WorkerOptions::default()
    };
    let work = Duration::from_millis(cli.work_ms);
    let record_to = cli.record_to;
    let queue = cli.queue;
    let redis = services.redis.clone();
    let pid = std::process::id();
    let register = move |workers: Registrar| {
        // The payload is not read: only executions are counted.
        let handler =
            move |_job: serde_json::Value, _ctx: Data<JobContext>, info: Data<JobInfo>| {
                let mut redis = redis.clone();
                let list = record_to.clone();
                let run = format!("{pid} {}", info.id);
                async move {
                    redis::cmd("RPUSH")
                        .arg(list)
                        .arg(run)
                        .query_async::<()>(&mut redis)
                        .await
                        .map_err(|e| JobError::retry(e.to_string()))?;
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    Ok::<(), JobError>(())
                }
            };
        workers.serve_queue::<serde_json::Value, _, _>(&queue, Duration::from_secs(30), handler)
    };
    println!("ready");
    std::io::stdout().flush()?;
    runner::run_with(services, options, shutdown, register).await
}
