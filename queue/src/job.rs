//! What the engine stores and hands out: job specs, priorities, retry policies, claimed jobs and
//! the errors a handler returns to steer retries.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Job priority, 0 (runs first) to 9 (runs last). Inside a priority, first in, first out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority(u8);

impl Priority {
    /// Runs before everything else (password resets, order confirmations).
    pub const CRITICAL: Self = Self(0);
    /// Customer-facing work that should feel instant.
    pub const HIGH: Self = Self(2);
    /// The default.
    pub const NORMAL: Self = Self(5);
    /// Bulk work that may wait (reports, imports).
    pub const LOW: Self = Self(8);
    /// The highest number allowed.
    pub const LOWEST: Self = Self(9);

    /// A priority from a number, clamped to 0..=9.
    pub fn new(level: u8) -> Self {
        Self(level.min(9))
    }

    /// The level, 0..=9.
    pub fn level(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::NORMAL
    }
}

/// How long to wait before the next attempt after a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// `base * factor^(attempt-1)`, capped at `max`, with up to `jitter` (0..1) of it randomised
    /// away (equal jitter) so a burst of failures does not retry in lockstep.
    Exponential {
        /// Delay after the first failure, in ms.
        base_ms: u64,
        /// Growth per attempt.
        factor: f64,
        /// Upper bound, in ms.
        max_ms: u64,
        /// Fraction of the delay that is random (0 = none, 1 = full jitter).
        jitter: f64,
    },
    /// An explicit list of delays (ms): the n-th retry waits `delays[n-1]`; the last repeats.
    Schedule {
        /// Delays in ms.
        delays_ms: Vec<u64>,
    },
}

impl Backoff {
    /// The delay before attempt `failed_attempt + 1`, given a random number in `0..1`.
    pub fn delay(&self, failed_attempt: u32, random: f64) -> Duration {
        match self {
            Self::Exponential {
                base_ms,
                factor,
                max_ms,
                jitter,
            } => {
                let exp = failed_attempt.saturating_sub(1).min(63) as i32;
                let raw = (*base_ms as f64) * factor.powi(exp);
                let capped = raw.min(*max_ms as f64);
                let jitter = jitter.clamp(0.0, 1.0);
                let ms = capped * (1.0 - jitter) + capped * jitter * random.clamp(0.0, 1.0);
                Duration::from_millis(ms.round() as u64)
            }
            Self::Schedule { delays_ms } => {
                let idx = (failed_attempt.max(1) - 1) as usize;
                let ms = delays_ms
                    .get(idx)
                    .or(delays_ms.last())
                    .copied()
                    .unwrap_or(0);
                Duration::from_millis(ms)
            }
        }
    }
}

/// Attempts and backoff for one kind of job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, the first included. After the last failure the job is dead.
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Exponential backoff from `base` up to `max`, with half the delay randomised.
    pub fn exponential(max_attempts: u32, base: Duration, max: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            backoff: Backoff::Exponential {
                base_ms: base.as_millis() as u64,
                factor: 2.0,
                max_ms: max.as_millis() as u64,
                jitter: 0.5,
            },
        }
    }

    /// A fixed schedule: one attempt, then one retry per listed delay.
    pub fn schedule(delays: &[Duration]) -> Self {
        Self {
            max_attempts: u32::try_from(delays.len()).unwrap_or(u32::MAX - 1) + 1,
            backoff: Backoff::Schedule {
                delays_ms: delays.iter().map(|d| d.as_millis() as u64).collect(),
            },
        }
    }

    /// Only one attempt.
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::Schedule { delays_ms: vec![] },
        }
    }

    /// The text stored with each job, so any worker can apply the policy.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored policy; unreadable text falls back to [`RetryPolicy::default`].
    pub fn decode(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential(5, Duration::from_secs(1), Duration::from_secs(600))
    }
}

