//! The backend's tower middleware ([`JobLayer`]), which apalis puts around every job's handler.
//!
//! It runs the handler inside a `job` span (queue, id, kind, attempt, request id; a child of the
//! trace the job was staged in, see [`crate::trace`]) and the job's correlation scope, records the job's duration and outcome in the metrics, and then settles the
//! job: on success it frees the job's hold and sends the ack (with the job's worker slot) to the
//! acker; on failure it applies the job's retry policy and records the failed attempt in Redis.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{error::BoxDynError, task::Task};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use super::{AckCommand, BackendShared, ClaimedLease, ErrorBackoff, JobInfo, Lease};
use crate::job::{ClaimedJob, JobError};

/// The backend's middleware: job span, request id, ack on success, retry policy on failure.
#[derive(Clone)]
pub struct JobLayer {
    pub(super) shared: Arc<BackendShared>,
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
        let control = task
            .ctx()
            .data()
            .get::<JobInfo>()
            .map(|info| info.control.clone())
            .unwrap_or_default();
        let future = self.inner.call(task);
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(job) = lease else {
                // Not one of ours (cannot happen with this backend): run it without bookkeeping.
                return future.await.map_err(Into::into);
            };
            // `otel.*` fields name the span for a trace exporter (the log lines leave them out).
            let span = tracing::info_span!(
                "job",
                queue = %shared.queue,
                job_id = %job.id,
                kind = %job.kind,
                attempt = job.attempt,
                request_id = job.request_id.as_deref().unwrap_or(""),
                otel.name = %job.kind,
                otel.kind = "consumer",
                otel.status_code = tracing::field::Empty,
            );
            crate::trace::continue_from(&span, job.traceparent.as_deref());
            let started = std::time::Instant::now();
            let run = future.instrument(span.clone());
            let result = match job.request_id.clone() {
                Some(request_id) => crate::correlation::scope(request_id, run).await,
                None => run.await,
            };
            let result = result.map_err(Into::into);
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(_) => {
                    span.in_scope(|| tracing::info!(elapsed_ms, "job completed"));
                    crate::metrics::job_finished(&shared.queue, &job.kind, "completed", elapsed_ms);
                    shared.runtimes.record(&job.kind, "completed", elapsed_ms);
                    let slot = shared.unhold(&job.id);
                    let lease = Lease {
                        partition: job.queue.clone(),
                        id: job.id.clone(),
                        token: job.lease,
                    };
                    let _ = shared.acks.send(AckCommand::Ack(lease, slot));
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    let job_error = JobError::classify(error.as_ref());
                    // Asked to stop: whatever the handler returned (a cancelled error, or the
                    // error its interrupted work ran into), the job ends cancelled.
                    let settle =
                        if control.is_cancelled() || matches!(job_error, JobError::Cancelled(_)) {
                            Settle::Cancelled
                        } else {
                            match job.next_retry(&job_error, rand::random::<f64>()) {
                                Some(after) => Settle::RetryIn(after),
                                None => Settle::Dead,
                            }
                        };
                    let outcome = settle.outcome();
                    span.in_scope(|| {
                        if settle == Settle::Cancelled {
                            tracing::info!(elapsed_ms, reason = %job_error.message(), "job cancelled")
                        } else {
                            tracing::warn!(elapsed_ms, error = %job_error.message(), retry_in_ms = settle.retry_in().map(|d| d.as_millis() as u64), outcome, "job failed")
                        }
                    });
                    crate::metrics::job_finished(&shared.queue, &job.kind, outcome, elapsed_ms);
                    shared.runtimes.record(&job.kind, outcome, elapsed_ms);
                    record_failure(&shared, &job, job_error.message(), settle).await;
                    shared.unhold(&job.id);
                }
            }
            result
        })
    }
}

/// How a failed attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Another attempt after this long.
    RetryIn(Duration),
    /// No more attempts.
    Dead,
    /// Stopped on request: neither retried nor dead.
    Cancelled,
}

impl Settle {
    /// The metrics' outcome label.
    fn outcome(self) -> &'static str {
        match self {
            Self::RetryIn(_) => "retried",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    fn retry_in(self) -> Option<Duration> {
        match self {
            Self::RetryIn(after) => Some(after),
            _ => None,
        }
    }
}

/// Writes a failed (or cancelled) attempt to Redis, retrying through short outages. If Redis
/// stays away the lease expires and the engine itself counts the attempt (or, for a job asked
/// to stop, ends it cancelled), so nothing is lost either way.
async fn record_failure(shared: &BackendShared, job: &ClaimedJob, error: &str, settle: Settle) {
    let mut backoff = ErrorBackoff::new();
    let give_up = tokio::time::Instant::now() + shared.settings.lease;
    loop {
        let recorded = match settle {
            Settle::Cancelled => shared.engine.cancelled(job, error).await,
            _ => shared.engine.fail(job, error, settle.retry_in()).await,
        };
        match recorded {
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
