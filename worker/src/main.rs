//! `orderly-worker`: parse the command line and config, then run jobs until SIGTERM, or run the
//! queue benchmark.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use orderly::{Config, Services};
use orderly_worker::{
    bench::{self, BenchArgs},
    runner::{self, WorkerOptions},
};

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
    /// Queue benchmark: enqueue N jobs from P producers, drain at concurrency C (reads REDIS_URL).
    Bench {
        /// Jobs to enqueue and then drain (N), all on a benchmark queue of their own.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// Concurrent producers, each awaiting each push.
        #[arg(long, default_value_t = 50)]
        producers: usize,
        /// Worker concurrency per process.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Worker processes draining the queue.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Idle wake-up latency samples.
        #[arg(long, default_value_t = 200)]
        wakeup_samples: usize,
    },
    /// A drill worker: the benchmark handler with simulated work, recording every execution
    /// (used by the reliability drills, which kill these processes).
    #[command(hide = true)]
    DrillWorker {
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
    },
    /// A benchmark drain process (started by `bench --processes K`).
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|error| {
        eprintln!("cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "orderly-worker failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench {
            jobs,
            producers,
            concurrency,
            processes,
            wakeup_samples,
        }) => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            finish(rt.block_on(async move {
                let args = BenchArgs {
                    jobs,
                    producers,
                    concurrency,
                    processes,
                    wakeup_samples,
                };
                let result = bench::run(args).await?;
                #[allow(clippy::print_stdout)] // the result line is the command's output
                {
                    println!("{result}");
                }
                Ok(())
            }))
        }
        Some(Command::BenchDrain { queue, concurrency }) => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            finish(rt.block_on(bench::drain_child(queue, concurrency)))
        }
        Some(Command::DrillWorker {
            queue,
            concurrency,
            work_ms,
            lease_ms,
            record_to,
        }) => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let behaviour = bench::Behaviour {
                work: std::time::Duration::from_millis(work_ms),
                record_to: Some(record_to),
            };
            finish(rt.block_on(bench::drill_worker(
                queue,
                concurrency,
                std::time::Duration::from_millis(lease_ms),
                behaviour,
            )))
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let (listed, source) = match args.queues {
        Some(flag) => (flag, "--queues"),
        None => (std::mem::take(&mut config.worker.queues), "WORKER_QUEUES"),
    };
    match orderly::jobs::queues_to_serve(&listed) {
        Ok(queues) => config.worker.queues = queues,
        Err(reason) => {
            eprintln!("configuration error: {source} is invalid: {reason}");
            return ExitCode::from(2);
        }
    }
    if let Some(concurrency) = args.concurrency {
        if concurrency == 0 {
            eprintln!("configuration error: --concurrency must be at least 1");
            return ExitCode::from(2);
        }
        config.worker.concurrency = concurrency;
    }
    orderly::telemetry::init(&config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    finish(rt.block_on(async move {
        // Installed before anything else, so an early SIGTERM is a graceful stop, not a kill.
        let signal = runner::shutdown_signal();
        let mut options = WorkerOptions::from_config(&config);
        options.relay = !args.no_relay;
        let services = Services::build(config)?;
        runner::run(services, options, signal).await
    }))
}
