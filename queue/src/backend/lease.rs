//! The lease keeper: renews every lease the worker holds, each third of the lease time, in one
//! call (per partition of a partitioned queue).
//!
//! A job whose lease runs out is handed to another worker, so a long handler must keep its
//! lease alive; a worker that dies stops renewing and its jobs come back by themselves. A lease
//! reported lost is only logged (the job may run again elsewhere; handlers are idempotent).

use std::sync::Arc;

use apalis_core::worker::context::WorkerContext;

use super::BackendShared;

pub(super) async fn run_lease_keeper(shared: Arc<BackendShared>, worker: WorkerContext) {
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
        for (partition, leases) in &leases {
            match shared
                .engine
                .renew(partition, leases, shared.settings.lease)
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
}
