//! Enqueueing with group commit: concurrent `enqueue` calls that arrive while a script call is in
//! flight are sent together in the next one, so fifty producers cost a handful of round trips,
//! not fifty, and nobody waits for a timer.
//!
//! [`Producer::replicated`] also waits, after each call, until replicas hold what it wrote (the
//! outbox's pushes, so a Redis failover cannot lose a job whose row was deleted as pushed).
//!
//! One call at a time, on purpose. Two in flight (as the worker's acker does) bought no enqueue
//! throughput and made order-to-email latency worse (the runs are in docs/performance.md). The
//! cause was not pinned down; the api's pushes after commit then go out in more, smaller groups.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{engine::QueueEngine, job::JobSpec};

/// How many replicas must hold a push before it counts ([`Producer::replicated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    /// Replicas that must have the write (`WAIT`'s first argument).
    pub replicas: u32,
    /// How long to wait for them; a push they did not all confirm by then is an error.
    pub timeout: Duration,
}

/// Jobs sent in one script call at most.
const MAX_GROUP: usize = 1000;

struct Request {
    jobs: Vec<JobSpec>,
    reply: oneshot::Sender<redis::RedisResult<Vec<bool>>>,
}

/// A cloneable handle that enqueues jobs through one background task.
#[derive(Clone)]
pub struct Producer {
    requests: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// Starts the background task (must be called inside a tokio runtime).
    pub fn new(engine: QueueEngine) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, rx, None));
        Self { requests }
    }

    /// A producer whose enqueues succeed only once `acks.replicas` replicas hold them (a `WAIT`
    /// pipelined behind each script call, see [`QueueEngine::enqueue_confirmed`]): Redis
    /// replicates asynchronously, so a failover can lose a write
    /// the old primary acknowledged, and the outbox must not delete a pushed row on such an
    /// acknowledgement. A push the replicas did not confirm in time is an error, though the
    /// jobs may exist on the primary (a re-push is harmless: enqueue is idempotent by id).
    ///
    /// `engine` must be on a Redis connection of its own: `WAIT` holds up everything queued
    /// behind it on its connection, for up to the timeout while a replica is away.
    pub fn replicated(engine: QueueEngine, acks: ReplicaAcks) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, rx, Some(acks)));
        Self { requests }
    }

    /// Enqueues one job; `Ok(false)` means a job with its id already existed.
    pub async fn enqueue(&self, job: JobSpec) -> redis::RedisResult<bool> {
        Ok(self
            .enqueue_many(vec![job])
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Enqueues several jobs; one flag per job says whether it was added.
    pub async fn enqueue_many(&self, jobs: Vec<JobSpec>) -> redis::RedisResult<Vec<bool>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let closed = || redis::RedisError::from((redis::ErrorKind::Client, "producer stopped"));
        self.requests
            .send(Request { jobs, reply })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

async fn run(
    engine: QueueEngine,
    mut rx: mpsc::UnboundedReceiver<Request>,
    acks: Option<ReplicaAcks>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut size = group[0].jobs.len();
        while size < MAX_GROUP {
            match rx.try_recv() {
                Ok(request) => {
                    size += request.jobs.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let all: Vec<JobSpec> = group.iter().flat_map(|r| r.jobs.iter().cloned()).collect();
        let outcome = match acks {
            None => engine.enqueue(&all).await,
            Some(acks) => engine.enqueue_confirmed(&all, acks).await,
        };
        match outcome {
            Ok(results) => {
                let mut results = results.into_iter();
                for request in group {
                    let mine: Vec<bool> = results.by_ref().take(request.jobs.len()).collect();
                    let _ = request.reply.send(Ok(mine));
                }
            }
            Err(error) => {
                for request in group {
                    let _ = request.reply.send(Err(redis::RedisError::from((
                        error.kind(),
                        "enqueue failed",
                        error.to_string(),
                    ))));
                }
            }
        }
    }
}
