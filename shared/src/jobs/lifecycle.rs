//! The life of the job behind a domain row, as the row's owner sees it: cancelling it
//! ([`JobLifecycle::cancel_row`]), and following it live. Reports and uploads share this; each
//! says what its rows mean.
//!
//! Following reads the job's event stream in the engine (its jobs are declared with events on)
//! and ends with the row itself: a client gets `progress` steps while the job runs and one
//! final `completed`, `failed` or `cancelled` update carrying the row as it ended. The row is
//! read first, so a client that connects (or reconnects) after the end gets the final update at
//! once; stream entry ids let a client resume after the last update it saw. The row is read
//! again every few seconds as well, so a row that changes without events (one made before
//! events existed, or a job whose worker died on its last attempt) still ends the stream.

use std::{future::Future, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    error::AppError,
    queue::{CancelOutcome, JobEvent, QueueEngine, QueueName},
};

/// How often a follower looks for new events of the job.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// How often a follower reads the row again, in case it changed without an event.
const ROW_POLL: Duration = Duration::from_secs(5);

/// One update for a client following a row's job.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveUpdate<T> {
    /// A step of the job's life: `queued`, `started`, `progress` (`{fraction, note}`),
    /// `retrying` (`{attempt, error, retry_at}`) or `cancelling`. `id` is the stream entry to
    /// resume after.
    Step {
        /// Stream entry id.
        id: String,
        /// What happened.
        kind: String,
        /// What the engine recorded with it.
        data: serde_json::Value,
    },
    /// The end: `completed`, `failed` or `cancelled`, with the row as it ended.
    Final {
        /// Stream entry id, when the end came from the job's stream.
        id: Option<String>,
        /// How it ended.
        kind: &'static str,
        /// The row.
        row: T,
    },
}

/// What cancelling the job behind a row did ([`JobLifecycle::cancel_row`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowCancel<T> {
    /// The job had not started: the row is cancelled now, as its marking returned it.
    Cancelled(T),
    /// The job is running: its worker was asked to stop and marks the row itself.
    Stopping,
    /// The row's work ended before the cancel took; the row says how.
    Finished,
}

/// Cancels and follows the jobs behind domain rows; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobLifecycle {
    engine: QueueEngine,
}

impl JobLifecycle {
    /// Over `engine`.
    pub fn new(engine: QueueEngine) -> Self {
        Self { engine }
    }

    /// Cancels the job `job_id` of `queue` behind a row (`None`: the row names no job) and,
    /// unless the job is running, marks the row cancelled with `mark_cancelled` (which returns
    /// the row, or `None` when its work had already ended). A job not in the queue (yet: its
    /// outbox push may be on the way) counts as not started: the row says cancelled, and the
    /// job, when it comes, finds that and ends at once.
    pub async fn cancel_row<T, Fut>(
        &self,
        queue: QueueName,
        job_id: Option<Uuid>,
        reason: &str,
        mark_cancelled: impl FnOnce() -> Fut,
    ) -> Result<RowCancel<T>, AppError>
    where
        Fut: Future<Output = Result<Option<T>, AppError>>,
    {
        let outcome = match job_id {
            Some(job_id) => self
                .engine
                .cancel(queue.as_str(), &job_id.to_string(), reason)
                .await
                .map_err(|e| AppError::Unavailable(format!("the job queue is unreachable: {e}")))?,
            None => CancelOutcome::NotFound,
        };
        Ok(match outcome {
            CancelOutcome::Signalled => RowCancel::Stopping,
            CancelOutcome::Cancelled | CancelOutcome::NotFound => match mark_cancelled().await? {
                Some(row) => RowCancel::Cancelled(row),
                None => RowCancel::Finished,
            },
            CancelOutcome::AlreadyFinished => RowCancel::Finished,
        })
    }

    /// Follows the job `job_id` of `queue` behind a row: `load` reads the row, `ending` says how
    /// a row's job ended (`Some("completed")`) or `None` while it is still in the works. Steps
    /// after stream entry `after` (a client's `Last-Event-ID`). The stream ends after the final
    /// update, or with the error that stopped it; dropping it stops the follower.
    pub fn follow<T, Load, Fut>(
        &self,
        queue: QueueName,
        job_id: Option<String>,
        after: Option<String>,
        load: Load,
        ending: fn(&T) -> Option<&'static str>,
    ) -> BoxStream<'static, Result<LiveUpdate<T>, AppError>>
    where
        T: Send + 'static,
        Load: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, AppError>> + Send,
    {
        let (updates, receiver) = mpsc::channel(16);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let outcome = follow_job(
                &engine,
                queue,
                job_id.as_deref(),
                after,
                &load,
                ending,
                &updates,
            )
            .await;
            if let Err(error) = outcome {
                let _ = updates.send(Err(error)).await;
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|update| (update, receiver))
        })
        .boxed()
    }
}

/// The follower's loop; returns when the job ended, the client left, or an error stopped it.
async fn follow_job<T, Load, Fut>(
    engine: &QueueEngine,
    queue: QueueName,
    job_id: Option<&str>,
    mut after: Option<String>,
    load: &Load,
    ending: fn(&T) -> Option<&'static str>,
    updates: &mpsc::Sender<Result<LiveUpdate<T>, AppError>>,
) -> Result<(), AppError>
where
    Load: Fn() -> Fut,
    Fut: Future<Output = Result<T, AppError>>,
{
    let mut row_read_at = tokio::time::Instant::now();
    let row = load().await?;
    if let Some(kind) = ending(&row) {
        let _ = updates
            .send(Ok(LiveUpdate::Final {
                id: None,
                kind,
                row,
            }))
            .await;
        return Ok(());
    }
    loop {
        if updates.is_closed() {
            return Ok(());
        }
        let events: Vec<JobEvent> = match job_id {
            Some(job_id) => engine
                .job_events(queue.as_str(), job_id, after.as_deref(), 100)
                .await
                .map_err(|e| AppError::Unavailable(format!("the job queue is unreachable: {e}")))?,
            None => Vec::new(),
        };
        for event in events {
            after = Some(event.id.clone());
            if event.is_final() {
                // The handler updates the row before its job settles, so the row says how it
                // ended; a job that died with its worker on its last attempt left the row as it
                // was, and the engine's word stands.
                let row = load().await?;
                let kind = ending(&row).unwrap_or(match event.kind.as_str() {
                    "completed" => "completed",
                    "cancelled" => "cancelled",
                    _ => "failed",
                });
                let _ = updates
                    .send(Ok(LiveUpdate::Final {
                        id: Some(event.id),
                        kind,
                        row,
                    }))
                    .await;
                return Ok(());
            }
            let step = LiveUpdate::Step {
                id: event.id,
                kind: event.kind,
                data: event.data,
            };
            if updates.send(Ok(step)).await.is_err() {
                return Ok(());
            }
        }
        if row_read_at.elapsed() >= ROW_POLL {
            row_read_at = tokio::time::Instant::now();
            let row = load().await?;
            if let Some(kind) = ending(&row) {
                let _ = updates
                    .send(Ok(LiveUpdate::Final {
                        id: None,
                        kind,
                        row,
                    }))
                    .await;
                return Ok(());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVENT_POLL) => {}
            _ = updates.closed() => return Ok(()),
        }
    }
}
