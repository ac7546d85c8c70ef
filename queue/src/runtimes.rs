//! Run times and failures per job kind, kept in Redis for whoever inspects the queue (the api's
//! dashboard serves pages; the workers run the jobs, so the figures cannot live in one process).
//!
//! Workers count in memory: each backend's [`RuntimeRecorder`] adds every finished attempt to a
//! tally per kind and minute (attempts, failures, and a fixed-bucket histogram of durations) and
//! writes it every [`FLUSH_EVERY`] with one pipelined batch of `HINCRBY` into the per-minute hash
//! `<base>runtimes:<minute>`, kept two hours. Nothing is added to the engine's scripts: a job's
//! ack and claim cost what they cost without it. [`crate::QueueEngine::kind_runtimes`] sums the
//! minutes asked for and estimates percentiles from the buckets ([`KindTally::percentile`]).
//!
//! Fields of a minute's hash, per kind (`<kind>` is whatever follows the first `:`): `n:<kind>`
//! attempts finished, `f:<kind>` failed attempts (retried or dead), `ms:<kind>` their summed run
//! time in ms, `b<i>:<kind>` attempts whose run time fell in bucket `i` of [`BUCKET_BOUNDS_MS`].
//! Only non-zero fields are written.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::QueueEngine;

/// How often a worker writes what it counted.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// How long a minute's figures are kept: the dashboard reads the last hour.
pub const KEEP_SECONDS: i64 = 7200;

/// Upper bounds (inclusive, ms) of the duration buckets, 1-2-5 steps from a millisecond to ten
/// minutes; a last bucket holds everything longer.
pub const BUCKET_BOUNDS_MS: [f64; 18] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0, 200_000.0, 600_000.0,
];

/// Buckets in a tally: one per bound, and the one above the last bound.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// The key of `base`'s figures for `minute` (minutes since the epoch).
pub fn minute_key(base: &str, minute: i64) -> String {
    format!("{base}runtimes:{minute}")
}

/// Attempts of one kind over some minutes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindTally {
    /// Attempts that finished (succeeded, failed or were cancelled).
    pub attempts: u64,
    /// Of them, those that failed (to be retried, or dead).
    pub failed: u64,
    /// Their run times added up, ms.
    pub total_ms: u64,
    /// Attempts per duration bucket (see [`BUCKET_BOUNDS_MS`]).
    pub buckets: [u64; BUCKETS],
}

impl KindTally {
    /// Counts one attempt that ran `elapsed_ms` and `failed` or not.
    pub fn add(&mut self, elapsed_ms: f64, failed: bool) {
        self.attempts += 1;
        self.failed += u64::from(failed);
        self.total_ms += elapsed_ms.max(0.0).round() as u64;
        let bucket = BUCKET_BOUNDS_MS
            .iter()
            .position(|bound| elapsed_ms <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.buckets[bucket] += 1;
    }

    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: &KindTally) {
        self.attempts += other.attempts;
        self.failed += other.failed;
        self.total_ms += other.total_ms;
        for (sum, n) in self.buckets.iter_mut().zip(other.buckets) {
            *sum += n;
        }
    }

    /// The run time under which a share `q` (0 to 1) of the attempts finished, in ms, estimated
    /// from the buckets (linear within the bucket the rank falls in, as Prometheus's
    /// `histogram_quantile` does). `None` without attempts; an attempt longer than the last
    /// bound counts as the last bound, so a figure there means "at least".
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BUCKET_BOUNDS_MS[i - 1] };
                let Some(upper) = BUCKET_BOUNDS_MS.get(i) else {
                    return Some(lower);
                };
                return Some(lower + (upper - lower) * (rank - below as f64) / *n as f64);
            }
            below += n;
        }
        Some(BUCKET_BOUNDS_MS[BUCKETS - 2])
    }

    /// Failed attempts as a share of all attempts (0 to 1); `None` without attempts.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.failed as f64 / self.attempts as f64)
    }

    /// The hash fields (`n:<kind>`, ...) of this tally for `kind` with their increments,
    /// non-zero ones only.
    fn fields(&self, kind: &str) -> Vec<(String, u64)> {
        let mut fields = vec![
            (format!("n:{kind}"), self.attempts),
            (format!("f:{kind}"), self.failed),
            (format!("ms:{kind}"), self.total_ms),
        ];
        fields.extend(
            self.buckets
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("b{i}:{kind}"), *n)),
        );
        fields.retain(|(_, n)| *n > 0);
        fields
    }

    /// Adds one field of a minute's hash to the tally of its kind in `kinds`.
    pub fn add_field(kinds: &mut BTreeMap<String, KindTally>, field: &str, value: u64) {
        let Some((name, kind)) = field.split_once(':') else {
            return;
        };
        let tally = kinds.entry(kind.to_owned()).or_default();
        match name {
            "n" => tally.attempts += value,
            "f" => tally.failed += value,
            "ms" => tally.total_ms += value,
            bucket => {
                if let Some(slot) = bucket
                    .strip_prefix('b')
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| tally.buckets.get_mut(i))
                {
                    *slot += value;
                }
            }
        }
    }
}

