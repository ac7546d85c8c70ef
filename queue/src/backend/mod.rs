//! The apalis 1.0 backend over our engine: what turns `WorkerBuilder::new(..).backend(..)` into a
//! worker that claims, leases, acks, retries and releases jobs in Redis.
//!
//! Per worker (one queue in one process):
//! - a **fetcher** task claims jobs only when the worker has a free slot (a semaphore of
//!   `concurrency` permits, held by each job until its handler returns), so a process never
//!   hoards jobs another process could run, and claims in batches when many slots are free;
//!   when the queue is empty it blocks on the queue's wake-up list (new work starts within
//!   milliseconds) or until the next scheduled job or lease deadline is due;
//! - a **lease keeper** renews every held lease each third of the lease time, in one call;
//! - a **cancel watcher** checks, while the worker holds jobs, which of them were asked to stop,
//!   and cancels their [`JobControl`] tokens;
//! - an **acker** batches completions into one script call per round trip;
//! - a **run-time flusher** writes, every few seconds, what the worker counted per job kind
//!   (attempts, failures, a histogram of run times; see [`crate::runtimes`]) in one pipelined
//!   batch, so the dashboard can show percentiles without the engine's scripts doing more;
//! - the backend's middleware ([`JobLayer`]) runs each job inside a span carrying its id, kind,
//!   attempt and request id, acks on success and, on failure, applies the job's retry policy.
//!
//! A partitioned queue (see [`crate::partitions`]) is served by one backend: the fetcher and the
//! acker claim from its partitions in rotation, and each held job remembers its partition, which
//! its acks, renewals, cancel checks and releases go to.
//!
//! No Redis error ever reaches apalis (which would stop the worker): every loop logs, backs off
//! and tries again, so a worker outlives a Redis restart.
//!
//! ## Layout
//! - this file: the apalis `Backend` ([`RedisBackend`]), its settings, the state its parts share
//!   ([`BackendShared`]: held leases, worker slots, the acker's channel, the stop token), what a
//!   handler reads about its job ([`JobInfo`]), and the small types the parts pass between them;
//! - `fetcher`: claiming jobs when slots are free and handing them to apalis;
//! - `lease`: the lease keeper;
//! - `cancel`: the cancel watcher;
//! - `control`: [`JobControl`], a running handler's handle on its own job (cancellation,
//!   progress, result);
//! - `acker`: batched acks, and the replacement claims that ride on them;
//! - `tally`: the run-time flusher;
//! - `layer`: the tower middleware around each job.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    task::Task,
    worker::context::WorkerContext,
};
use futures::{FutureExt, future::BoxFuture};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{engine::QueueEngine, job::ClaimedJob, runtimes::RuntimeRecorder};

mod acker;
mod cancel;
mod control;
mod fetcher;
mod layer;
mod lease;
mod tally;

pub use control::{JobControl, MAX_NOTE_CHARS, MAX_RESULT_BYTES, PROGRESS_INTERVAL};
pub use layer::{JobLayer, JobService};

/// What a handler can read about the job it runs (`Data<JobInfo>` in a handler's arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// Job id (the outbox id for jobs staged by the api).
    pub id: String,
    /// The queue the job was claimed from (one queue may carry several kinds; its name, whatever
    /// partition the job was in).
    pub queue: String,
    /// What the job is (`email.order_confirmation`), as given when it was enqueued; a handler
    /// serving several kinds can record or branch on it.
    pub kind: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The request that caused the job.
    pub request_id: Option<String>,
    /// Cancellation, progress and result of this run (detached outside a worker).
    pub control: JobControl,
}

impl JobInfo {
    /// Whether someone asked this job to stop (see [`JobControl`]).
    pub fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }

    /// Completes when someone asks this job to stop.
    pub async fn cancelled(&self) {
        self.control.cancelled().await
    }

    /// Reports progress (see [`JobControl::progress`]).
    pub async fn progress(&self, fraction: f64, note: &str) {
        self.control.progress(fraction, note).await
    }

    /// Keeps a small result on the job (see [`JobControl::set_result`]).
    pub async fn set_result(&self, result: &serde_json::Value) -> Result<(), crate::JobError> {
        self.control.set_result(result).await
    }
}

/// Settings of one backend.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Jobs run at once (the slots the fetcher fills).
    pub concurrency: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Longest idle wait before looking again even without a wake-up.
    pub idle_poll: Duration,
    /// How often, while it holds jobs, the worker checks whether any was asked to stop: the
    /// bound on how late a running job sees its cancel request.
    pub cancel_poll: Duration,
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_secs(5),
            cancel_poll: Duration::from_millis(250),
        }
    }
}