/// A job to put on a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Caller-given id; a second enqueue with the same id is ignored.
    pub id: String,
    /// Queue name (`emails`).
    pub queue: String,
    /// What the job is (`email.order_confirmation`), for handlers and the dashboard.
    pub kind: String,
    /// The JSON payload (ids, not entities).
    pub payload: serde_json::Value,
    /// Scheduling priority.
    pub priority: Priority,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// Not before this time (delayed and scheduled jobs).
    pub run_at: Option<DateTime<Utc>>,
    /// The request that caused the job, carried into the worker's logs.
    pub request_id: Option<String>,
    /// A key that refuses any other job with the same key on this queue for a window of its
    /// own, however long finished jobs are kept. Absent in outbox rows written before it
    /// existed, hence the default; left out of the JSON when unset, so such rows stay as they
    /// were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Uniqueness>,
    /// Keep an event stream of the job's life (queued, started, progress, retrying, the
    /// outcome) for a client to follow live ([`crate::QueueEngine::job_events`]). Off by
    /// default: it costs a stream write per event, worth it for the few jobs someone watches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events: bool,
    /// The group the job belongs to within its queue (a webhook's endpoint): the queue's group
    /// limits hold per group, and claims rotate fairly between groups (see [`crate::limits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<JobGroup>,
    /// The W3C `traceparent` of the span that staged the job (see [`crate::trace`]): the job's
    /// run continues that trace. Absent with tracing off, and in rows written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A job's group key and whether the group is ordered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobGroup {
    /// 1 to 200 bytes of any text; groups of different queues never meet.
    pub key: String,
    /// First in, first out within the group, one running at a time, and a job waiting to be
    /// retried keeps the jobs added after it waiting (an endpoint receives one order's events
    /// in order, across retries).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
}

impl JobGroup {
    /// The longest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 200;

    /// An unordered group (fair rotation and per-group limits only).
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ordered: false,
        }
    }

    /// An ordered group.
    pub fn ordered(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ordered: true,
        }
    }
}

/// A job's uniqueness key and how long it holds.
///
/// While the window runs, enqueueing another job with the same key on the same queue adds
/// nothing (the call reports it as not added, as for an id that exists). The window starts when
/// the job is added and does not depend on the job: it outlives the job's retention trimming,
/// and ends on time even if the job is still waiting or running. The key lives in Redis for the
/// window (one small key per unique job). Past the window the key is free again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Uniqueness {
    /// Any text; keys of different queues never collide. Empty means no uniqueness.
    pub key: String,
    /// How long the key holds after the job is added, in ms (0 counts as 1).
    pub window_ms: u64,
}

