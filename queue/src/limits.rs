//! Fleet-wide flow control of a queue: a rate limit (jobs started per second, minute or hour)
//! and a concurrency cap (jobs running at once), enforced by the claim script in Redis, so any
//! number of worker processes together stay within them.
//!
//! - **Rate**: a token bucket per queue in Redis (`<base>rate`: tokens and when they were
//!   counted), refilled at the limit's rate and holding at most [`RateLimit::burst`] tokens. A
//!   claim takes one token per job it starts; a job held back by the limit stays waiting with its
//!   attempts untouched. The claim answers when the next token is due, and an idle worker sleeps
//!   until then instead of asking again.
//! - **Concurrency**: the queue's leases are its running jobs, so the cap is checked against the
//!   size of the `active` set: a killed worker's slots come back when its leases expire and
//!   never leak. Every ack of a capped queue wakes a waiting worker, since it freed a slot.
//!
//! - **Groups**: a job may carry a group key (a webhook's endpoint); its queue's
//!   [`GroupLimits`] then hold per group: a rate and a cap of each group's own (a token bucket
//!   and the set of its running jobs in Redis), and a [`Breaker`] that pauses a group whose jobs
//!   keep failing. Claims rotate between the groups with waiting jobs (round robin: the group
//!   served least recently first), so a group with a backlog of thousands delays another
//!   group's job by one turn, not by its backlog; priorities hold inside a group. A group whose
//!   limit is reached leaves the rotation (its jobs wait, attempts untouched) and rejoins when a
//!   token is due, its breaker's cool-down ends or one of its running jobs ends, so no worker
//!   polls for it. An *ordered* job ([`crate::JobGroup::ordered`]) runs alone in its group, in
//!   the order it was added, and a retry keeps its place: later jobs of the group wait for it.
//!
//! Every process must run with the same limits (they come from the environment every worker
//! reads); a process with other limits enforces its own on its claims.

use std::{fmt, time::Duration};

/// At most `jobs` started per `per`, across every worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per period, at least 1.
    pub jobs: u32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl RateLimit {
    /// `50/s`, `600/m` or `1000/h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (jobs, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a rate such as 50/s, 600/m or 1000/h"))?;
        let jobs: u32 = jobs.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("{text:?}: the number of jobs must be a whole number above 0")
        })?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => {
                return Err(format!("{text:?}: the period {other:?} must be s, m or h"));
            }
        };
        Ok(Self { jobs, per })
    }

    /// The same rate as jobs per the shortest period (a second, a minute, an hour) in which it
    /// comes to at least `jobs` jobs (or per hour, however few).
    fn in_units_of_at_least(self, jobs: u64) -> (u64, Duration) {
        let per_hour = u64::from(self.jobs) * 3600 / self.per.as_secs().max(1);
        [1u64, 60, 3600]
            .into_iter()
            .filter(|secs| *secs >= self.per.as_secs())
            .map(|secs| (per_hour * secs / 3600, Duration::from_secs(secs)))
            .find(|(n, _)| *n >= jobs)
            .unwrap_or((per_hour, Duration::from_secs(3600)))
    }

    /// The period in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.per.as_millis() as u64
    }

    /// Jobs per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.jobs) / self.per.as_secs_f64()
    }

    /// The most jobs that may start at once after a quiet spell: a tenth of a second's worth,
    /// at least one. Small, so that no window of a few seconds exceeds the rate by more than a
    /// few percent, and large enough that a fast limit is not held back by claim round trips.
    pub fn burst(&self) -> u32 {
        ((self.per_second() / 10.0).floor() as u32).max(1)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.jobs)
    }
}

/// The flow control of one queue; the default is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// Jobs started per period, fleet-wide.
    pub rate: Option<RateLimit>,
    /// Jobs running at once, fleet-wide.
    pub concurrency: Option<u32>,
    /// What holds for each group of the queue (jobs with a group key) on its own.
    pub group: GroupLimits,
}

/// Limits that hold for each group of a queue separately, fleet-wide; the default is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupLimits {
    /// Jobs of one group started per period.
    pub rate: Option<RateLimit>,
    /// Jobs of one group running at once.
    pub concurrency: Option<u32>,
    /// Pause a group whose jobs keep failing.
    pub breaker: Option<Breaker>,
}