struct Held {
    /// The queue partition the job was claimed from.
    partition: String,
    lease: u64,
    slot: Option<OwnedSemaphorePermit>,
    /// Cancelled when someone asks the job to stop (the handler's [`JobControl`] holds it).
    cancel: CancellationToken,
}

/// State shared by a backend's fetcher, lease keeper, acker and middleware.
pub struct BackendShared {
    engine: QueueEngine,
    queue: String,
    /// The queue's partitions (the queue's name alone when it is not partitioned).
    partitions: Vec<String>,
    worker_id: String,
    settings: BackendSettings,
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<String, Held>>,
    acks: mpsc::UnboundedSender<AckCommand>,
    stop: CancellationToken,
    /// Attempts per kind counted since the last flush (see [`crate::runtimes`]).
    runtimes: RuntimeRecorder,
}

impl std::fmt::Debug for BackendShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendShared")
            .field("queue", &self.queue)
            .field("worker_id", &self.worker_id)
            .field("held", &self.running())
            .finish_non_exhaustive()
    }
}

enum AckCommand {
    /// A finished job (its partition, id and lease), with the worker slot it occupied: the
    /// acker reuses the slot to claim a replacement in the same call (or frees it).
    Ack(Lease, Option<OwnedSemaphorePermit>),
    Flush(oneshot::Sender<()>),
}

impl BackendShared {
    /// The queue this backend serves.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Jobs leased by this backend right now (running or about to start).
    pub fn running(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Records a job as held; returns the token that cancels it.
    fn hold(&self, job: &ClaimedJob, slot: Option<OwnedSemaphorePermit>) -> CancellationToken {
        let cancel = CancellationToken::new();
        if let Ok(mut held) = self.held.lock() {
            held.insert(
                job.id.clone(),
                Held {
                    partition: job.queue.clone(),
                    lease: job.lease,
                    slot,
                    cancel: cancel.clone(),
                },
            );
        }
        cancel
    }

    /// Cancels the tokens of the held jobs among `ids`; returns how many.
    fn signal_cancel(&self, ids: &[String]) -> usize {
        let Ok(held) = self.held.lock() else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| held.get(id))
            .filter(|h| !h.cancel.is_cancelled())
            .inspect(|h| h.cancel.cancel())
            .count()
    }

    fn unhold(&self, id: &str) -> Option<OwnedSemaphorePermit> {
        self.held
            .lock()
            .ok()
            .and_then(|mut held| held.remove(id))
            .and_then(|h| h.slot)
    }

    /// The held leases, by partition.
    fn leases(&self) -> Vec<(String, Vec<(String, u64)>)> {
        let Ok(held) = self.held.lock() else {
            return Vec::new();
        };
        let mut by_partition: Vec<(String, Vec<(String, u64)>)> = Vec::new();
        for (id, held) in held.iter() {
            let lease = (id.clone(), held.lease);
            match by_partition.iter_mut().find(|(p, _)| *p == held.partition) {
                Some((_, leases)) => leases.push(lease),
                None => by_partition.push((held.partition.clone(), vec![lease])),
            }
        }
        by_partition
    }

    /// Puts `leases` (by partition) back to ready and forgets them; returns how many went back.
    async fn release(&self, leases: &[(String, Vec<(String, u64)>)]) -> redis::RedisResult<usize> {
        let mut released = 0;
        for (partition, leases) in leases {
            released += self.engine.release(partition, leases).await?;
            for (id, _) in leases {
                self.unhold(id);
            }
        }
        Ok(released)
    }

    /// Stops claiming new jobs at once (jobs already running continue).
    pub fn stop_claiming(&self) {
        self.stop.cancel();
    }

