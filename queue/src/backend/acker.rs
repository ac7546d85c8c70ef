//! The acker: acknowledges finished jobs in batches, and claims their replacements in the same
//! script call.
//!
//! Jobs finish one by one but Redis is cheapest per batch: every completion the middleware sends
//! while a call is in flight goes into the next one. While the backend is claiming, the slots
//! the finished jobs held travel with the batch (`ack_and_claim`), so a busy worker makes one
//! round trip per batch and the fetcher only steps in when the worker runs dry. A failed call
//! puts its batch back and frees its slots, so an outage of acks does not starve the fetcher.
//!
//! A batch holds jobs of one partition (acks go to the partition a job came from). The
//! replacements of a partitioned queue are claimed from its partitions in turn, so a partition
//! with a long backlog does not keep a busy worker's slots to itself: when the turn falls on
//! another partition than the batch's, the ack and the claim are two calls, sent at once.

use std::sync::Arc;

use apalis_core::task::Task;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{AckCommand, BackendShared, ErrorBackoff, Lease, fetcher::deliver};
use crate::engine::Claim;

/// How many ack (and claim) script calls one worker keeps in flight. With one, the worker and
/// Redis take turns: Redis idles while the worker decodes a claim and runs its jobs, and the
/// worker idles while Redis runs the script, so each side leaves much of its core unused (the
/// measurement is in docs/performance.md, "Where the limits are"). With two, the next batch is
/// on its way while the last one is being handled.
const ACK_CALLS_IN_FLIGHT: usize = 2;

/// What an ack call returns: the batch it carried, the worker slots that went with it, and the
/// engine's answer (which leases were acked, and the replacement jobs claimed, if any).
type AckOutcome = (
    Vec<Lease>,
    Option<OwnedSemaphorePermit>,
    redis::RedisResult<(Vec<bool>, Option<Claim>)>,
);

/// One ack call: acks `batch` (jobs of one partition) and, while the backend is claiming, uses
/// `slots` to claim replacements from partition `claim_from`: in the same script call when that
/// is the batch's partition.
fn ack_call(
    shared: Arc<BackendShared>,
    batch: Vec<Lease>,
    slots: Option<OwnedSemaphorePermit>,
    claim_from: String,
) -> BoxFuture<'static, AckOutcome> {
    async move {
        let wanted = slots.as_ref().map(|s| s.num_permits()).unwrap_or(0);
        let partition = batch
            .first()
            .map(|lease| lease.partition.clone())
            .unwrap_or_default();
        let leases: Vec<(String, u64)> = batch
            .iter()
            .map(|lease| (lease.id.clone(), lease.token))
            .collect();
        let engine = &shared.engine;
        let lease = shared.settings.lease;
        let result = if shared.stop.is_cancelled() || wanted == 0 {
            engine
                .ack(&partition, &leases)
                .await
                .map(|acked| (acked, None))
        } else if claim_from == partition {
            engine
                .ack_and_claim(&partition, &leases, &shared.worker_id, wanted, lease)
                .await
                .map(|(acked, claim)| (acked, Some(claim)))
        } else {
            let (acked, claim) = tokio::join!(
                engine.ack(&partition, &leases),
                engine.claim(&claim_from, &shared.worker_id, wanted, lease)
            );
            // The ack decides the outcome (a failed one is retried); a failed claim only means
            // no replacements this time: the slots go back to the fetcher.
            acked.map(|acked| (acked, claim.ok()))
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
pub(super) async fn run_acker<Args>(
    shared: Arc<BackendShared>,
    mut commands: mpsc::UnboundedReceiver<AckCommand>,
    sender: mpsc::Sender<Task<Args>>,
) where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let mut pending: Vec<Lease> = Vec::new();
    // The partition the next replacement claim goes to (see the module header).
    let mut next_claim = 0;
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
                pending: &mut Vec<Lease>,
                slots: &mut Option<OwnedSemaphorePermit>,
                waiting_flush: &mut Vec<oneshot::Sender<()>>| match command {
        AckCommand::Ack(lease, slot) => {
            pending.push(lease);
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
            let batch = take_batch(&mut pending, batch_limit);
            let batch_slots = match slots.take() {
                Some(mut all) if !pending.is_empty() && all.num_permits() > batch.len() => {
                    let part = all.split(batch.len());
                    slots = Some(all);
                    part
                }
                all => all,
            };
            let claim_from = shared.partitions[next_claim].clone();
            next_claim = (next_claim + 1) % shared.partitions.len();
            in_flight.push(ack_call(shared.clone(), batch, batch_slots, claim_from));
            continue;
        }
        tokio::select! {
            Some((batch, batch_slots, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok((acked, claim)) => {
                        backoff.reset();
                        for (lease, ok) in batch.iter().zip(acked) {
                            if !ok {
                                tracing::warn!(queue = %shared.queue, job_id = %lease.id, "ack refused: lease was lost, the job will run again");
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

/// Takes up to `limit` of `pending` that belong to the partition of the first one (an ack call
/// goes to one partition), keeping the rest in order.
fn take_batch(pending: &mut Vec<Lease>, limit: usize) -> Vec<Lease> {
    let Some(partition) = pending.first().map(|lease| lease.partition.clone()) else {
        return Vec::new();
    };
    if pending.len() <= limit && pending.iter().all(|lease| lease.partition == partition) {
        return std::mem::take(pending);
    }
    let mut batch = Vec::with_capacity(limit.min(pending.len()));
    pending.retain(|lease| {
        if batch.len() < limit && lease.partition == partition {
            batch.push(lease.clone());
            false
        } else {
            true
        }
    });
    batch
}
