//! The fetcher: claims jobs of the queue only when the worker has free slots, and hands them to
//! apalis.
//!
//! It waits for one free slot, takes every other free slot too, and claims that many jobs in one
//! script call, so a process never hoards jobs another could run and claims batch under load.
//! When the queue is empty it blocks on the queue's wake-up list (or until the next scheduled job
//! or lease deadline), so new work starts within milliseconds without polling; a partitioned
//! queue's partitions are claimed from in turn, and an idle fetcher waits on all their lists; when the queue's
//! rate limit holds its jobs back it sleeps until the next token is due. [`deliver`] is
//! also how the acker hands over the replacement jobs it claims together with its acks.

use std::{sync::Arc, task::Poll, time::Duration};

use apalis_core::{
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::{FutureExt, future::BoxFuture};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{BackendShared, ClaimedLease, ErrorBackoff, JobControl, JobInfo};
use crate::{connection::RedisConnection, engine::Claim, job::ClaimedJob};

pub(super) async fn run_fetcher<Args>(
    shared: Arc<BackendShared>,
    sender: mpsc::Sender<Task<Args>>,
    worker: WorkerContext,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let mut wake_ups = WakeUps::new(shared.partitions.len());
    let mut backoff = ErrorBackoff::new();
    let stop = shared.stop.clone();
    // The partition the next claim asks first: each claim moves it on, so a partitioned
    // queue's partitions take turns.
    let mut next = 0;
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
        // Ask the partitions in turn until one has work: all of them before waiting.
        let mut idle = Idle {
            wait: shared.settings.idle_poll,
            rate_limited: true,
            failed: false,
        };
        let mut claimed = None;
        // Whether the claim that found jobs also found the queue drained (see below).
        let mut drained = false;
        for _ in 0..shared.partitions.len() {
            let partition = &shared.partitions[next];
            next = (next + 1) % shared.partitions.len();
            match shared
                .engine
                .claim(partition, &shared.worker_id, wanted, shared.settings.lease)
                .await
            {
                Ok(claim) if !claim.jobs.is_empty() => {
                    // Fewer jobs than free slots: the queue had no more to give, so asking
                    // again at once would only come back empty (a wasted script call per
                    // wake-up at a steady trickle of jobs). The fetcher waits instead, as that
                    // empty claim would have had it wait: work enqueued meanwhile has left its
                    // wake-up. A partitioned queue still asks its other partitions first.
                    if claim.jobs.len() < wanted && shared.partitions.len() == 1 {
                        drained = true;
                        idle.learn(&claim);
                    }
                    claimed = Some(claim.jobs);
                    break;
                }
                Ok(claim) => idle.learn(&claim),
                Err(error) => {
                    // One partition's node may be away while the others work.
                    tracing::warn!(queue = %shared.queue, %partition, %error, "claim failed; retrying");
                    idle.failed = true;
                }
            }
        }
        if let Some(jobs) = claimed {
            backoff.reset();
            deliver(&shared, &sender, jobs, slots).await;
            if !drained {
                continue;
            }
        } else {
            drop(slots);
        }
        if idle.failed {
            backoff.wait().await;
            continue;
        }
        backoff.reset();
        if idle.wait.is_zero() {
            continue;
        }
        if idle.rate_limited {
            // Nothing can start before the rate limit's next token, whatever is enqueued
            // meanwhile: sleep until then instead of waking on every enqueue.
            tokio::select! {
                _ = tokio::time::sleep(idle.wait) => continue,
                _ = stop.cancelled() => break,
            }
        }
        tokio::select! {
            result = wake_ups.wait(&shared, idle.wait) => {
                if let Err(error) = result {
                    tracing::warn!(queue = %shared.queue, %error, "wait for work failed; reconnecting");
                    backoff.wait().await;
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    tracing::debug!(queue = %shared.queue, "fetcher stopped");
}

/// What a claim round that found nothing, or drained the queue, says about waiting.
struct Idle {
    /// How long until something may be claimable (the soonest of the partitions' next due
    /// scheduled job, lease deadline or rate token; at most the idle poll).
    wait: Duration,
    /// Whether every partition held its jobs back for its rate limit.
    rate_limited: bool,
    /// Whether a partition could not be asked.
    failed: bool,
}

impl Idle {
    /// Takes in what one partition's claim said about when to look again.
    fn learn(&mut self, claim: &Claim) {
        if let Some(due) = claim.next_wake_in {
            self.wait = self.wait.min(due);
        }
        self.rate_limited &= claim.rate_limited;
    }
}

/// A blocking read of one partition's wake-up list, with the connection it runs on.
type WakeUpRead = BoxFuture<'static, (RedisConnection, redis::RedisResult<bool>)>;

/// The fetcher's blocking reads of its partitions' wake-up lists, one connection each (a
/// blocking read cannot name keys of several cluster slots). A read still running when another
/// partition woke the fetcher is kept, not dropped, and looked at in the next wait: if it took a
/// wake-up meanwhile, that wait returns at once instead of the wake-up being lost.
struct WakeUps {
    reads: Vec<Option<WakeUpRead>>,
    idle: Vec<Option<RedisConnection>>,
}

impl WakeUps {
    fn new(partitions: usize) -> Self {
        Self {
            reads: (0..partitions).map(|_| None).collect(),
            idle: (0..partitions).map(|_| None).collect(),
        }
    }

    /// Waits until a partition may have work, at most `timeout`.
    async fn wait(&mut self, shared: &BackendShared, timeout: Duration) -> redis::RedisResult<()> {
        for (i, read) in self.reads.iter_mut().enumerate() {
            if read.is_some() {
                continue;
            }
            let mut connection = match self.idle[i].take() {
                Some(connection) => connection,
                None => shared.engine.blocking_connection().await?,
            };
            let engine = shared.engine.clone();
            let partition = shared.partitions[i].clone();
            // Each read lasts the idle poll at most: a kept one ends on its own.
            let longest = shared.settings.idle_poll;
            *read = Some(
                async move {
                    let woken = engine
                        .wait_for_work(&mut connection, &partition, longest)
                        .await;
                    (connection, woken)
                }
                .boxed(),
            );
        }
        let first = std::future::poll_fn(|cx| {
            for (i, read) in self.reads.iter_mut().enumerate() {
                if let Some((connection, result)) =
                    read.as_mut().and_then(|read| match read.poll_unpin(cx) {
                        Poll::Ready(done) => Some(done),
                        Poll::Pending => None,
                    })
                {
                    return Poll::Ready((i, connection, result));
                }
            }
            Poll::Pending
        });
        let outcome = tokio::time::timeout(timeout, first).await;
        match outcome {
            Err(_) => Ok(()),
            Ok((i, connection, result)) => {
                self.reads[i] = None;
                match result {
                    Ok(_) => {
                        self.idle[i] = Some(connection);
                        Ok(())
                    }
                    // A failed connection is replaced at the next wait.
                    Err(error) => Err(error),
                }
            }
        }
    }
}

/// Hands claimed jobs to the worker, each with one of `slots`' permits; jobs that cannot be
/// decoded die at once (no retry can fix a payload), jobs the worker no longer takes go back.
pub(super) async fn deliver<Args>(
    shared: &Arc<BackendShared>,
    sender: &mpsc::Sender<Task<Args>>,
    jobs: Vec<ClaimedJob>,
    mut slots: OwnedSemaphorePermit,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    for job in jobs {
        let slot = slots.split(1);
        let cancel = shared.hold(&job, slot);
        let control = JobControl::attached(shared.clone(), &job, cancel);
        match decode_task::<Args>(&job, control) {
            Ok(task) => {
                if sender.send(task).await.is_err() {
                    let _ = shared
                        .engine
                        .release(&job.queue, &[(job.id.clone(), job.lease)])
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
                crate::metrics::job_finished(&shared.queue, &job.kind, "dead", 0.0);
                shared.unhold(&job.id);
            }
        }
    }
}

fn decode_task<Args: DeserializeOwned>(
    job: &ClaimedJob,
    control: JobControl,
) -> Result<Task<Args>, serde_json::Error> {
    let args: Args = serde_json::from_str(&job.payload)?;
    let info = JobInfo {
        id: job.id.clone(),
        queue: crate::partitions::queue_of(&job.queue).to_owned(),
        kind: job.kind.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        request_id: job.request_id.clone(),
        control,
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
