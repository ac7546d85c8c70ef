//! [`JobControl`]: what a running handler can do about its own job: notice that it was asked to
//! stop, report how far it got, and leave a small result on the job.
//!
//! A cancel request for a running job reaches its worker within a fraction of a second (the
//! `cancel` watcher in this backend) and cancels the job's token; a handler that does long work
//! checks [`JobControl::is_cancelled`] between steps or races its work against
//! [`JobControl::cancelled`], cleans up, and returns [`JobError::cancelled`]. Progress and
//! results are written to the job's hash (and progress to its event stream, when it has one)
//! only while the worker still holds the job's lease, so an attempt that lost its job cannot
//! overwrite what the next attempt reports.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::BackendShared;
use crate::job::JobError;

/// Largest result a job may keep (JSON text): results are for summaries (rows written, a file
/// key), not for data, which belongs in the application's storage.
pub const MAX_RESULT_BYTES: usize = 16 * 1024;

/// Longest progress note kept; longer notes are cut.
pub const MAX_NOTE_CHARS: usize = 200;

/// Progress reports closer together than this are dropped (the last one before the job ends
/// is never more than this old), so a handler may report after every row without flooding
/// Redis or the clients that follow the job.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// A running job's handle on itself (see the module docs). Cheap to clone; a detached one (the
/// default, for calling a handler outside a worker, as tests do) is never cancelled and keeps
/// nothing.
#[derive(Clone, Default)]
pub struct JobControl {
    attached: Option<Arc<Attached>>,
}

struct Attached {
    /// The backend running the job: its engine and queue.
    shared: Arc<BackendShared>,
    /// The queue partition the job was claimed from.
    partition: String,
    id: String,
    lease: u64,
    cancel: CancellationToken,
    last_progress: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JobControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobControl")
            .field("attached", &self.attached.is_some())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Two controls are equal when they are the same handle (or both detached).
impl PartialEq for JobControl {
    fn eq(&self, other: &Self) -> bool {
        match (&self.attached, &other.attached) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl JobControl {
    /// A control for `job`, claimed by `shared`, cancelled through `cancel`.
    pub(crate) fn attached(
        shared: Arc<BackendShared>,
        job: &crate::ClaimedJob,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            attached: Some(Arc::new(Attached {
                shared,
                partition: job.queue.clone(),
                id: job.id.clone(),
                lease: job.lease,
                cancel,
                last_progress: Mutex::new(None),
            })),
        }
    }

    /// A control that is never cancelled and keeps nothing (handlers called directly).
    pub fn detached() -> Self {
        Self::default()
    }

    /// Whether someone asked this job to stop.
    pub fn is_cancelled(&self) -> bool {
        self.attached
            .as_ref()
            .is_some_and(|a| a.cancel.is_cancelled())
    }

    /// Completes when someone asks this job to stop (never, for a detached control): race
    /// long work against it with `tokio::select!`.
    pub async fn cancelled(&self) {
        match &self.attached {
            Some(attached) => attached.cancel.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// `Err(JobError::cancelled(..))` once the job was asked to stop: `control.check()?`
    /// between steps of long work.
    pub fn check(&self) -> Result<(), JobError> {
        if self.is_cancelled() {
            Err(JobError::cancelled("stopped on request"))
        } else {
            Ok(())
        }
    }

    /// Reports how far the job got: `fraction` of the work (clamped to 0..=1) and a short note
    /// (`"4,200 rows"`). Kept on the job (the dashboard shows it) and sent to the job's event
    /// stream. Reports within [`PROGRESS_INTERVAL`] of the last one are dropped, except the
    /// final one (`fraction` 1). Never fails the job: a report that cannot be written is logged.
    pub async fn progress(&self, fraction: f64, note: &str) {
        let Some(attached) = &self.attached else {
            return;
        };
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        {
            let Ok(mut last) = attached.last_progress.lock() else {
                return;
            };
            let now = Instant::now();
            if fraction < 1.0 && last.is_some_and(|at| now.duration_since(at) < PROGRESS_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let note: String = note.chars().take(MAX_NOTE_CHARS).collect();
        let value = serde_json::json!({
            "fraction": (fraction * 10_000.0).round() / 10_000.0,
            "note": note,
            "at": chrono::Utc::now().timestamp_millis(),
        });
        if let Err(error) = attached
            .shared
            .engine
            .annotate(
                &attached.partition,
                &attached.id,
                attached.lease,
                "progress",
                &value.to_string(),
            )
            .await
        {
            tracing::warn!(job_id = %attached.id, %error, "could not record the job's progress");
        }
    }

    /// Keeps `result` on the job (shown on its dashboard page and sent with its `completed`
    /// event). At most [`MAX_RESULT_BYTES`] of JSON: a larger one is refused, permanently
    /// (the handler's bug, not the world's).
    pub async fn set_result(&self, result: &serde_json::Value) -> Result<(), JobError> {
        let text = result.to_string();
        if text.len() > MAX_RESULT_BYTES {
            return Err(JobError::permanent(format!(
                "a job result is at most {MAX_RESULT_BYTES} bytes of JSON; this one is {}",
                text.len()
            )));
        }
        let Some(attached) = &self.attached else {
            return Ok(());
        };
        attached
            .shared
            .engine
            .annotate(
                &attached.partition,
                &attached.id,
                attached.lease,
                "result",
                &text,
            )
            .await
            .map_err(|e| JobError::retry(format!("storing the job's result: {e}")))?;
        Ok(())
    }
}
