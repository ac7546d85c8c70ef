//! Declaring a job type once: the [`Job`] trait says which queue its jobs go to, what each is
//! called, its priority, its retry policy and its time limit, so the code that stages a job and
//! the worker that runs it read one declaration instead of repeating it.
//!
//! ```
//! use std::time::Duration;
//! use orderly_queue::{Job, Priority, QueueName, RetryPolicy};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Resize { image_id: u64 }
//!
//! impl Job for Resize {
//!     type Settings = ();
//!     const QUEUE: QueueName = QueueName::new("images");
//!     fn kind(&self) -> &'static str { "image.resize" }
//!     fn retry_policy(&self, _: &()) -> RetryPolicy {
//!         RetryPolicy::exponential(5, Duration::from_secs(1), Duration::from_secs(60))
//!     }
//!     fn timeout(_: &()) -> Duration { Duration::from_secs(30) }
//! }
//!
//! let spec = Resize { image_id: 7 }.spec(&()).unwrap();
//! assert_eq!((spec.queue.as_str(), spec.kind.as_str()), ("images", "image.resize"));
//! assert_eq!(spec.priority, Priority::NORMAL);
//! ```

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

use crate::job::{JobGroup, JobSpec, Priority, RetryPolicy, Uniqueness};

/// The name of a queue, checked when it is declared (a `const`): 1 to 64 characters of
/// `a-z`, `0-9`, `_`, `-` and `.`, so it is safe inside Redis keys and their `{queue}` hash
/// tags and in metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(&'static str);

impl QueueName {
    /// A queue name; an invalid one fails to compile when used in a `const`, and panics otherwise.
    pub const fn new(name: &'static str) -> Self {
        assert!(
            Self::is_valid(name),
            "a queue name is 1 to 64 characters of a-z, 0-9, '_', '-' and '.'"
        );
        Self(name)
    }

    /// Whether `name` may name a queue (see [`QueueName`]).
    pub const fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 64 {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {}
                _ => return false,
            }
            i += 1;
        }
        true
    }

    /// The name as the engine's calls take it.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl PartialEq<str> for QueueName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for QueueName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for QueueName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// A job type: its payload (the type itself, stored as JSON: ids, not entities) and everything
/// the engine needs to stage and run it. One queue holds one job type; an enum payload gives a
/// queue several kinds (`email.welcome`, `email.order_confirmation`).
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// What the declaration reads from the application's configuration (retry delays, time
    /// limits); `()` when it reads nothing.
    type Settings: Send + Sync + 'static;

    /// The queue its jobs go to and workers serve.
    const QUEUE: QueueName;

    /// What this job is, shown on the dashboard and in logs (`email.order_confirmation`).
    fn kind(&self) -> &'static str;

    /// Where it stands in its queue: lower levels are claimed first.
    fn priority(&self) -> Priority {
        Priority::NORMAL
    }

    /// Attempts in total and the waits between them.
    fn retry_policy(&self, settings: &Self::Settings) -> RetryPolicy;

    /// How long one attempt may run before it is cancelled and counted as failed (a stuck
    /// handler; the lease keeps a long job that is still working alive until then).
    fn timeout(settings: &Self::Settings) -> Duration;

    /// A key that keeps a second job of this type with the same key off its queue for a
    /// window (one report per customer and day, one reminder per cart), or `None` (the
    /// default) for no such rule. The window is counted from enqueue and is independent of how
    /// long finished jobs are kept; while it runs, a job with the held key is dropped at
    /// enqueue (see [`crate::job::Uniqueness`]). Jobs staged through the outbox keep this key
    /// instead of the outbox's own (a job has one key), so the key's window then also bounds how
    /// long a re-push of the same row is refused once the job itself is trimmed.
    fn unique(&self, settings: &Self::Settings) -> Option<Uniqueness> {
        let _ = settings;
        None
    }

    /// Whether its jobs keep an event stream for clients to follow live (progress, the
    /// outcome; see [`crate::JobSpec::events`]). Off by default.
    fn events() -> bool {
        false
    }

    /// The group this job belongs to in its queue (a webhook delivery's endpoint), for
    /// per-group limits, fair rotation and ordering (see [`crate::limits`]), or `None` (the
    /// default).
    fn group(&self, settings: &Self::Settings) -> Option<JobGroup> {
        let _ = settings;
        None
    }

    /// The engine's spec for this job, to run as `run_at` says.
    fn spec_at(&self, settings: &Self::Settings, run_at: RunAt) -> serde_json::Result<JobSpec> {
        let mut spec = JobSpec::new(
            Self::QUEUE.as_str(),
            self.kind(),
            serde_json::to_value(self)?,
        )
        .with_priority(self.priority())
        .with_retry(self.retry_policy(settings));
        spec.unique = self.unique(settings);
        spec.events = Self::events();
        spec.group = self.group(settings);
        Ok(run_at.apply(spec))
    }

    /// The engine's spec for this job, to run as soon as a worker is free.
    fn spec(&self, settings: &Self::Settings) -> serde_json::Result<JobSpec> {
        self.spec_at(settings, RunAt::Now)
    }
}