/// A circuit breaker per group: after `failures` failed attempts in a row the group's jobs wait
/// (their attempts untouched) for a cool-down; then one job runs as a probe: its success closes
/// the breaker, its failure opens it again for twice as long, up to `max_cooldown`. Any success
/// of the group closes it; an operator can close it by hand. A lease lost because a worker died
/// is not the group's failure and does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Failed attempts in a row that open it, at least 1.
    pub failures: u32,
    /// The first cool-down.
    pub cooldown: Duration,
    /// The longest cool-down, however long the group keeps failing.
    pub max_cooldown: Duration,
}

impl Breaker {
    /// Opens after `failures` in a row; cool-downs from 30 s doubling up to 30 min.
    pub fn after(failures: u32) -> Self {
        Self {
            failures: failures.max(1),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(30 * 60),
        }
    }

    /// The fail script's arguments: failures, first and longest cool-down in ms.
    pub(crate) fn script_args(breaker: Option<Self>) -> [u64; 3] {
        breaker.map_or([0, 0, 0], |b| {
            [
                u64::from(b.failures),
                (b.cooldown.as_millis() as u64).max(1),
                (b.max_cooldown.as_millis() as u64).max(1),
            ]
        })
    }
}

impl GroupLimits {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.rate.is_some() || self.concurrency.is_some() || self.breaker.is_some()
    }
}

/// A rate and a cap as the claim script takes them: jobs per period, period (ms), burst, cap
/// (0: none for each).
fn rate_and_cap_args(rate: Option<RateLimit>, cap: Option<u32>) -> [u64; 4] {
    let cap = u64::from(cap.unwrap_or(0));
    match rate {
        Some(rate) => [
            u64::from(rate.jobs),
            rate.period_ms(),
            u64::from(rate.burst()),
            cap,
        ],
        None => [0, 0, 0, cap],
    }
}

impl QueueLimits {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.rate.is_some() || self.concurrency.is_some() || self.group.is_limited()
    }

    /// Partition `index`'s share of these limits when the queue has `count` partitions (see
    /// [`crate::partitions`]): the rate and the cap are divided between the partitions (the
    /// first ones take the remainder), each partition's scripts enforce their share, and the
    /// shares add up to the whole. A rate of fewer jobs per second than partitions is divided
    /// per minute or per hour instead. Group limits are not divided: a group lives in one
    /// partition. Limits [`Self::check_partitions`] refuses get a share of at least one job
    /// each, never none (which would mean unlimited).
    pub fn share(&self, index: u16, count: u16) -> Self {
        if count <= 1 {
            return *self;
        }
        let split = |whole: u64| -> u32 {
            let part =
                whole / u64::from(count) + u64::from(u64::from(index) < whole % u64::from(count));
            u32::try_from(part).unwrap_or(u32::MAX).max(1)
        };
        Self {
            rate: self.rate.map(|rate| {
                let (jobs, per) = rate.in_units_of_at_least(u64::from(count));
                RateLimit {
                    jobs: split(jobs),
                    per,
                }
            }),
            concurrency: self.concurrency.map(|cap| split(u64::from(cap))),
            group: self.group,
        }
    }

    /// Whether these limits can be divided between `count` partitions: a cap of at least one
    /// job per partition, a rate of at least one job per partition per hour.
    pub fn check_partitions(&self, count: u16) -> Result<(), String> {
        if let Some(cap) = self.concurrency.filter(|cap| *cap < u32::from(count)) {
            return Err(format!(
                "a concurrency cap of {cap} cannot be shared by {count} partitions (each needs at least 1)"
            ));
        }
        if let Some(rate) = self.rate {
            let (jobs, _) = rate.in_units_of_at_least(u64::from(count));
            if jobs < u64::from(count) {
                return Err(format!(
                    "a rate of {rate} cannot be shared by {count} partitions (each needs at least 1 job an hour)"
                ));
            }
        }
        Ok(())
    }

    /// The claim script's arguments: the queue's rate and cap, then each group's.
    pub(crate) fn script_args(&self) -> [u64; 8] {
        let [a, b, c, d] = rate_and_cap_args(self.rate, self.concurrency);
        let [e, f, g, h] = rate_and_cap_args(self.group.rate, self.group.concurrency);
        [a, b, c, d, e, f, g, h]
    }
}

