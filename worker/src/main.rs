//! `orderly-worker`: parse the command line and config, then run jobs until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use orderly::{Config, Services};
use orderly_worker::runner::{self, WorkerOptions};

#[derive(Parser)]
#[command(name = "orderly-worker", version, about = "Orderly job worker")]
struct Cli {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(queues) = cli.queues {
        for queue in &queues {
            if !orderly::jobs::QUEUES.contains(&queue.as_str()) {
                eprintln!(
                    "configuration error: --queues: unknown queue {queue:?} (known: {})",
                    orderly::jobs::QUEUES.join(", ")
                );
                return ExitCode::from(2);
            }
        }
        config.worker.queues = queues;
    }
    if let Some(concurrency) = cli.concurrency {
        if concurrency == 0 {
            eprintln!("configuration error: --concurrency must be at least 1");
            return ExitCode::from(2);
        }
        config.worker.concurrency = concurrency;
    }
    orderly::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let mut options = WorkerOptions::from_config(&config);
        options.relay = !cli.no_relay;
        let services = Services::build(config)?;
        runner::run(services, options, orderly_worker::runner::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "orderly-worker failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
