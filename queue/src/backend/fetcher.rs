//! The fetcher: claims jobs of the queue only when the worker has free slots, and hands them to
//! apalis.
//!
//! It waits for one free slot, takes every other free slot too, and claims that many jobs in one
//! script call, so a process never hoards jobs another could run and claims batch under load.
//! When the queue is empty it blocks on the queue's wake-up list (or until the next scheduled job
//! or lease deadline), so new work starts within milliseconds without polling; when the queue's
//! rate limit holds its jobs back it sleeps until the next token is due. [`deliver`] is
//! also how the acker hands over the replacement jobs it claims together with its acks.

use std::sync::Arc;

use apalis_core::{
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{BackendShared, ClaimedLease, ErrorBackoff, JobControl, JobInfo};
use crate::job::ClaimedJob;

pub(super) async fn run_fetcher<Args>(
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
                if claim.rate_limited {
                    // Nothing can start before the rate limit's next token, whatever is
                    // enqueued meanwhile: sleep until then instead of waking on every enqueue.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = stop.cancelled() => break,
                    }
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
        let cancel = shared.hold(&job.id, job.lease, slot);
        let control = JobControl::attached(shared.clone(), &job.id, job.lease, cancel);
        match decode_task::<Args>(&job, control) {
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

fn decode_task<Args: DeserializeOwned>(
    job: &ClaimedJob,
    control: JobControl,
) -> Result<Task<Args>, serde_json::Error> {
    let args: Args = serde_json::from_str(&job.payload)?;
    let info = JobInfo {
        id: job.id.clone(),
        queue: job.queue.clone(),
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