/// Parses `queue=value,queue=value` lists (`emails=50/s,webhooks=500/s`), checking each value
/// with `parse`; every queue once. Empty text is an empty list.
pub fn parse_per_queue<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let mut out: Vec<(String, T)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (queue, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not queue=value"))?;
        let queue = queue.trim();
        if !crate::QueueName::is_valid(queue) {
            return Err(format!("{queue:?} is not a queue name"));
        }
        if out.iter().any(|(q, _)| q == queue) {
            return Err(format!("queue {queue:?} is listed twice"));
        }
        out.push((queue.to_owned(), parse(value)?));
    }
    Ok(out)
}

/// A concurrency cap: a whole number from 1 to 100,000.
pub fn parse_cap(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| format!("{text:?} is not a concurrency cap from 1 to 100000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_shared_between_partitions_and_add_up_to_the_whole() {
        let limits = QueueLimits {
            rate: Some(RateLimit::parse("50/s").unwrap()),
            concurrency: Some(10),
            group: GroupLimits {
                concurrency: Some(2),
                ..GroupLimits::default()
            },
        };
        let shares: Vec<QueueLimits> = (0..4).map(|i| limits.share(i, 4)).collect();
        assert_eq!(
            shares
                .iter()
                .map(|l| l.concurrency.unwrap())
                .collect::<Vec<_>>(),
            [3, 3, 2, 2]
        );
        assert_eq!(
            shares
                .iter()
                .map(|l| l.rate.unwrap().to_string())
                .collect::<Vec<_>>(),
            ["13/s", "13/s", "12/s", "12/s"]
        );
        assert!(shares.iter().all(|l| l.group == limits.group));
        assert_eq!(limits.share(0, 1), limits);
        // Slower than one job a second per partition: shared per minute, then per hour.
        let slow = QueueLimits {
            rate: Some(RateLimit::parse("2/s").unwrap()),
            ..QueueLimits::default()
        };
        assert_eq!(slow.share(0, 4).rate.unwrap().to_string(), "30/m");
        let slower = QueueLimits {
            rate: Some(RateLimit::parse("1/m").unwrap()),
            ..QueueLimits::default()
        };
        assert_eq!(slower.share(3, 64).rate.unwrap().to_string(), "1/h");
        assert_eq!(slower.share(0, 64).rate.unwrap().to_string(), "1/h");
        assert!(limits.check_partitions(10).is_ok());
        assert!(
            limits
                .check_partitions(11)
                .unwrap_err()
                .contains("cap of 10")
        );
        let hourly = QueueLimits {
            rate: Some(RateLimit::parse("3/h").unwrap()),
            ..QueueLimits::default()
        };
        assert!(hourly.check_partitions(4).unwrap_err().contains("3/h"));
        assert!(hourly.check_partitions(3).is_ok());
    }

    #[test]
    fn rates_parse_and_print() {
        for (text, jobs, secs) in [
            ("50/s", 50, 1),
            (" 600/m ", 600, 60),
            ("1000/h", 1000, 3600),
        ] {
            let rate = RateLimit::parse(text).unwrap();
            assert_eq!((rate.jobs, rate.per.as_secs()), (jobs, secs), "{text}");
            assert_eq!(RateLimit::parse(&rate.to_string()).unwrap(), rate);
        }
        for bad in ["50", "0/s", "-1/s", "5/d", "x/s", "/s", "50/"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_burst_is_a_tenth_of_a_second_and_at_least_one() {
        let burst = |text| RateLimit::parse(text).unwrap().burst();
        assert_eq!(burst("40/s"), 4);
        assert_eq!(burst("20000/s"), 2000);
        assert_eq!(burst("5/s"), 1);
        assert_eq!(burst("600/m"), 1);
    }

    #[test]
    fn per_queue_lists_parse_and_refuse_mistakes() {
        let parsed = parse_per_queue("emails=50/s, webhooks=500/m", RateLimit::parse).unwrap();
        assert_eq!(parsed[0].0, "emails");
        assert_eq!(parsed[1].1, RateLimit::parse("500/m").unwrap());
        assert!(parse_per_queue("", parse_cap).unwrap().is_empty());
        assert!(parse_per_queue("reports=2", parse_cap).unwrap()[0].1 == 2);
        for bad in ["emails", "emails=0", "Emails=2", "a=1,a=2", "reports=x"] {
            assert!(parse_per_queue(bad, parse_cap).is_err(), "{bad}");
        }
    }
}
