//! The worker process: one apalis worker per queue it serves, under one `Monitor`, plus the
//! heartbeat that shows the process on the dashboard, the outbox relay and the schedule loop
//! (recurring jobs: every process runs it, each tick still makes one job), beside which the
//! report schedules stored in PostgreSQL are mirrored into the engine at start and every minute.
//!
//! Shutdown (SIGTERM/SIGINT, or the future given to [`run`]): claiming stops at once, running
//! jobs get `WORKER_SHUTDOWN_GRACE_SECS` to finish, whatever is left is released back to the
//! queue with its attempt refunded, the heartbeat is removed, and the process exits 0.

use std::{future::Future, time::Duration};

use orderly::{
    Config, Services,
    queue::{WorkerInfo, registry::HEARTBEAT_EVERY},
};
use tokio_util::sync::CancellationToken;

pub use crate::options::{Backends, Flags, WorkerOptions};
use crate::{context::JobContext, registrar::Registrar};

/// A unique id for this process: `host:pid:random`.
pub fn worker_id() -> String {
    format!(
        "{}:{}:{:06x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// The machine's host name (from the kernel, no extra dependency).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The `orderly-worker` process once its command line is read: builds the services from `config`
/// and runs every shop job handler with `options` until SIGTERM or SIGINT.
pub async fn run_until_signal(config: Config, options: WorkerOptions) -> anyhow::Result<()> {
    // Installed before anything else, so an early SIGTERM is a graceful stop, not a kill.
    let signal = shutdown_signal();
    let services = Services::build(config)?;
    run(services, options, signal).await
}

/// Runs the worker process with every shop job handler until `shutdown` resolves, then shuts
/// down gracefully. Serves `/metrics` on `options.metrics_port` (on the configured `HOST`) when
/// it is set.
pub async fn run(
    services: Services,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_listener = match options.metrics_port {
        Some(port) => {
            let address = std::net::SocketAddr::new(services.config.http.host, port);
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind the metrics port {address}: {e}"))?;
            tracing::info!(address = %listener.local_addr()?, "worker metrics listening");
            Some(listener)
        }
        None => None,
    };
    run_with_metrics_listener(services, options, metrics_listener, shutdown).await
}

/// [`run`] with the `/metrics` endpoint on a listener the caller bound (tests bind port 0 and
/// read the port back); `None` serves no metrics.
pub async fn run_with_metrics_listener(
    services: Services,
    options: WorkerOptions,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_process(
        services,
        options,
        metrics_listener,
        shutdown,
        crate::jobs::register_all,
    )
    .await
}

/// How a process registers its handlers (the shop's, or a benchmark's) on its [`Registrar`].
pub trait Register: FnOnce(Registrar) -> Registrar {}

impl<F> Register for F where F: FnOnce(Registrar) -> Registrar {}

/// Runs a worker process whose workers `register` sets up: the same heartbeat, relay and
/// graceful shutdown whatever the handlers are (the benchmark and the drills use this).
pub async fn run_with(
    services: Services,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    register: impl Register,
) -> anyhow::Result<()> {
    run_process(services, options, None, shutdown, register).await
}

async fn run_process(
    services: Services,
    options: WorkerOptions,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    register: impl Register,
) -> anyhow::Result<()> {
    // Installed before any job runs, so no outcome is recorded into the void.
    orderly::queue::metrics::prometheus();
    let id = worker_id();
    let backends = Backends::default();
    let stop = CancellationToken::new();
    let context = JobContext::new(services.clone()).await?;

    let monitor = register(Registrar::new(&context, &options, &id, &backends)).finish()?;

    let started_at_ms = chrono::Utc::now().timestamp_millis();
    let heartbeat = tokio::spawn(run_heartbeat(
        services.clone(),
        WorkerInfo {
            id: id.clone(),
            host: hostname(),
            pid: std::process::id(),
            queues: options.queues.clone(),
            concurrency: options.concurrency,
            started_at_ms,
            running: 0,
            last_heartbeat_ms: started_at_ms,
        },
        backends.clone(),
        stop.clone(),
    ));
    let relay = options.relay.then(|| {
        let config = &services.config.worker;
        tokio::spawn(services.outbox.clone().run_relay(
            Duration::from_secs(1),
            Duration::from_secs(5),
            config.outbox_retention,
            stop.clone(),
        ))
    });
    let scheduler = if options.schedules {
        define_builtin_schedules(&services).await;
        reconcile_report_schedules(&services).await;
        let ticks = services
            .schedules
            .clone()
            .run(SCHEDULE_REFRESH, stop.clone());
        let reconciler = keep_report_schedules_reconciled(services.clone(), stop.clone());
        Some(tokio::spawn(async move {
            tokio::join!(ticks, reconciler);
        }))
    } else {
        None
    };
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(crate::metrics::serve(
            listener,
            services.clone(),
            stop.clone(),
        ))
    });
    tracing::info!(worker_id = %id, queues = ?options.queues, concurrency = options.concurrency, "worker ready");

    let signal_backends = backends.clone();
    let signal_stop = stop.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown signal received; no new jobs will be claimed");
        for backend in signal_backends.all() {
            backend.stop_claiming();
        }
        signal_stop.cancel();
        Ok(())
    };
    let result = monitor
        .shutdown_timeout(options.shutdown_grace)
        .run_with_signal(signal)
        .await;
    if let Err(error) = &result {
        tracing::warn!(%error, "workers stopped with an error");
    }

    // Whatever did not finish within the grace period goes back to its queue; acks of what did
    // finish are flushed first so they are not released by mistake.
    for backend in backends.all() {
        backend.flush_acks(Duration::from_secs(5)).await;
        backend.release_held().await;
    }
    stop.cancel();
    let _ = heartbeat.await;
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    if let Err(error) = services.queue.deregister(&id).await {
        tracing::warn!(%error, "could not remove the heartbeat; it expires by itself");
    }
    tracing::info!(worker_id = %id, "worker stopped");
    Ok(())
}