/// When a staged or enqueued job may first run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunAt {
    /// As soon as a worker is free.
    #[default]
    Now,
    /// Not before this time (a time in the past is the same as [`RunAt::Now`]).
    Time(DateTime<Utc>),
    /// Not before this long after it is staged.
    After(Duration),
}

impl RunAt {
    /// [`RunAt::Time`] when a time is given, else [`RunAt::Now`] (an optional `run_at` field of
    /// a request).
    pub fn time_or_now(time: Option<DateTime<Utc>>) -> Self {
        time.map_or(Self::Now, Self::Time)
    }

    /// `spec` with its start time set accordingly.
    pub fn apply(self, spec: JobSpec) -> JobSpec {
        match self {
            Self::Now => spec,
            Self::Time(time) => spec.run_at(time),
            Self::After(delay) => spec.delay(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        for good in ["emails", "a", "webhooks-eu.2", "x_y"] {
            assert!(QueueName::is_valid(good), "{good}");
        }
        let long = "q".repeat(65);
        for bad in [
            "",
            "Emails",
            "e mails",
            "{emails}",
            "emails:x",
            "é",
            long.as_str(),
        ] {
            assert!(!QueueName::is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "queue name")]
    fn an_invalid_queue_name_is_refused() {
        let _ = QueueName::new("no spaces");
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Reminder {
        cart_id: u64,
    }

    impl Job for Reminder {
        type Settings = Duration;
        const QUEUE: QueueName = QueueName::new("reminders");
        fn kind(&self) -> &'static str {
            "cart.reminder"
        }
        fn retry_policy(&self, _: &Duration) -> RetryPolicy {
            RetryPolicy::once()
        }
        fn timeout(_: &Duration) -> Duration {
            Duration::from_secs(5)
        }
        fn unique(&self, window: &Duration) -> Option<Uniqueness> {
            Some(Uniqueness::new(format!("cart:{}", self.cart_id), *window))
        }
    }

    #[test]
    fn a_declared_uniqueness_key_goes_into_the_spec() {
        let spec = Reminder { cart_id: 7 }
            .spec_at(
                &Duration::from_secs(3600),
                RunAt::After(Duration::from_secs(60)),
            )
            .unwrap();
        assert_eq!(
            spec.unique,
            Some(Uniqueness {
                key: "cart:7".into(),
                window_ms: 3_600_000
            })
        );
        assert!(spec.run_at.is_some());
    }

    #[test]
    fn run_at_sets_the_start_time() {
        let spec = || JobSpec::new("q", "k", serde_json::Value::Null);
        assert_eq!(RunAt::Now.apply(spec()).run_at, None);
        let at = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(RunAt::Time(at).apply(spec()).run_at, Some(at));
        let later = RunAt::After(Duration::from_secs(60))
            .apply(spec())
            .run_at
            .unwrap();
        let from_now = later - Utc::now();
        assert!(
            from_now > chrono::Duration::seconds(50) && from_now <= chrono::Duration::seconds(60)
        );
        assert_eq!(RunAt::time_or_now(None), RunAt::Now);
        assert_eq!(RunAt::time_or_now(Some(at)), RunAt::Time(at));
    }
}
