//! Enqueueing with group commit: concurrent `enqueue` calls that arrive while script calls are
//! in flight are sent together in the next one, so fifty producers cost a handful of round trips,
//! not fifty, and nobody waits for a timer.

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};

use crate::queue::{engine::QueueEngine, job::JobSpec};

/// Jobs sent in one script call at most.
const MAX_GROUP: usize = 1000;

/// Script calls kept in flight at once. With one, the producer and Redis take turns: the queue
/// benchmark showed each at about half a core and the machine half idle, every group waiting for
/// the round trip of the one before. With two, the next group is on the wire while Redis runs
/// the last. Order between concurrent callers was never promised; one caller's awaited pushes
/// still run in order.
const CALLS_IN_FLIGHT: usize = 2;

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
        tokio::spawn(run(engine, rx));
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

/// A group of requests sent in one script call, with the engine's answer.
type GroupOutcome = (Vec<Request>, redis::RedisResult<Vec<bool>>);

fn send_group(engine: QueueEngine, group: Vec<Request>) -> BoxFuture<'static, GroupOutcome> {
    async move {
        let all: Vec<JobSpec> = group.iter().flat_map(|r| r.jobs.iter().cloned()).collect();
        let result = engine.enqueue(&all).await;
        (group, result)
    }
    .boxed()
}

fn answer((group, result): GroupOutcome) {
    match result {
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

async fn run(engine: QueueEngine, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut in_flight: FuturesUnordered<BoxFuture<'static, GroupOutcome>> = FuturesUnordered::new();
    let mut closed = false;
    loop {
        if closed && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            // Answers first: a finished call frees its place for the requests that queued up.
            biased;
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => answer(outcome),
            request = rx.recv(), if !closed && in_flight.len() < CALLS_IN_FLIGHT => {
                let Some(first) = request else {
                    closed = true;
                    continue;
                };
                let mut size = first.jobs.len();
                let mut group = vec![first];
                while size < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(request) => {
                            size += request.jobs.len();
                            group.push(request);
                        }
                        Err(_) => break,
                    }
                }
                in_flight.push(send_group(engine.clone(), group));
            }
        }
    }
}
