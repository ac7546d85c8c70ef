//! The inspection calls that take a queue's name, over every partition of a partitioned queue
//! (see [`crate::partitions`]): sizes and throughput are added up, listings are merged in the
//! list's order, a job is looked up in the partition that holds it, and actions on a queue act
//! on each partition. A queue of one partition goes straight to the single-partition read,
//! so partitions cost nothing where they are not used.

use std::collections::HashMap;

use futures::future::try_join_all;

use super::{
    GroupsOverview, JobDetail, JobFilter, JobList, JobPage, Matches, MinuteStats, QueueCounts,
    ScanPage, newest_first,
};
use crate::engine::{JobState, QueueEngine};

impl QueueCounts {
    /// The sizes of a queue whose partitions have `parts`: added up, paused when any
    /// partition is, the oldest waiting job of any.
    pub fn total(queue: &str, parts: &[QueueCounts]) -> QueueCounts {
        let mut total = QueueCounts {
            queue: queue.to_owned(),
            waiting_by_priority: [0; 10],
            waiting: 0,
            waiting_in_groups: 0,
            open_breakers: 0,
            scheduled: 0,
            retrying: 0,
            active: 0,
            completed: 0,
            dead: 0,
            cancelled: 0,
            paused: false,
            oldest_waiting_ms: 0,
        };
        for part in parts {
            for (sum, n) in total
                .waiting_by_priority
                .iter_mut()
                .zip(part.waiting_by_priority)
            {
                *sum += n;
            }
            total.waiting += part.waiting;
            total.waiting_in_groups += part.waiting_in_groups;
            total.open_breakers += part.open_breakers;
            total.scheduled += part.scheduled;
            total.retrying += part.retrying;
            total.active += part.active;
            total.completed += part.completed;
            total.dead += part.dead;
            total.cancelled += part.cancelled;
            total.paused |= part.paused;
            total.oldest_waiting_ms = total.oldest_waiting_ms.max(part.oldest_waiting_ms);
        }
        total
    }
}

impl MinuteStats {
    /// Adds per-period outcomes of several series (queues, or a queue's partitions) that cover
    /// the same periods in the same order.
    pub fn sum<'a>(series: impl IntoIterator<Item = &'a [MinuteStats]>) -> Vec<MinuteStats> {
        let mut total: Vec<MinuteStats> = Vec::new();
        for periods in series {
            if total.is_empty() {
                total = periods.to_vec();
                continue;
            }
            for (sum, stats) in total.iter_mut().zip(periods) {
                sum.enqueued += stats.enqueued;
                sum.completed += stats.completed;
                sum.failed += stats.failed;
                sum.retried += stats.retried;
                sum.dead += stats.dead;
                sum.cancelled += stats.cancelled;
            }
        }
        total
    }
}

/// A job found in one partition while listing several: where it is, and its place in the list.
struct Listed {
    partition: usize,
    id: String,
    score: f64,
}

/// Orders listed jobs as the list does: by score, the highest first when `newest_first`.
fn sort_listed(listed: &mut [Listed], newest_first: bool) {
    listed.sort_by(|a, b| {
        let order = a.score.total_cmp(&b.score);
        if newest_first { order.reverse() } else { order }
    });
}

