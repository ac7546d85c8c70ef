//! Partitions: one queue spread over several hash tags, so that on a Redis Cluster a hot queue
//! is the work of several nodes instead of one.
//!
//! A queue's keys share the hash tag `{queue}`, which puts the whole queue in one cluster slot
//! and every script on one node. A partitioned queue (`QUEUE_PARTITIONS=emails=4`) is `count`
//! queues of the engine's kind under one name: partition 0 keeps the queue's own keys (a backlog
//! from before the queue was partitioned stays where workers look), and partition `i` is the
//! queue `<queue>~<i>`, with the hash tag `{<queue>~<i>}` and so a slot of its own.
//!
//! - **Where a job goes**: a stable hash of its group key, else its uniqueness key, else its id.
//!   A group therefore lives in one partition, so per-group limits, ordered groups and breakers
//!   hold exactly; a job enqueued twice with the same id meets itself; a uniqueness key holds
//!   among jobs without a group (a grouped job's key holds within its group's partition).
//! - **Claims** rotate over the partitions (see the backend's fetcher and acker); priority order
//!   holds within a partition, not across them.
//! - **Queue-wide limits** (a rate, a concurrency cap) are split between the partitions (see
//!   [`crate::QueueLimits::share`]): each partition's scripts enforce their share, so the fleet
//!   stays within the whole. A partition that runs dry leaves its share unused.
//! - **Everything an operator or a client asks by queue name** (counts, listings, a job by id,
//!   cancel, pause, purge; see `inspect`) covers every partition.
//!
//! Every process must read the same partition counts. Raising a count is safe at any time;
//! lowering it leaves the jobs of the dropped partitions where no worker looks until it is
//! raised again, so drain first.

use std::collections::HashMap;

/// What separates a queue's name from a partition number; never part of a queue name.
pub const SEPARATOR: char = '~';

/// The most partitions one queue may have.
pub const MAX_PARTITIONS: u16 = 64;

/// The name the engine's calls take for partition `index` of `queue`.
pub fn partition_name(queue: &str, index: u16) -> String {
    if index == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{SEPARATOR}{index}")
    }
}

/// The queue a partition belongs to (a queue's own name for an unpartitioned queue).
pub fn queue_of(partition: &str) -> &str {
    partition
        .split_once(SEPARATOR)
        .map_or(partition, |(queue, _)| queue)
}

/// The partition number in a partition's name (0 for the queue's own name).
pub fn index_of(partition: &str) -> u16 {
    partition
        .split_once(SEPARATOR)
        .and_then(|(_, index)| index.parse().ok())
        .unwrap_or(0)
}

/// A partition count: a whole number from 1 to [`MAX_PARTITIONS`].
pub fn parse_count(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
        .ok_or_else(|| format!("{text:?} is not a partition count from 1 to {MAX_PARTITIONS}"))
}

/// How many partitions each queue has (one unless listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partitions {
    counts: HashMap<String, u16>,
}

impl Partitions {
    /// Queues with their partition counts (counts of 1 are the default and dropped).
    pub fn new(counts: impl IntoIterator<Item = (String, u16)>) -> Self {
        Self {
            counts: counts.into_iter().filter(|(_, count)| *count > 1).collect(),
        }
    }

    /// The partitioned queues with their counts.
    pub fn queues(&self) -> impl Iterator<Item = (&str, u16)> {
        self.counts
            .iter()
            .map(|(queue, count)| (queue.as_str(), *count))
    }

    /// How many partitions `queue` has.
    pub fn count(&self, queue: &str) -> u16 {
        self.counts.get(queue).copied().unwrap_or(1)
    }

    /// The names of `queue`'s partitions, partition 0 (the queue's own name) first.
    pub fn names(&self, queue: &str) -> Vec<String> {
        (0..self.count(queue))
            .map(|index| partition_name(queue, index))
            .collect()
    }

    /// The partition of `queue` that holds the job keyed `key` (its group key, else its
    /// uniqueness key, else its id; see [`crate::JobSpec::partition_key`]).
    pub fn partition_for(&self, queue: &str, key: &str) -> String {
        match self.count(queue) {
            1 => queue.to_owned(),
            count => partition_name(queue, (fnv1a(key.as_bytes()) % u64::from(count)) as u16),
        }
    }
}

/// FNV-1a, 64 bits: stable across processes, versions and platforms (the standard library's
/// hashers promise none of that), and spreads short keys such as ids well.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_name("emails", 0), "emails");
        assert_eq!(partition_name("emails", 3), "emails~3");
        for name in ["emails", "emails~3"] {
            let index = index_of(name);
            assert_eq!(partition_name(queue_of(name), index), name);
        }
        assert_eq!(queue_of("emails~3"), "emails");
        assert_eq!(index_of("emails"), 0);
    }

    #[test]
    fn jobs_spread_over_every_partition_and_the_same_key_always_lands_in_one() {
        let partitions = Partitions::new([("emails".to_owned(), 4), ("reports".to_owned(), 1)]);
        assert_eq!(partitions.count("reports"), 1);
        assert_eq!(partitions.count("webhooks"), 1);
        assert_eq!(
            partitions.names("emails"),
            ["emails", "emails~1", "emails~2", "emails~3"]
        );
        let mut per_partition = HashMap::new();
        for n in 0..4000 {
            let key = format!("0199a1b2-0000-7000-8000-{n:012}");
            let partition = partitions.partition_for("emails", &key);
            assert_eq!(partitions.partition_for("emails", &key), partition);
            *per_partition.entry(partition).or_insert(0) += 1;
        }
        assert_eq!(per_partition.len(), 4);
        // Within 10% of an even share.
        assert!(
            per_partition.values().all(|n| (900..=1100).contains(n)),
            "{per_partition:?}"
        );
        assert_eq!(partitions.partition_for("webhooks", "x"), "webhooks");
        // Pinned: a change of hash would move existing groups between partitions.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn counts_parse_within_bounds() {
        assert_eq!(parse_count(" 4 "), Ok(4));
        for refused in ["0", "65", "-1", "two", ""] {
            assert!(parse_count(refused).is_err(), "{refused}");
        }
    }
}