impl Uniqueness {
    /// `key`, held for `window` (rounded down to whole ms).
    pub fn new(key: impl Into<String>, window: Duration) -> Self {
        Self {
            key: key.into(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl JobSpec {
    /// What places the job in a partition of a partitioned queue (see [`crate::partitions`]):
    /// its group key, else its uniqueness key, else its id.
    pub fn partition_key(&self) -> &str {
        self.group
            .as_ref()
            .map(|g| g.key.as_str())
            .or(self.unique.as_ref().map(|u| u.key.as_str()))
            .filter(|key| !key.is_empty())
            .unwrap_or(&self.id)
    }

    /// A job with a fresh UUIDv7 id, normal priority and the default retry policy.
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: Priority::NORMAL,
            retry: RetryPolicy::default(),
            run_at: None,
            request_id: super::correlation::current(),
            unique: None,
            events: false,
            group: None,
            traceparent: super::trace::current(),
        }
    }

    /// Puts the job in `group` (see [`JobSpec::group`]).
    pub fn in_group(mut self, group: JobGroup) -> Self {
        self.group = Some(group);
        self
    }

    /// Keeps an event stream of the job's life (see [`JobSpec::events`]).
    pub fn with_events(mut self) -> Self {
        self.events = true;
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs no earlier than `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.run_at(at)
    }

    /// Refuses any other job on this queue with the same `key` for `window` from when this one
    /// is added (see [`Uniqueness`]); if the key is already held, this job is not added.
    pub fn unique_for(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.unique = Some(Uniqueness::new(key, window));
        self
    }
}

/// A job a worker holds a lease on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The queue partition it came from, what the engine's calls on it take: the queue's name,
    /// or `<queue>~<i>` for partition `i` ≥ 1 of a partitioned queue (see [`crate::partitions`]).
    pub queue: String,
    /// Job id.
    pub id: String,
    /// Lease token: ack and fail must present it; a newer claim makes it stale.
    pub lease: u64,
    /// This attempt's number (1 for the first run).
    pub attempt: u32,
    /// Job kind.
    pub kind: String,
    /// JSON payload text.
    pub payload: String,
    /// 0 (most urgent) to 9 (least); lower levels run first, FIFO within one level.
    pub priority: Priority,
    /// Attempts allowed in total.
    pub max_attempts: u32,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// When it was first enqueued (ms since the epoch, Redis clock).
    pub created_at_ms: i64,
    /// The trace context it was staged in (see [`JobSpec::traceparent`]).
    pub traceparent: Option<String>,
}

impl ClaimedJob {
    /// What to do after this attempt failed with `error`: wait this long, or `None` for dead.
    pub fn next_retry(&self, error: &JobError, random: f64) -> Option<Duration> {
        match error {
            JobError::Permanent(_) | JobError::Cancelled(_) => None,
            _ if self.attempt >= self.max_attempts => None,
            JobError::Retry {
                after: Some(after), ..
            } => Some(*after),
            JobError::Retry { after: None, .. } => {
                Some(self.retry.backoff.delay(self.attempt, random))
            }
        }
    }
}

/// How a handler reports failure, so the engine knows whether another attempt can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Temporary (timeout, 5xx, connection refused): retry per policy, or after `after` if the
    /// other side said when (`Retry-After`).
    Retry {
        /// What went wrong.
        message: String,
        /// Wait at least this long before the next attempt.
        after: Option<Duration>,
    },
    /// Cannot succeed however often it is tried (bad recipient, malformed payload): dead now.
    Permanent(String),
    /// The handler stopped because it was asked to ([`crate::JobInfo::cancelled`]), or gave up
    /// because the work became moot: the job ends cancelled, neither retried nor dead.
    Cancelled(String),
}

impl JobError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::Retry {
            message: message.into(),
            after: None,
        }
    }

    /// A retryable failure with a wait the other side asked for.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self::Retry {
            message: message.into(),
            after: Some(after),
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// The handler stopped on request; the job ends cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::Cancelled(message.into())
    }

    /// Classifies any handler error: a `JobError` keeps its kind, anything else is retryable.
    pub fn classify(error: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(job_error) = error.downcast_ref::<JobError>() {
            return job_error.clone();
        }
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retry(message)
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retry { message, .. } | Self::Permanent(message) | Self::Cancelled(message) => {
                message
            }
        }
    }

    /// The same failure with what was being done put in front of its message
    /// (`loading report: database error: ...`); whether and when it is retried do not change.
    pub fn context(self, context: impl fmt::Display) -> Self {
        match self {
            Self::Retry { message, after } => Self::Retry {
                message: format!("{context}: {message}"),
                after,
            },
            Self::Permanent(message) => Self::Permanent(format!("{context}: {message}")),
            Self::Cancelled(message) => Self::Cancelled(format!("{context}: {message}")),
        }
    }
}

/// Says what a handler was doing when a step failed, so the dashboard reads
/// `loading report: ...` instead of a bare cause:
/// `reports.find(id).await.context("loading report")?`.
///
/// Works on any error that converts into a [`JobError`]; the conversion decides whether the
/// failure is retried, the context only adds words.
pub trait JobResultExt<T> {
    /// Converts the error into a [`JobError`] and prefixes its message with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T, JobError>;
}

impl<T, E: Into<JobError>> JobResultExt<T> for Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T, JobError> {
        self.map_err(|error| error.into().context(context))
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry { message, .. } => write!(f, "{message}"),
            Self::Permanent(message) => write!(f, "permanent failure: {message}"),
            Self::Cancelled(message) => write!(f, "cancelled: {message}"),
        }
    }
}

impl std::error::Error for JobError {}

impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<JobError>() {
            Ok(job_error) => job_error,
            Err(other) => Self::retry(format!("{other:#}")),
        }
    }
}

/// An I/O failure (storage, network, a file) is taken as passing: retried.
impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        Self::retry(e.to_string())
    }
}

/// A blocking task that panicked or was cancelled: retried (the engine dead-letters it after the
/// last attempt).
impl From<tokio::task::JoinError> for JobError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::retry(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_grows_and_caps() {
        let b = Backoff::Exponential {
            base_ms: 1000,
            factor: 2.0,
            max_ms: 5000,
            jitter: 0.0,
        };
        assert_eq!(b.delay(1, 0.3), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.3), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.3), Duration::from_secs(4));
        assert_eq!(b.delay(4, 0.3), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::Exponential {
            base_ms: 1000,
            factor: 2.0,
            max_ms: 60_000,
            jitter: 0.5,
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(1000));
    }

    #[test]
    fn schedule_repeats_its_last_delay() {
        let p = RetryPolicy::schedule(&[Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.backoff.delay(1, 0.5), Duration::from_millis(10));
        assert_eq!(p.backoff.delay(2, 0.5), Duration::from_millis(20));
        assert_eq!(p.backoff.delay(7, 0.5), Duration::from_millis(20));
    }

    #[test]
    fn policy_round_trips_as_text() {
        let p = RetryPolicy::exponential(3, Duration::from_millis(5), Duration::from_secs(1));
        assert_eq!(RetryPolicy::decode(&p.encode()), p);
        assert_eq!(RetryPolicy::decode("garbage"), RetryPolicy::default());
    }

    #[test]
    fn specs_without_a_key_read_and_write_as_before() {
        // An outbox row written before uniqueness existed.
        let old = serde_json::to_value(JobSpec::new("q", "k", serde_json::json!({}))).unwrap();
        assert!(old.get("unique").is_none(), "no key, no field: {old}");
        let read: JobSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.unique, None);

        let keyed = JobSpec::new("q", "k", serde_json::json!({}))
            .unique_for("order-7", Duration::from_secs(90));
        let text = serde_json::to_string(&keyed).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), keyed);
        assert_eq!(
            keyed.unique,
            Some(Uniqueness {
                key: "order-7".into(),
                window_ms: 90_000
            })
        );
    }

    #[test]
    fn permanent_errors_and_last_attempts_are_dead() {
        let mut job = ClaimedJob {
            queue: "q".into(),
            id: "1".into(),
            lease: 1,
            attempt: 1,
            kind: "k".into(),
            payload: "{}".into(),
            priority: Priority::NORMAL,
            max_attempts: 2,
            request_id: None,
            retry: RetryPolicy::schedule(&[Duration::from_millis(10)]),
            created_at_ms: 0,
            traceparent: None,
        };
        assert_eq!(job.next_retry(&JobError::permanent("no"), 0.5), None);
        assert_eq!(
            job.next_retry(&JobError::retry("later"), 0.5),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            job.next_retry(&JobError::retry_after("later", Duration::from_secs(3)), 0.5),
            Some(Duration::from_secs(3))
        );
        job.attempt = 2;
        assert_eq!(job.next_retry(&JobError::retry("later"), 0.5), None);
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_the_kind() {
        let permanent: Result<(), JobError> = Err(JobError::permanent("bad input"));
        assert_eq!(
            permanent.context("parsing"),
            Err(JobError::permanent("parsing: bad input"))
        );
        let later = JobError::retry_after("busy", Duration::from_secs(7));
        assert_eq!(
            later.context("calling"),
            JobError::retry_after("calling: busy", Duration::from_secs(7))
        );
    }

    #[test]
    fn io_errors_retry_with_context() {
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("disk unplugged"));
        assert_eq!(
            io.context("writing to storage"),
            Err(JobError::retry("writing to storage: disk unplugged"))
        );
    }
}
