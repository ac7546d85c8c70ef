//! The run-time flusher: writes what the worker counted per job kind (its
//! [`crate::runtimes::RuntimeRecorder`], filled by the middleware as each attempt ends) to Redis
//! every [`FLUSH_EVERY`], and a last time once the worker stopped claiming and its last job
//! finished, so a worker that shuts down loses nothing it counted.

use std::sync::Arc;

use apalis_core::worker::context::WorkerContext;

use super::BackendShared;
use crate::runtimes::FLUSH_EVERY;

pub(super) async fn run_flusher(shared: Arc<BackendShared>, worker: WorkerContext) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let done = worker.is_terminated() || (shared.stop.is_cancelled() && shared.running() == 0);
        if let Err(error) = shared.runtimes.flush(&shared.engine, &shared.queue).await {
            tracing::debug!(queue = %shared.queue, %error, "job run times not written; kept for the next flush");
        }
        if done {
            break;
        }
    }
}
