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
//! - an **acker** batches completions into one script call per round trip;
//! - the backend's middleware ([`JobLayer`]) runs each job inside a span carrying its id, kind,
//!   attempt and request id, acks on success and, on failure, applies the job's retry policy.
//!
//! No Redis error ever reaches apalis (which would stop the worker): every loop logs, backs off
//! and tries again, so a worker outlives a Redis restart.

use std::{
    collections::HashMap,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    error::BoxDynError,
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::{
    engine::{Claim, QueueEngine},
    job::{ClaimedJob, JobError},
};

/// What a handler can read about the job it runs (`Data<JobInfo>` in a handler's arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// Job id (the outbox id for jobs staged by the api).
    pub id: String,
    /// The queue the job was claimed from (one queue may carry several kinds).
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
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_secs(5),
        }
    }
}

struct Held {
    lease: u64,
    slot: Option<OwnedSemaphorePermit>,
}

/// State shared by a backend's fetcher, lease keeper, acker and middleware.
pub struct BackendShared {
    engine: QueueEngine,
    queue: String,
    worker_id: String,
    settings: BackendSettings,
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<String, Held>>,
    acks: mpsc::UnboundedSender<AckCommand>,
    stop: CancellationToken,
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
    /// A finished job, with the worker slot it occupied: the acker reuses the slot to claim a
    /// replacement in the same call (or frees it).
    Ack(String, u64, Option<OwnedSemaphorePermit>),
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