impl QueueEngine {
    /// Runs `read` on every partition of `queue` at once (the queue alone when it is not
    /// partitioned); the results come in partition order.
    async fn on_each_partition<'a, T, Fut>(
        &'a self,
        queue: &str,
        read: impl Fn(String) -> Fut,
    ) -> redis::RedisResult<Vec<T>>
    where
        Fut: std::future::Future<Output = redis::RedisResult<T>> + 'a,
    {
        try_join_all(self.partitions(queue).into_iter().map(read)).await
    }

    /// Sizes of a queue (of all its partitions together).
    pub async fn counts(&self, queue: &str) -> redis::RedisResult<super::QueueCounts> {
        let parts = self.partition_counts(queue).await?;
        Ok(match <[QueueCounts; 1]>::try_from(parts) {
            Ok([one]) => one,
            Err(parts) => QueueCounts::total(queue, &parts),
        })
    }

    /// Sizes of each partition of a queue, partition 0 first (one entry for a queue that is not
    /// partitioned).
    pub async fn partition_counts(&self, queue: &str) -> redis::RedisResult<Vec<QueueCounts>> {
        self.on_each_partition(queue, |partition| async move {
            self.counts_in(&partition).await
        })
        .await
    }

    /// Per-minute outcomes for the last `minutes` minutes, oldest first (the current minute last).
    pub async fn throughput(
        &self,
        queue: &str,
        minutes: u32,
    ) -> redis::RedisResult<Vec<MinuteStats>> {
        let parts = self
            .on_each_partition(queue, |partition| async move {
                self.throughput_in(&partition, minutes).await
            })
            .await?;
        Ok(MinuteStats::sum(parts.iter().map(Vec::as_slice)))
    }

    /// Per-hour outcomes for the last `hours` hours, oldest first (the current hour last): the
    /// rollups the scripts keep beside the minutes, for charts over a day or a week.
    pub async fn hourly_throughput(
        &self,
        queue: &str,
        hours: u32,
    ) -> redis::RedisResult<Vec<MinuteStats>> {
        let parts = self
            .on_each_partition(queue, |partition| async move {
                self.hourly_throughput_in(&partition, hours).await
            })
            .await?;
        Ok(MinuteStats::sum(parts.iter().map(Vec::as_slice)))
    }

    /// One job with its error history, or `None` if it does not exist (any more).
    pub async fn job(&self, queue: &str, id: &str) -> redis::RedisResult<Option<JobDetail>> {
        let Some(partition) = self.locate(queue, id).await? else {
            return Ok(None);
        };
        let mut detail = self.job_in(&partition, id).await?;
        if let Some(detail) = detail.as_mut() {
            self.name_partition(queue, &partition, std::slice::from_mut(detail));
        }
        Ok(detail)
    }

    /// Marks details read from `partition` as jobs of `queue` in that partition (when `queue`
    /// is partitioned; otherwise they are left as read).
    pub(super) fn name_partition(&self, queue: &str, partition: &str, jobs: &mut [JobDetail]) {
        if self.partitions(queue).len() > 1 {
            for job in jobs {
                job.queue = queue.to_owned();
                job.partition = Some(partition.to_owned());
            }
        }
    }

    /// A page of jobs in `state`. Ready and scheduled list the next to run first; active lists
    /// the nearest lease deadline first; completed, dead and cancelled list the most recent first.
    /// A partitioned queue's partitions are merged in that order (the ready jobs of one priority
    /// interleave between partitions: each keeps its own FIFO sequence).
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<JobPage> {
        let names = self.partitions(queue);
        if names.len() == 1 {
            return self.list_in(queue, state, offset, limit).await;
        }
        let limit = limit.clamp(1, 200);
        let newest_first = newest_first(state);
        // The page is among the first `offset + limit` of some partitions: read that many of
        // each, merge, and skip `offset`.
        let stop = isize::try_from(offset + limit).unwrap_or(isize::MAX) - 1;
        let reads = names.iter().map(|partition| {
            let key = self.state_key(partition, state);
            let mut redis = self.redis();
            async move {
                let mut pipe = redis::pipe();
                pipe.zcard(&key);
                if newest_first {
                    pipe.zrevrange_withscores(&key, 0, stop);
                } else {
                    pipe.zrange_withscores(&key, 0, stop);
                }
                pipe.query_async::<(u64, Vec<(String, f64)>)>(&mut redis)
                    .await
            }
        });
        let mut total = 0;
        let mut listed = Vec::new();
        for (partition, (size, scored)) in try_join_all(reads).await?.into_iter().enumerate() {
            total += size;
            listed.extend(scored.into_iter().map(|(id, score)| Listed {
                partition,
                id,
                score,
            }));
        }
        sort_listed(&mut listed, newest_first);
        let page: Vec<Listed> = listed
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .collect();
        let jobs = self.details_of_listed(queue, &names, state, page).await?;
        Ok(JobPage {
            jobs,
            total,
            offset,
        })
    }

    /// The details of `page` (jobs of `queue`'s partitions `names`, in `state`), in its order.
    async fn details_of_listed(
        &self,
        queue: &str,
        names: &[String],
        state: JobState,
        page: Vec<Listed>,
    ) -> redis::RedisResult<Vec<JobDetail>> {
        let mut by_partition: Vec<Vec<(String, f64)>> = vec![Vec::new(); names.len()];
        for job in &page {
            by_partition[job.partition].push((job.id.clone(), job.score));
        }
        let reads = names
            .iter()
            .zip(&by_partition)
            .map(|(partition, scored)| async move {
                let mut jobs = self.details_in_state(partition, state, scored).await?;
                self.name_partition(queue, partition, &mut jobs);
                Ok::<_, redis::RedisError>(jobs)
            });
        let mut found: HashMap<(usize, String), JobDetail> = HashMap::new();
        for (partition, jobs) in try_join_all(reads).await?.into_iter().enumerate() {
            found.extend(
                jobs.into_iter()
                    .map(|job| ((partition, job.id.clone()), job)),
            );
        }
        Ok(page
            .into_iter()
            .filter_map(|job| found.remove(&(job.partition, job.id)))
            .collect())
    }

    /// The groups of `queue`: the `top` by backlog and every open breaker (bounded however many
    /// groups there are: one range read, then a pipelined read of each group shown, per
    /// partition).
    pub async fn groups(&self, queue: &str, top: usize) -> redis::RedisResult<GroupsOverview> {
        let mut parts = self
            .on_each_partition(queue, |partition| async move {
                self.groups_in(&partition, top).await
            })
            .await?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let mut merged = GroupsOverview {
            groups_with_backlog: 0,
            waiting: 0,
            top: Vec::new(),
            others_waiting: 0,
            open_breakers: Vec::new(),
        };
        for part in parts {
            merged.groups_with_backlog += part.groups_with_backlog;
            merged.waiting += part.waiting;
            merged.top.extend(part.top);
            merged.open_breakers.extend(part.open_breakers);
        }
        merged
            .top
            .sort_by(|a, b| b.waiting.cmp(&a.waiting).then(a.key.cmp(&b.key)));
        merged.top.truncate(top.clamp(1, 1000));
        let top_waiting: u64 = merged.top.iter().map(|g| g.waiting).sum();
        merged.others_waiting = merged.waiting.saturating_sub(top_waiting);
        merged.open_breakers.truncate(100);
        Ok(merged)
    }

    /// A page of `list` kept by `filter`: the jobs are looked at in the list's order, a batch per
    /// round trip, at most [`SCAN_LIMIT`](super::SCAN_LIMIT) of them (per partition of a partitioned queue). A
    /// whole state with an empty filter is a plain page of its set (every job counted, however
    /// many).
    pub async fn scan_jobs(
        &self,
        queue: &str,
        list: JobList,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<ScanPage> {
        if let (JobList::State(state), true) = (list, filter.is_empty()) {
            let page = self.list(queue, state, offset, limit).await?;
            return Ok(ScanPage {
                matched: page.total,
                scanned: page.total,
                complete: true,
                offset,
                jobs: page.jobs,
            });
        }
        let names = self.partitions(queue);
        if names.len() == 1 {
            return self.scan_jobs_in(queue, list, filter, offset, limit).await;
        }
        let limit = limit.clamp(1, 200);
        let scans = try_join_all(
            names
                .iter()
                .map(|partition| self.scan(partition, list, filter, 0, offset + limit)),
        )
        .await?;
        let (mut matched, mut scanned, mut complete) = (0, 0, true);
        let mut listed = Vec::new();
        for (partition, scan) in scans.into_iter().enumerate() {
            matched += scan.matched;
            scanned += scan.scanned;
            complete &= scan.complete;
            listed.extend(scan.page.into_iter().map(|(id, score)| Listed {
                partition,
                id,
                score,
            }));
        }
        let state = list.state();
        sort_listed(&mut listed, newest_first(state));
        let page = listed
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .collect();
        Ok(ScanPage {
            jobs: self.details_of_listed(queue, &names, state, page).await?,
            matched,
            scanned,
            complete,
            offset,
        })
    }

    /// Every id of `list` that `filter` keeps, among the first [`SCAN_LIMIT`](super::SCAN_LIMIT) jobs of the list
    /// (of each partition): what an action on "everything matching" acts on.
    pub async fn matching_ids(
        &self,
        queue: &str,
        list: JobList,
        filter: &JobFilter,
    ) -> redis::RedisResult<Matches> {
        let parts = self
            .on_each_partition(queue, |partition| async move {
                self.matching_ids_in(&partition, list, filter).await
            })
            .await?;
        let mut all = Matches {
            ids: Vec::new(),
            complete: true,
        };
        for part in parts {
            all.ids.extend(part.ids);
            all.complete &= part.complete;
        }
        Ok(all)
    }

    /// Runs an operator action on job `id` in the partition that holds it; false when none does.
    pub(super) async fn admin_located(
        &self,
        queue: &str,
        action: &str,
        id: &str,
    ) -> redis::RedisResult<bool> {
        match self.locate(queue, id).await? {
            Some(partition) => self.admin(&partition, action, id).await,
            None => Ok(false),
        }
    }

    /// Runs an operator action on many ids in each partition (an id absent from a partition is
    /// left alone there); returns how many jobs it changed.
    pub(super) async fn admin_many_all(
        &self,
        queue: &str,
        action: &str,
        ids: &[String],
    ) -> redis::RedisResult<u64> {
        let mut changed = 0;
        for partition in self.partitions(queue) {
            changed += self.admin_many(&partition, action, ids).await?;
        }
        Ok(changed)
    }

    /// Runs a bulk action on each partition (with a cutoff time for actions that take one);
    /// returns how many jobs it touched.
    pub(super) async fn bulk_all(
        &self,
        queue: &str,
        action: &str,
        cutoff_ms: i64,
    ) -> redis::RedisResult<u64> {
        let mut total = 0;
        for partition in self.partitions(queue) {
            total += self.bulk_before(&partition, action, cutoff_ms).await?;
        }
        Ok(total)
    }
}
