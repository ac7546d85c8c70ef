//! `orderly-worker`: parse the command line and config, then run jobs until SIGTERM
//! ([`orderly_worker::runner::run_until_signal`]).
//!
//! The queue benchmark is `orderly-bench queue` (in `bench/`); the reliability drills' worker is
//! the `orderly-drill-worker` test binary. Neither ships in this one.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use orderly::Config;
use orderly_worker::runner::{self, Flags, WorkerOptions};

// mimalloc instead of glibc's allocator: a request or a job makes many small allocations that
// live only as long as it does, which glibc serves with locks and periodic consolidation that
// showed up as a sixth of the api's CPU under the order load (docs/performance.md, seventh round).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "orderly-worker",
    version,
    about = "Orderly job worker",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Default)]
struct RunArgs {
    /// Queues to serve, comma-separated (default: WORKER_QUEUES, or all).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<String>>,
    /// Jobs run at once per queue (default: WORKER_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Do not run the outbox relay in this process.
    #[arg(long)]
    no_relay: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs (the default).
    Run(RunArgs),
    /// Exit 0 if the worker on this host heartbeats and Redis and PostgreSQL answer, else 1 with
    /// the reason on stderr (container health checks; see `orderly_worker::healthcheck`).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        Some(Command::Healthcheck) => return healthcheck(),
        None => cli.run,
    };
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let flags = Flags {
        queues: args.queues,
        concurrency: args.concurrency,
        no_relay: args.no_relay,
    };
    let options = match WorkerOptions::from_flags(&mut config, flags) {
        Ok(options) => options,
        Err(reason) => {
            eprintln!("configuration error: {reason}");
            return ExitCode::from(2);
        }
    };
    // Kept until main returns: dropping it sends the last buffered spans.
    let _telemetry = orderly::telemetry::init(&config.log, &config.traces, "orderly-worker");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(runner::run_until_signal(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "orderly-worker failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `orderly-worker healthcheck`: the checks of [`orderly_worker::healthcheck`] for this host,
/// with the same configuration the worker reads; no logging set up, so the only output is the
/// one line that says why it failed.
fn healthcheck() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("unhealthy: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("unhealthy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let host = runner::hostname();
    match rt.block_on(orderly_worker::healthcheck::check(&config, &host)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}
