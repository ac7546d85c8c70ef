//! How times, durations, ids and job states read on every page: short human durations, run
//! times and percentages, points in time for `<time>` elements (absolute and relative),
//! shortened ids for buttons and questions, the names job states go by in URLs and tabs, where a
//! group's page is, and retry policies as schedules.

use chrono::{DateTime, SecondsFormat, Utc};
use orderly::queue::{Backoff, JobState, RetryPolicy};
use serde::Serialize;

use crate::dashboard::session::urlencode_segment;

/// `3m 12s`, `1h 04m`, `2d 3h`: short enough for a table cell, precise enough to act on.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 if ms == 0 => "0s".into(),
        0 => "<1s".into(),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// A run time in ms for a table cell: `0.4 ms`, `12 ms`, `1.3 s`, `2m 05s`.
pub fn run_time(ms: f64) -> String {
    match ms {
        // The bounds sit where the shorter form would round up into the next one.
        ms if ms < 9.95 => format!("{ms:.1} ms"),
        ms if ms < 999.5 => format!("{ms:.0} ms"),
        ms if ms < 59_950.0 => format!("{:.1} s", ms / 1000.0),
        ms => human_duration(ms as u64),
    }
}

/// A share (0 to 1) as a percentage: `0%`, `0.4%`, `12%`, `100%`.
pub fn percent(share: f64) -> String {
    let percent = share * 100.0;
    if percent == 0.0 || percent >= 10.0 {
        format!("{percent:.0}%")
    } else {
        format!("{percent:.1}%")
    }
}

pub(super) fn datetime(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A point in time for a `<time>` element: machine form, readable form, and relative to `now`.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    /// RFC 3339, for the `datetime` attribute.
    pub iso: String,
    /// `2026-08-05 12:03:04 UTC`.
    pub text: String,
    /// `3m 12s ago` or `in 5m 00s`.
    pub relative: String,
    /// `12:03:04` (UTC): the time of day alone, for "waiting until …" within the hour.
    pub clock: String,
}

/// `ms` since the epoch as a [`Moment`] seen from `now_ms`.
pub fn moment(ms: i64, now_ms: i64) -> Option<Moment> {
    let at = datetime(ms)?;
    let delta = now_ms - ms;
    Some(Moment {
        iso: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        text: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        relative: if delta >= 0 {
            format!("{} ago", human_duration(delta.unsigned_abs()))
        } else {
            format!("in {}", human_duration(delta.unsigned_abs()))
        },
        clock: at.format("%H:%M:%S").to_string(),
    })
}

/// The first 8 characters of a long id (UUIDs), for buttons and questions.
pub fn short_id(id: &str) -> String {
    if id.chars().count() > 12 {
        format!("{}…", id.chars().take(8).collect::<String>())
    } else {
        id.to_owned()
    }
}

/// A group's page (the key is one path segment, whatever it holds).
pub fn group_url(queue: &str, key: &str) -> String {
    format!("/admin/queues/{queue}/groups/{}", urlencode_segment(key))
}

/// The job-list tabs of a queue page: URL key, engine state, label.
pub const STATE_TABS: [(&str, JobState, &str); 6] = [
    ("waiting", JobState::Ready, "Waiting"),
    ("scheduled", JobState::Scheduled, "Scheduled"),
    ("running", JobState::Active, "Running"),
    ("completed", JobState::Completed, "Completed"),
    ("dead", JobState::Dead, "Dead"),
    ("cancelled", JobState::Cancelled, "Cancelled"),
];

/// The URL key of a state (`ready` is "waiting" to operators, `active` is "running").
pub fn state_key(state: JobState) -> &'static str {
    STATE_TABS
        .iter()
        .find(|(_, s, _)| *s == state)
        .map(|(k, _, _)| *k)
        .unwrap_or("waiting")
}

/// The state of a URL key, accepting the engine's names too.
pub fn parse_state_key(key: &str) -> Option<JobState> {
    STATE_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, s, _)| *s)
        .or_else(|| JobState::parse(key))
}

/// Retry delays a schedule lists before it ends in `…`.
const LISTED_RETRIES: u32 = 8;

/// A retry policy as the schedule it gives a failing job: `3 attempts: retries after 5s, 5m 00s`,
/// or `1 attempt, no retries`. Exponential delays are listed at their full length, with the
/// share jitter may take off them.
pub fn retry_schedule(policy: &RetryPolicy) -> String {
    let attempts = policy.max_attempts.max(1);
    if attempts == 1 {
        return "1 attempt, no retries".into();
    }
    let retries = attempts - 1;
    let mut delays: Vec<String> = (1..=retries.min(LISTED_RETRIES))
        .map(|failed| human_duration(policy.backoff.delay(failed, 1.0).as_millis() as u64))
        .collect();
    if retries > LISTED_RETRIES {
        delays.push("…".into());
    }
    let jitter = match policy.backoff {
        Backoff::Exponential { jitter, .. } if jitter > 0.0 => format!(
            " (each up to {}% shorter, at random)",
            (jitter.min(1.0) * 100.0).round()
        ),
        _ => String::new(),
    };
    format!(
        "{attempts} attempts: retries after {}{jitter}",
        delays.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(400), "<1s");
        assert_eq!(human_duration(59_000), "59s");
        assert_eq!(human_duration(192_000), "3m 12s");
        assert_eq!(human_duration(3_840_000), "1h 04m");
        assert_eq!(human_duration(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
    }

    #[test]
    fn run_times_and_shares_read_well() {
        assert_eq!(run_time(0.42), "0.4 ms");
        assert_eq!(run_time(9.9875), "10 ms");
        assert_eq!(run_time(12.4), "12 ms");
        assert_eq!(run_time(1_260.0), "1.3 s");
        assert_eq!(run_time(125_000.0), "2m 05s");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.004), "0.4%");
        assert_eq!(percent(0.125), "12%");
        assert_eq!(percent(1.0), "100%");
    }

    #[test]
    fn retry_policies_read_as_schedules() {
        use std::time::Duration;
        let exponential =
            RetryPolicy::exponential(8, Duration::from_secs(5), Duration::from_secs(3600));
        assert_eq!(
            retry_schedule(&exponential),
            "8 attempts: retries after 5s, 10s, 20s, 40s, 1m 20s, 2m 40s, 5m 20s \
             (each up to 50% shorter, at random)"
        );
        let capped = RetryPolicy::exponential(12, Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(
            retry_schedule(&capped),
            "12 attempts: retries after 1s, 2s, 4s, 8s, 16s, 30s, 30s, 30s, … \
             (each up to 50% shorter, at random)"
        );
        let fixed = RetryPolicy::schedule(&[Duration::from_secs(5), Duration::from_secs(300)]);
        assert_eq!(
            retry_schedule(&fixed),
            "3 attempts: retries after 5s, 5m 00s"
        );
        assert_eq!(
            retry_schedule(&RetryPolicy::once()),
            "1 attempt, no retries"
        );
    }
}