/// The longest a schedule change (new, paused, resumed) waits to be seen by a running loop.
const SCHEDULE_REFRESH: Duration = Duration::from_secs(1);

/// Defines the built-in maintenance schedules (again: their state is kept). A failure is
/// logged, not fatal: the loop still runs whatever is defined, and the next start retries.
async fn define_builtin_schedules(services: &Services) {
    let builtin =
        orderly::maintenance::schedules(&services.config.maintenance, services.jobs.settings());
    for def in builtin {
        if let Err(error) = services.schedules.define(&def).await {
            tracing::warn!(schedule = %def.name, %error, "could not define a built-in schedule");
        }
    }
}

/// How often a worker process brings the engine's report schedules in line with their rows.
const REPORT_SCHEDULE_RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Mirrors the report schedules stored in PostgreSQL into the engine (see
/// `ReportScheduleService::reconcile`): a row whose engine schedule a crash or a Redis failure
/// left behind is defined, one deleted is removed. A failure is logged, not fatal.
async fn reconcile_report_schedules(services: &Services) {
    if let Err(error) = services.report_schedules.reconcile().await {
        tracing::warn!(%error, "could not reconcile the report schedules");
    }
}

/// [`reconcile_report_schedules`] every [`REPORT_SCHEDULE_RECONCILE_EVERY`] until `stop`.
async fn keep_report_schedules_reconciled(services: Services, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_SCHEDULE_RECONCILE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        reconcile_report_schedules(&services).await;
    }
}

async fn run_heartbeat(
    services: Services,
    mut info: WorkerInfo,
    backends: Backends,
    stop: CancellationToken,
) {
    loop {
        info.running = backends.running();
        info.last_heartbeat_ms = chrono::Utc::now().timestamp_millis();
        orderly::queue::metrics::worker_process(&info, true);
        if let Err(error) = services.queue.heartbeat(&info).await {
            tracing::warn!(%error, "heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stop.cancelled() => {
                orderly::queue::metrics::worker_process(&info, false);
                return;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT; see [`orderly::shutdown::signal`].
pub use orderly::shutdown::signal as shutdown_signal;
