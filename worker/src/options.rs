//! What one worker process is asked to do ([`WorkerOptions`]: queues, concurrency, leases,
//! grace; [`Flags`]: what `orderly-worker`'s command line changes) and the queue backends it
//! started ([`Backends`]). Kept apart from the runner so the registrar, which the runner
//! calls, can take both without depending on the runner back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use orderly::queue::{BackendSettings, BackendShared};

/// What one worker process does.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Queues served.
    pub queues: Vec<String>,
    /// Jobs at once per queue.
    pub concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Time running jobs get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Run the outbox relay in this process.
    pub relay: bool,
    /// Run the schedule loop (recurring jobs) in this process, after defining the built-in
    /// maintenance schedules.
    pub schedules: bool,
    /// Longest an idle worker waits before looking at the queue again without a wake-up.
    pub idle_poll: Duration,
    /// Port of the `/metrics` endpoint (`None`: no endpoint).
    pub metrics_port: Option<u16>,
}

impl Default for WorkerOptions {
    /// Every queue, 16 jobs at once, 30 s leases and grace, the relay and the schedule loop on,
    /// no metrics endpoint.
    fn default() -> Self {
        Self {
            queues: orderly::jobs::QUEUES
                .iter()
                .map(|q| q.as_str().to_owned())
                .collect(),
            concurrency: 16,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            relay: true,
            schedules: true,
            idle_poll: Duration::from_secs(5),
            metrics_port: None,
        }
    }
}

impl WorkerOptions {
    /// Options from config.
    pub fn from_config(config: &orderly::Config) -> Self {
        Self {
            // As listed; `orderly-worker` has already refused unknown names.
            queues: orderly::jobs::queues_to_serve(&config.worker.queues)
                .unwrap_or_else(|_| config.worker.queues.clone()),
            concurrency: config.worker.concurrency,
            lease: config.worker.lease,
            shutdown_grace: config.worker.shutdown_grace,
            relay: true,
            schedules: true,
            idle_poll: Duration::from_secs(5),
            metrics_port: config.worker.metrics_port,
        }
    }

    /// The options of an `orderly-worker` process: `flags` over `config`. The flags are written
    /// into `config.worker` too, so the services built from it agree. The error names the flag or
    /// variable at fault (`--queues is invalid: ...`).
    pub fn from_flags(config: &mut orderly::Config, flags: Flags) -> Result<Self, String> {
        let (listed, source) = match flags.queues {
            Some(flag) => (flag, "--queues"),
            None => (std::mem::take(&mut config.worker.queues), "WORKER_QUEUES"),
        };
        config.worker.queues = orderly::jobs::queues_to_serve(&listed)
            .map_err(|reason| format!("{source} is invalid: {reason}"))?;
        if let Some(concurrency) = flags.concurrency {
            if concurrency == 0 {
                return Err("--concurrency must be at least 1".to_owned());
            }
            config.worker.concurrency = concurrency;
        }
        let mut options = Self::from_config(config);
        options.relay = !flags.no_relay;
        Ok(options)
    }

    /// Settings for each queue's backend.
    pub fn backend_settings(&self) -> BackendSettings {
        BackendSettings {
            concurrency: self.concurrency,
            lease: self.lease,
            idle_poll: self.idle_poll,
            ..BackendSettings::default()
        }
    }
}

/// What `orderly-worker`'s command line asks for; each flag given wins over its variable.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--queues` (else `WORKER_QUEUES`).
    pub queues: Option<Vec<String>>,
    /// `--concurrency` (else `WORKER_CONCURRENCY`).
    pub concurrency: Option<usize>,
    /// `--no-relay`: the outbox relay runs in other processes.
    pub no_relay: bool,
}

/// The backends started by this process, for heartbeats and shutdown.
#[derive(Clone, Default)]
pub struct Backends(Arc<Mutex<Vec<Arc<BackendShared>>>>);

impl Backends {
    /// Remembers a backend.
    pub fn add(&self, shared: Arc<BackendShared>) {
        if let Ok(mut list) = self.0.lock() {
            list.push(shared);
        }
    }

    /// Every backend so far.
    pub fn all(&self) -> Vec<Arc<BackendShared>> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Jobs held across all backends.
    pub fn running(&self) -> usize {
        self.all().iter().map(|b| b.running()).sum()
    }
}
