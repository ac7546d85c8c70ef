//! The cancel watcher: while the worker holds jobs, asks Redis every `cancel_poll` which running
//! jobs of the queue were asked to stop, and cancels the tokens of those it holds.
//!
//! Polling a set that is almost always empty (one cheap script call, and none while the worker
//! is idle) rather than Redis pub/sub: a request cannot be lost to a reconnect, no process needs
//! a subscriber connection, and it works the same on a Redis Cluster.

use std::sync::Arc;

use apalis_core::worker::context::WorkerContext;

use super::BackendShared;

pub(super) async fn run_cancel_watch(shared: Arc<BackendShared>, worker: WorkerContext) {
    let mut ticker = tokio::time::interval(shared.settings.cancel_poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if shared.running() == 0 {
            if worker.is_terminated() || shared.stop.is_cancelled() {
                break;
            }
            continue;
        }
        // Only the partitions it holds jobs of.
        for (partition, _) in shared.leases() {
            match shared.engine.cancelling(&partition).await {
                Ok(ids) if !ids.is_empty() => {
                    let signalled = shared.signal_cancel(&ids);
                    if signalled > 0 {
                        tracing::info!(queue = %shared.queue, signalled, "asked running jobs to stop");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(queue = %shared.queue, %error, "could not check for cancel requests")
                }
            }
        }
    }
}