    fn hold(&self, id: &str, lease: u64, slot: Option<OwnedSemaphorePermit>) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(id.to_owned(), Held { lease, slot });
        }
    }

    fn unhold(&self, id: &str) -> Option<OwnedSemaphorePermit> {
        self.held
            .lock()
            .ok()
            .and_then(|mut held| held.remove(id))
            .and_then(|h| h.slot)
    }

    fn leases(&self) -> Vec<(String, u64)> {
        self.held
            .lock()
            .map(|h| {
                h.iter()
                    .map(|(id, held)| (id.clone(), held.lease))
                    .collect()
            })
            .unwrap_or_default()
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
        match self.engine.release(&self.queue, &leases).await {
            Ok(n) => {
                for (id, _) in &leases {
                    self.unhold(id);
                }
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
            engine,
            queue: queue.to_owned(),
            worker_id: worker_id.to_owned(),
            settings,
            slots: Arc::new(Semaphore::new(concurrency)),
            held: Mutex::new(HashMap::new()),
            acks,
            stop: CancellationToken::new(),
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
            tokio::spawn(run_acker(self.shared.clone(), acks, sender.clone()));
            tokio::spawn(run_fetcher(self.shared.clone(), sender, worker.clone()));
            tokio::spawn(run_lease_keeper(self.shared.clone(), worker.clone()));
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
                        .filter(|(id, _)| unstarted.contains(id))
                        .collect();
                    if !leases.is_empty() {
                        let _ = shared.engine.release(&shared.queue, &leases).await;
                        for (id, _) in &leases {
                            shared.unhold(id);
                        }
                    }
                    shared.flush_acks(Duration::from_secs(10)).await;
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

async fn run_fetcher<Args>(
    shared: Arc<BackendShared>,
    sender: mpsc::Sender<Task<Args>>,
    worker: WorkerContext,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let mut blocking = None;
    let mut backoff = ErrorBackoff::new();
    let stop = shared.stop.clone();
    loop {
        if stop.is_cancelled() || worker.is_shutting_down() {
            break;
        }
        // Wait for a free slot, then take every other free slot too: the claim size is the
        // worker's spare capacity, so claims batch under load and never over-claim.
        let mut slots = tokio::select! {
            permit = shared.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        while let Ok(more) = shared.slots.clone().try_acquire_owned() {
            slots.merge(more);
        }
        let wanted = slots.num_permits();
        match shared
            .engine
            .claim(
                &shared.queue,
                &shared.worker_id,
                wanted,
                shared.settings.lease,
            )
            .await
        {
            Ok(claim) if !claim.jobs.is_empty() => {
                backoff.reset();
                deliver(&shared, &sender, claim.jobs, slots).await;
            }
            Ok(claim) => {
                backoff.reset();
                drop(slots);
                let wait = claim
                    .next_wake_in
                    .unwrap_or(shared.settings.idle_poll)
                    .min(shared.settings.idle_poll);
                if wait.is_zero() {
                    continue;
                }
                if blocking.is_none() {
                    match shared.engine.blocking_connection().await {
                        Ok(conn) => blocking = Some(conn),
                        Err(error) => {
                            tracing::warn!(queue = %shared.queue, %error, "redis unavailable; retrying");
                            backoff.wait().await;
                            continue;
                        }
                    }
                }
                if let Some(conn) = blocking.as_mut() {
                    tokio::select! {
                        result = shared.engine.wait_for_work(conn, &shared.queue, wait) => {
                            if let Err(error) = result {
                                tracing::warn!(queue = %shared.queue, %error, "wait for work failed; reconnecting");
                                blocking = None;
                                backoff.wait().await;
                            }
                        }
                        _ = stop.cancelled() => break,
                    }
                }
            }
            Err(error) => {
                drop(slots);
                tracing::warn!(queue = %shared.queue, %error, "claim failed; retrying");
                backoff.wait().await;
            }
        }
    }
    tracing::debug!(queue = %shared.queue, "fetcher stopped");
}

/// Hands claimed jobs to the worker, each with one of `slots`' permits; jobs that cannot be
/// decoded die at once (no retry can fix a payload), jobs the worker no longer takes go back.
async fn deliver<Args>(
    shared: &BackendShared,
    sender: &mpsc::Sender<Task<Args>>,
    jobs: Vec<ClaimedJob>,
    mut slots: OwnedSemaphorePermit,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    for job in jobs {
        let slot = slots.split(1);
        shared.hold(&job.id, job.lease, slot);
        match decode_task::<Args>(&job) {
            Ok(task) => {
                if sender.send(task).await.is_err() {
                    let _ = shared
                        .engine
                        .release(&shared.queue, &[(job.id.clone(), job.lease)])
                        .await;
                    shared.unhold(&job.id);
                }
            }
            Err(error) => {
                tracing::error!(queue = %shared.queue, job_id = %job.id, kind = %job.kind, %error, "undecodable job payload; job is dead");
                let _ = shared
                    .engine
                    .fail(&job, &format!("undecodable payload: {error}"), None)
                    .await;
                crate::metrics::job_finished(&job.queue, &job.kind, "dead", 0.0);
                shared.unhold(&job.id);
            }
        }
    }
}

fn decode_task<Args: DeserializeOwned>(job: &ClaimedJob) -> Result<Task<Args>, serde_json::Error> {
    let args: Args = serde_json::from_str(&job.payload)?;
    let info = JobInfo {
        id: job.id.clone(),
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        request_id: job.request_id.clone(),
    };
    Ok(TaskBuilder::new(args)
        .task_id(TaskId::from_string(job.id.clone()))
        .attempt(job.attempt as usize)
        .max_attempts(job.max_attempts as usize)
        .priority(usize::from(job.priority.level()))
        .data(info)
        .data(ClaimedLease(Arc::new(job.clone())))
        .build())
}

/// The claimed job behind a task, for the middleware's ack/fail.
#[derive(Clone)]
struct ClaimedLease(Arc<ClaimedJob>);

async fn run_lease_keeper(shared: Arc<BackendShared>, worker: WorkerContext) {
    let every = shared.settings.lease / 3;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let leases = shared.leases();
        if leases.is_empty() {
            if worker.is_terminated() || (shared.stop.is_cancelled() && shared.running() == 0) {
                break;
            }
            continue;
        }
        match shared
            .engine
            .renew(&shared.queue, &leases, shared.settings.lease)
            .await
        {
            Ok(lost) => {
                for id in lost {
                    tracing::warn!(queue = %shared.queue, job_id = %id, "lease lost; the job may run again elsewhere");
                }
            }
            Err(error) => {
                tracing::warn!(queue = %shared.queue, %error, "lease renewal failed; retrying")
            }
        }
    }
}

/// How many ack (and claim) script calls one worker keeps in flight. With one, the worker and
/// Redis take turns: Redis idles while the worker decodes a claim and runs its jobs, and the
/// worker idles while Redis runs the script, so each side leaves much of its core unused (the
/// measurement is in docs/performance.md, "Where the limits are"). With two, the next batch is
/// on its way while the last one is being handled.
const ACK_CALLS_IN_FLIGHT: usize = 2;

/// What an ack call returns: the batch it carried, the worker slots that went with it, and the
/// engine's answer (which leases were acked, and the replacement jobs claimed, if any).
type AckOutcome = (
    Vec<(String, u64)>,
    Option<OwnedSemaphorePermit>,
    redis::RedisResult<(Vec<bool>, Option<Claim>)>,
);

/// One ack call: acks `batch` and, while the backend is claiming, uses `slots` to claim
/// replacements in the same script call.
fn ack_call(
    shared: Arc<BackendShared>,
    batch: Vec<(String, u64)>,
    slots: Option<OwnedSemaphorePermit>,
) -> BoxFuture<'static, AckOutcome> {
    async move {
        let wanted = slots.as_ref().map(|s| s.num_permits()).unwrap_or(0);
        let result = if !shared.stop.is_cancelled() && wanted > 0 {
            shared
                .engine
                .ack_and_claim(
                    &shared.queue,
                    &batch,
                    &shared.worker_id,
                    wanted,
                    shared.settings.lease,
                )
                .await
                .map(|(acked, claim)| (acked, Some(claim)))
        } else {
            shared
                .engine
                .ack(&shared.queue, &batch)
                .await
                .map(|acked| (acked, None))
        };
        (batch, slots, result)
    }
    .boxed()
}

/// Acks finished jobs in batches. While the backend is claiming, the slots the finished jobs
/// held are used to claim their replacements in the same script call, so a busy worker makes
/// one round trip per batch; the fetcher only steps in when the worker runs dry. Up to
/// [`ACK_CALLS_IN_FLIGHT`] calls run at once, each with at most an equal share of the worker's
/// slots; what finishes meanwhile waits for the next one.
async fn run_acker<Args>(
    shared: Arc<BackendShared>,
    mut commands: mpsc::UnboundedReceiver<AckCommand>,
    sender: mpsc::Sender<Task<Args>>,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let mut pending: Vec<(String, u64)> = Vec::new();
    let mut slots: Option<OwnedSemaphorePermit> = None;
    let mut waiting_flush: Vec<oneshot::Sender<()>> = Vec::new();
    let mut in_flight: FuturesUnordered<BoxFuture<'static, AckOutcome>> = FuturesUnordered::new();
    let mut closed = false;
    let mut backoff = ErrorBackoff::new();
    let batch_limit = shared
        .settings
        .concurrency
        .div_ceil(ACK_CALLS_IN_FLIGHT)
        .max(1);
    let take = |command: AckCommand,
                pending: &mut Vec<(String, u64)>,
                slots: &mut Option<OwnedSemaphorePermit>,
                waiting_flush: &mut Vec<oneshot::Sender<()>>| match command {
        AckCommand::Ack(id, lease, slot) => {
            pending.push((id, lease));
            if let Some(slot) = slot {
                match slots {
                    Some(all) => all.merge(slot),
                    None => *slots = Some(slot),
                }
            }
        }
        AckCommand::Flush(done) => waiting_flush.push(done),
    };
    loop {
        if pending.is_empty() && in_flight.is_empty() {
            // Everything handed over so far is acked.
            for waiter in waiting_flush.drain(..) {
                let _ = waiter.send(());
            }
            if closed {
                return;
            }
            match commands.recv().await {
                Some(command) => take(command, &mut pending, &mut slots, &mut waiting_flush),
                None => return,
            }
        }
        // Everything that queued up meanwhile goes in one script call.
        while let Ok(command) = commands.try_recv() {
            take(command, &mut pending, &mut slots, &mut waiting_flush);
        }
        if pending.is_empty() && in_flight.is_empty() {
            // Nothing to ack (a flush request alone): answer it at the top.
            continue;
        }
        if !pending.is_empty() && in_flight.len() < ACK_CALLS_IN_FLIGHT {
            // At most a share of the worker's slots per call: when every job of a claim
            // finishes at once, two half batches keep one call in Redis while the worker runs
            // the jobs the other brought back.
            let batch: Vec<(String, u64)> = if pending.len() > batch_limit {
                pending.drain(..batch_limit).collect()
            } else {
                std::mem::take(&mut pending)
            };
            let batch_slots = match slots.take() {
                Some(mut all) if !pending.is_empty() && all.num_permits() > batch.len() => {
                    let part = all.split(batch.len());
                    slots = Some(all);
                    part
                }
                all => all,
            };
            in_flight.push(ack_call(shared.clone(), batch, batch_slots));
            continue;
        }
        tokio::select! {
            Some((batch, batch_slots, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok((acked, claim)) => {
                        backoff.reset();
                        for ((id, _), ok) in batch.iter().zip(acked) {
                            if !ok {
                                tracing::warn!(queue = %shared.queue, job_id = %id, "ack refused: lease was lost, the job will run again");
                            }
                        }
                        match (claim, batch_slots) {
                            (Some(claim), Some(permits)) if !claim.jobs.is_empty() => {
                                deliver(&shared, &sender, claim.jobs, permits).await;
                            }
                            // No replacement: the slots go back to the fetcher.
                            _ => {}
                        }
                    }
                    Err(error) => {
                        tracing::warn!(queue = %shared.queue, %error, pending = batch.len(), "ack failed; retrying");
                        // The batch goes back in front of what came meanwhile; its slots are
                        // freed, so the fetcher is not starved by an outage of acks.
                        let mut retry = batch;
                        retry.append(&mut pending);
                        pending = retry;
                        drop(batch_slots);
                        backoff.wait().await;
                    }
                }
            }
            command = commands.recv(), if !closed => match command {
                Some(command) => take(command, &mut pending, &mut slots, &mut waiting_flush),
                None => closed = true,
            },
            else => {}
        }
    }
}

/// The backend's middleware: job span, request id, ack on success, retry policy on failure.
#[derive(Clone)]
pub struct JobLayer {
    shared: Arc<BackendShared>,
}

impl<S> Layer<S> for JobLayer {
    type Service = JobService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JobService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`JobLayer`].
#[derive(Clone)]
pub struct JobService<S> {
    inner: S,
    shared: Arc<BackendShared>,
}

impl<S, Args> Service<Task<Args>> for JobService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.ctx().data().get::<ClaimedLease>().map(|l| l.0.clone());
        let future = self.inner.call(task);
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(job) = lease else {
                // Not one of ours (cannot happen with this backend): run it without bookkeeping.
                return future.await.map_err(Into::into);
            };
            let span = tracing::info_span!(
                "job",
                queue = %job.queue,
                job_id = %job.id,
                kind = %job.kind,
                attempt = job.attempt,
                request_id = job.request_id.as_deref().unwrap_or(""),
            );
            let started = std::time::Instant::now();
            let run = future.instrument(span.clone());
            let result = match job.request_id.clone() {
                Some(request_id) => super::correlation::scope(request_id, run).await,
                None => run.await,
            };
            let result = result.map_err(Into::into);
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(_) => {
                    span.in_scope(|| tracing::info!(elapsed_ms, "job completed"));
                    crate::metrics::job_finished(&job.queue, &job.kind, "completed", elapsed_ms);
                    let slot = shared.unhold(&job.id);
                    let _ = shared
                        .acks
                        .send(AckCommand::Ack(job.id.clone(), job.lease, slot));
                }
                Err(error) => {
                    let job_error = JobError::classify(error.as_ref());
                    let retry_in = job.next_retry(&job_error, rand::random::<f64>());
                    let outcome = if retry_in.is_some() {
                        "retried"
                    } else {
                        "dead"
                    };
                    span.in_scope(|| {
                        tracing::warn!(elapsed_ms, error = %job_error.message(), retry_in_ms = retry_in.map(|d| d.as_millis() as u64), outcome, "job failed")
                    });
                    crate::metrics::job_finished(&job.queue, &job.kind, outcome, elapsed_ms);
                    record_failure(&shared, &job, job_error.message(), retry_in).await;
                    shared.unhold(&job.id);
                }
            }
            result
        })
    }
}

/// Writes a failed attempt to Redis, retrying through short outages. If Redis stays away the
/// lease expires and the engine itself counts the attempt, so nothing is lost either way.
async fn record_failure(
    shared: &BackendShared,
    job: &ClaimedJob,
    error: &str,
    retry_in: Option<Duration>,
) {
    let mut backoff = ErrorBackoff::new();
    let give_up = tokio::time::Instant::now() + shared.settings.lease;
    loop {
        match shared.engine.fail(job, error, retry_in).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(job_id = %job.id, "failure not recorded: lease was lost");
                return;
            }
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(job_id = %job.id, error = %e, "could not record failure; retrying");
                backoff.wait().await;
            }
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "could not record failure; the lease will expire instead");
                return;
            }
        }
    }
}