/// What one worker (one backend: one queue in one process) counted and has not written yet:
/// tallies per minute and kind. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RuntimeRecorder {
    pending: Arc<Mutex<HashMap<(i64, String), KindTally>>>,
}

impl RuntimeRecorder {
    /// Counts an attempt of `kind` that ended as `outcome` (`completed`, `retried`, `dead` or
    /// `cancelled`, the metrics' labels) after `elapsed_ms`, in the current minute.
    pub fn record(&self, kind: &str, outcome: &str, elapsed_ms: f64) {
        let minute = chrono::Utc::now().timestamp_millis().div_euclid(60_000);
        self.record_at(minute, kind, outcome, elapsed_ms);
    }

    /// [`Self::record`] in `minute` (minutes since the epoch).
    pub fn record_at(&self, minute: i64, kind: &str, outcome: &str, elapsed_ms: f64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending
                .entry((minute, kind.to_owned()))
                .or_default()
                .add(elapsed_ms, matches!(outcome, "retried" | "dead"));
        }
    }

    /// Writes what was counted to `queue`'s minute hashes, in one pipelined round trip; on
    /// failure the tallies are kept and written with the next flush.
    pub async fn flush(&self, engine: &QueueEngine, queue: &str) -> redis::RedisResult<()> {
        let taken: Vec<((i64, String), KindTally)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(()),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let base = engine.base(queue);
        let mut pipe = redis::pipe();
        let mut minutes: Vec<i64> = Vec::new();
        for ((minute, kind), tally) in &taken {
            let key = minute_key(&base, *minute);
            for (field, n) in tally.fields(kind) {
                pipe.hincr(&key, field, n).ignore();
            }
            if !minutes.contains(minute) {
                minutes.push(*minute);
            }
        }
        for minute in minutes {
            pipe.expire(minute_key(&base, minute), KEEP_SECONDS)
                .ignore();
        }
        let written: redis::RedisResult<()> = pipe.query_async(&mut engine.redis()).await;
        if written.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            for (key, tally) in taken {
                pending.entry(key).or_default().merge(&tally);
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut tally = KindTally::default();
        // 90 attempts of 1 to 10 ms, 9 of about 150 ms, one of 3 s.
        for i in 0..90 {
            tally.add(1.0 + f64::from(i % 10), false);
        }
        for _ in 0..9 {
            tally.add(150.0, true);
        }
        tally.add(3_000.0, true);
        assert_eq!(tally.attempts, 100);
        assert_eq!(tally.failure_rate(), Some(0.1));
        let p50 = tally.percentile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        let p95 = tally.percentile(0.95).unwrap();
        assert!((100.0..=200.0).contains(&p95), "{p95}");
        let p99 = tally.percentile(0.99).unwrap();
        assert!((100.0..=200.0).contains(&p99), "{p99}");
        assert_eq!(tally.percentile(1.0), Some(5_000.0));
        assert_eq!(KindTally::default().percentile(0.5), None);
        assert_eq!(KindTally::default().failure_rate(), None);
    }

    #[test]
    fn an_attempt_past_the_last_bound_reads_as_the_last_bound() {
        let mut tally = KindTally::default();
        tally.add(3_600_000.0, false);
        assert_eq!(tally.buckets[BUCKETS - 1], 1);
        assert_eq!(tally.percentile(0.5), Some(600_000.0));
    }

    #[test]
    fn fields_read_back_into_the_same_tally() {
        let mut tally = KindTally::default();
        tally.add(0.4, false);
        tally.add(42.0, true);
        let mut kinds = BTreeMap::new();
        for (field, n) in tally.fields("report:build") {
            KindTally::add_field(&mut kinds, &field, n);
        }
        assert_eq!(kinds.get("report:build"), Some(&tally));
    }
}