    /// Waits until every queued ack has reached Redis (or Redis stayed unreachable for `timeout`).
    pub async fn flush_acks(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.acks.send(AckCommand::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Gives every job still held back to the queue with its attempt refunded. Called at the end
    /// of a graceful shutdown for jobs that did not finish within the grace period (and jobs
    /// claimed but never started). Returns how many were released.
    pub async fn release_held(&self) -> usize {
        let leases = self.leases();
        if leases.is_empty() {
            return 0;
        }
        match self.release(&leases).await {
            Ok(n) => {
                tracing::info!(queue = %self.queue, released = n, "released unfinished jobs back to the queue");
                n
            }
            Err(error) => {
                tracing::warn!(queue = %self.queue, %error, "could not release jobs; their leases will expire and they will run again");
                0
            }
        }
    }
}

/// An apalis backend reading jobs of one queue, decoded as `Args`.
pub struct RedisBackend<Args> {
    shared: Arc<BackendShared>,
    receiver: mpsc::Receiver<Task<Args>>,
    /// Taken at the first poll, when the fetcher and the acker start.
    start: Option<(
        mpsc::Sender<Task<Args>>,
        mpsc::UnboundedReceiver<AckCommand>,
    )>,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<Args> RedisBackend<Args>
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    /// A backend for `queue`, claiming as `worker_id`. Must be created inside a tokio runtime
    /// (it starts its acker task).
    pub fn new(
        engine: QueueEngine,
        queue: &str,
        worker_id: &str,
        settings: BackendSettings,
    ) -> Self {
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let concurrency = settings.concurrency.max(1);
        let shared = Arc::new(BackendShared {
            partitions: engine.partitions(queue),
            engine,
            queue: queue.to_owned(),
            worker_id: worker_id.to_owned(),
            settings,
            slots: Arc::new(Semaphore::new(concurrency)),
            held: Mutex::new(HashMap::new()),
            acks,
            stop: CancellationToken::new(),
            runtimes: RuntimeRecorder::default(),
        });
        let (sender, receiver) = mpsc::channel(concurrency);
        Self {
            shared,
            receiver,
            start: Some((sender, ack_rx)),
            closing: None,
            _args: PhantomData,
        }
    }

    /// The shared state, for the process to stop claiming, flush and release at shutdown, and
    /// to report running jobs in its heartbeat.
    pub fn shared(&self) -> Arc<BackendShared> {
        self.shared.clone()
    }
}

impl<Args> Backend for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    type Task = Task<Args>;
    type Error = std::io::Error;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // The first poll starts the fetcher, the acker and the lease keeper (they need the
        // worker context).
        if let Some((sender, acks)) = self.start.take() {
            tokio::spawn(acker::run_acker(self.shared.clone(), acks, sender.clone()));
            tokio::spawn(fetcher::run_fetcher(
                self.shared.clone(),
                sender,
                worker.clone(),
            ));
            tokio::spawn(lease::run_lease_keeper(self.shared.clone(), worker.clone()));
            tokio::spawn(cancel::run_cancel_watch(
                self.shared.clone(),
                worker.clone(),
            ));
            tokio::spawn(tally::run_flusher(self.shared.clone(), worker.clone()));
        }
        self.receiver.poll_recv(cx).map(|task| task.map(Ok))
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            self.shared.stop_claiming();
            self.receiver.close();
            // Jobs claimed but never handed to the worker go back to the queue.
            let mut unstarted = Vec::new();
            while let Ok(task) = self.receiver.try_recv() {
                if let Some(info) = task.ctx().data().get::<JobInfo>() {
                    unstarted.push(info.id.clone());
                }
            }
            let shared = self.shared.clone();
            self.closing = Some(
                async move {
                    let leases: Vec<_> = shared
                        .leases()
                        .into_iter()
                        .map(|(partition, leases)| {
                            let leases = leases
                                .into_iter()
                                .filter(|(id, _)| unstarted.contains(id))
                                .collect();
                            (partition, leases)
                        })
                        .collect();
                    let _ = shared.release(&leases).await;
                    shared.flush_acks(Duration::from_secs(10)).await;
                    let _ = shared.runtimes.flush(&shared.engine, &shared.queue).await;
                }
                .boxed(),
            );
        }
        self.closing
            .as_mut()
            .map(|f| f.poll_unpin(cx).map(Ok))
            .unwrap_or(Poll::Ready(Ok(())))
    }
}

impl<Args> BackendConfig for RedisBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = BackendSettings;
    type Layer = JobLayer;

    fn config(&self) -> &Self::Config {
        &self.shared.settings
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        JobLayer {
            shared: self.shared.clone(),
        }
    }
}

/// Capped exponential backoff for Redis errors inside the background loops.
struct ErrorBackoff(Duration);

impl ErrorBackoff {
    fn new() -> Self {
        Self(Duration::from_millis(50))
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(50);
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// A held job as its acks take it: its partition, id and lease token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    partition: String,
    id: String,
    token: u64,
}

/// The claimed job behind a task, for the middleware's ack/fail.
#[derive(Clone)]
struct ClaimedLease(Arc<ClaimedJob>);
