//! Reading and steering queues: what the dashboard and `/metrics` show, and the operator actions.
//!
//! Every read is bounded (counts are O(log n) per priority band, lists are paginated, a filtered
//! list looks at no more than [`SCAN_LIMIT`] jobs), so the dashboard can be left open on a queue
//! with a million jobs.
//!
//! What it reads besides the state sets: the per-minute outcome counts the scripts keep
//! (`stats:<minute>`, two hours) and their hourly rollups (`stats:h:<hour>`, eight days) for
//! throughput charts; the index of scheduled jobs that are retries (`retrying`), so retries are
//! counted and listed apart from first runs; and the run times per kind the workers write
//! ([`crate::runtimes`]), from which [`QueueEngine::kind_runtimes`] estimates percentiles.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use redis::AsyncCommands;
use serde::Serialize;

use crate::engine::{JobState, QueueEngine};

mod partitioned;

/// Sizes of one queue.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// Queue name.
    pub queue: String,
    /// Waiting jobs without a group per priority level 0..=9.
    pub waiting_by_priority: [u64; 10],
    /// Waiting jobs in total, grouped or not.
    pub waiting: u64,
    /// Of the waiting jobs, those in groups (see [`QueueEngine::groups`]).
    pub waiting_in_groups: u64,
    /// Groups whose breaker is open or probing.
    pub open_breakers: u64,
    /// Delayed, scheduled or backing off (retries included).
    pub scheduled: u64,
    /// Of the scheduled jobs, those waiting for a retry after a failed attempt (the others wait
    /// for their first run).
    pub retrying: u64,
    /// Leased by a worker right now.
    pub active: u64,
    /// Completed jobs still kept by retention.
    pub completed: u64,
    /// Jobs that failed for good; no retention trims them, they stay until an operator retries
    /// or purges them.
    pub dead: u64,
    /// Cancelled jobs (trimmed with dead jobs, past their retention).
    pub cancelled: u64,
    /// Claiming is paused by an operator.
    pub paused: bool,
    /// How long the oldest waiting job without a group has waited, in ms (0 when none waits).
    pub oldest_waiting_ms: u64,
}

/// Outcomes of one minute (or, from [`QueueEngine::hourly_throughput`], of one hour).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MinuteStats {
    /// Start of the minute (or hour), ms since the epoch.
    pub minute_ms: i64,
    /// New jobs accepted (a push whose id already existed is not counted).
    pub enqueued: u64,
    /// Jobs that succeeded in this minute, whatever their attempt.
    pub completed: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Failed attempts that were scheduled for retry.
    pub retried: u64,
    /// Jobs that went dead.
    pub dead: u64,
    /// Jobs cancelled (waiting ones at once, running ones when they stopped).
    pub cancelled: u64,
}

/// One job as the dashboard shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobDetail {
    /// Job id.
    pub id: String,
    /// The queue it was read from (an id is unique only within its queue).
    pub queue: String,
    /// The partition it is in, when its queue is partitioned (see [`crate::partitions`]).
    pub partition: Option<String>,
    /// Current state.
    pub state: String,
    /// What the job is (`email.order_confirmation`): which handler runs it.
    pub kind: String,
    /// Payload (parsed when it is JSON).
    pub payload: serde_json::Value,
    /// 0 (runs first) to 9 (runs last).
    pub priority: u8,
    /// Attempts so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// The W3C trace context it was staged in, when tracing was on: its trace id finds the
    /// request and the job's run in the tracing backend.
    pub traceparent: Option<String>,
    /// The worker holding (or that last held) its lease.
    pub worker: Option<String>,
    /// Timestamps (ms since the epoch).
    pub created_at_ms: Option<i64>,
    /// When it last became ready.
    pub enqueued_at_ms: Option<i64>,
    /// When it is due (scheduled jobs).
    pub run_at_ms: Option<i64>,
    /// When its current or last attempt started.
    pub started_at_ms: Option<i64>,
    /// When it completed or died.
    pub finished_at_ms: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
    /// Every recorded failed attempt (newest last): `{attempt, at, error}`.
    pub errors: Vec<serde_json::Value>,
    /// The retry policy text.
    pub retry: Option<String>,
    /// The uniqueness key it was enqueued with, if any (the key may have expired since).
    pub unique_key: Option<String>,
    /// The last progress its handler reported: `{fraction, note, at}`.
    pub progress: Option<serde_json::Value>,
    /// The result its handler kept (bounded JSON).
    pub result: Option<serde_json::Value>,
    /// When someone asked it to stop while it ran (ms since the epoch).
    pub cancel_requested_at_ms: Option<i64>,
    /// Why it was cancelled (who asked, or what the handler said).
    pub cancel_reason: Option<String>,
    /// Whether it keeps an event stream for clients following it live.
    pub events: bool,
    /// Its group key, if it has one.
    pub group: Option<String>,
    /// Whether its group is ordered (FIFO, one at a time).
    pub ordered: bool,
}

/// One group of a queue: its backlog, its running jobs and why it waits, if it does.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group key.
    pub key: String,
    /// Jobs waiting in the group.
    pub waiting: u64,
    /// Jobs of the group running now.
    pub running: u64,
    /// `ready` (in the rotation), `held` (at its concurrency cap, an ordered group's job or a
    /// breaker's probe running), `waiting` (until `waiting_until_ms`: a rate token, a breaker's
    /// cool-down or an ordered group's retry) or `idle` (nothing waits).
    pub state: String,
    /// When a waiting group may be claimed from again (ms since the epoch).
    pub waiting_until_ms: Option<i64>,
    /// Its breaker, when it counts failures or is open.
    pub breaker: Option<BreakerStatus>,
}

/// A group's circuit breaker.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerStatus {
    /// `closed` (counting failures in a row), `open` (jobs wait) or `probing` (one job decides).
    pub state: String,
    /// Failed attempts in a row.
    pub failures: u64,
    /// Times it opened in a row (each doubles the cool-down).
    pub opens: u64,
    /// When it first opened in this run of failures (ms since the epoch).
    pub opened_at_ms: Option<i64>,
    /// When an open breaker lets a probe through (ms since the epoch).
    pub reopens_at_ms: Option<i64>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// The groups of a queue, bounded: the `top` groups by backlog and every open breaker, with the
/// rest summed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupsOverview {
    /// Groups with waiting jobs.
    pub groups_with_backlog: u64,
    /// Jobs waiting in groups in total.
    pub waiting: u64,
    /// The groups with the largest backlogs, largest first.
    pub top: Vec<GroupStatus>,
    /// Jobs waiting in the groups not in `top`.
    pub others_waiting: u64,
    /// Groups whose breaker is open or probing (at most 100, the longest open first).
    pub open_breakers: Vec<GroupStatus>,
}

/// A page of jobs in one state.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    /// The jobs, in the state's order (ready: next to run first; finished: newest first).
    pub jobs: Vec<JobDetail>,
    /// Jobs in this state in total.
    pub total: u64,
    /// Offset of this page.
    pub offset: u64,
}

/// One queue on the overview: its sizes and its recent throughput.
#[derive(Debug, Clone, Serialize)]
pub struct QueueSummary {
    /// Sizes right now (of all its partitions together).
    pub counts: QueueCounts,
    /// The sizes of each partition of a partitioned queue (see [`crate::partitions`]),
    /// partition 0 first; empty for a queue of one partition.
    pub partitions: Vec<QueueCounts>,
    /// Per-minute outcomes, oldest first, the current minute last.
    pub throughput: Vec<MinuteStats>,
}

/// Everything the dashboard's overview shows, read in one go.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Every queue asked for, in the order asked.
    pub queues: Vec<QueueSummary>,
    /// Live worker processes.
    pub workers: Vec<crate::WorkerInfo>,
    /// Undispatched outbox rows (`None` when PostgreSQL could not be read).
    pub outbox: Option<crate::outbox::OutboxBacklog>,
    /// When this was read, ms since the epoch.
    pub read_at_ms: i64,
}

/// Jobs a filtered list looks at, at most, per read: the bound on what one dashboard page or
/// one "everything matching" action costs Redis, whatever the size of the queue.
pub const SCAN_LIMIT: u64 = 5000;

/// Jobs read per round trip of a filtered scan.
const SCAN_BATCH: u64 = 200;

/// One of a queue's job lists as the dashboard divides them: a state, or the scheduled jobs
/// split into first runs and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobList {
    /// Every job in one state (scheduled: first runs and retries together).
    State(JobState),
    /// Scheduled jobs that never ran: a delay or a set time.
    FirstRuns,
    /// Scheduled jobs that failed an attempt and wait for the next (see [`QueueCounts::retrying`]).
    Retrying,
}

impl JobList {
    /// The state of the jobs the list holds (first runs and retries are scheduled).
    pub fn state(self) -> JobState {
        match self {
            Self::State(state) => state,
            Self::FirstRuns | Self::Retrying => JobState::Scheduled,
        }
    }
}

/// Whether a list of jobs in `state` shows the most recent first (finished jobs), rather than
/// the next to run or expire.
fn newest_first(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Dead | JobState::Cancelled
    )
}

/// What a filtered list keeps. An empty filter keeps every job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs of this kind (exactly).
    pub kind: Option<String>,
    /// Only jobs whose id, kind, payload or last error contains this text (case ignored).
    pub text: Option<String>,
}

impl JobFilter {
    /// Whether it keeps every job.
    pub fn is_empty(&self) -> bool {
        self.kind.is_none() && self.text.is_none()
    }

    fn matches(&self, id: &str, kind: &str, payload: &str, last_error: &str) -> bool {
        if self.kind.as_deref().is_some_and(|wanted| wanted != kind) {
            return false;
        }
        let Some(text) = &self.text else {
            return true;
        };
        let text = text.to_lowercase();
        [id, kind, payload, last_error]
            .iter()
            .any(|field| field.to_lowercase().contains(&text))
    }
}

/// A page of a filtered list, found by looking at the list's jobs in order: at most
/// [`SCAN_LIMIT`] of them, so on a long list the figures cover its first jobs only.
#[derive(Debug, Clone, Serialize)]
pub struct ScanPage {
    /// The matching jobs of this page, in the list's order.
    pub jobs: Vec<JobDetail>,
    /// Matching jobs among those looked at.
    pub matched: u64,
    /// Jobs looked at.
    pub scanned: u64,
    /// Whether every job of the list was looked at (false: the scan stopped at [`SCAN_LIMIT`],
    /// and later jobs may match too).
    pub complete: bool,
    /// Offset of this page among the matching jobs.
    pub offset: u64,
}

/// The ids a filter matched, for an action on all of them.
#[derive(Debug, Clone, Serialize)]
pub struct Matches {
    /// The matching ids, in the list's order.
    pub ids: Vec<String>,
    /// Whether every job of the list was looked at (see [`ScanPage::complete`]).
    pub complete: bool,
}

/// Run times and failures of one job kind over some minutes (see [`crate::runtimes`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindRuntime {
    /// The job kind.
    pub kind: String,
    /// Attempts that finished.
    pub attempts: u64,
    /// Of them, those that failed (retried or dead).
    pub failed: u64,
    /// `failed / attempts`.
    pub failure_rate: f64,
    /// Mean run time, ms.
    pub mean_ms: f64,
    /// Median run time, ms (estimated from histogram buckets, as are the others).
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

fn opt_i64(map: &HashMap<String, String>, key: &str) -> Option<i64> {
    map.get(key).and_then(|v| v.parse().ok())
}

fn detail_from_hash(
    queue: &str,
    id: &str,
    map: HashMap<String, String>,
    errors: Vec<String>,
) -> JobDetail {
    let payload_text = map.get("payload").cloned().unwrap_or_default();
    JobDetail {
        id: id.to_owned(),
        queue: queue.to_owned(),
        partition: None,
        state: map
            .get("state")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        kind: map.get("kind").cloned().unwrap_or_default(),
        payload: serde_json::from_str(&payload_text)
            .unwrap_or(serde_json::Value::String(payload_text)),
        priority: map
            .get("priority")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
        attempts: map
            .get("attempts")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        max_attempts: map
            .get("max_attempts")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        request_id: map.get("request_id").filter(|v| !v.is_empty()).cloned(),
        traceparent: map.get("trace").filter(|v| !v.is_empty()).cloned(),
        worker: map.get("worker").filter(|v| !v.is_empty()).cloned(),
        created_at_ms: opt_i64(&map, "created_at"),
        enqueued_at_ms: opt_i64(&map, "enqueued_at").or_else(|| opt_i64(&map, "created_at")),
        run_at_ms: opt_i64(&map, "run_at").filter(|v| *v > 0),
        started_at_ms: opt_i64(&map, "started_at"),
        finished_at_ms: opt_i64(&map, "finished_at"),
        last_error: map.get("last_error").cloned(),
        errors: errors
            .into_iter()
            .map(|e| serde_json::from_str(&e).unwrap_or(serde_json::Value::String(e)))
            .collect(),
        retry: map.get("retry").cloned(),
        unique_key: map.get("unique").cloned(),
        progress: map
            .get("progress")
            .and_then(|v| serde_json::from_str(v).ok()),
        result: map.get("result").and_then(|v| serde_json::from_str(v).ok()),
        cancel_requested_at_ms: opt_i64(&map, "cancel_requested"),
        cancel_reason: map.get("cancel_reason").cloned(),
        events: map.get("events").is_some_and(|v| v == "1"),
        group: map.get("group").cloned(),
        ordered: map.get("ordered").is_some_and(|v| v == "1"),
    }
}

/// Reads the overview of `queues`: sizes, `minutes` of throughput, live workers, and the outbox
/// backlog (PostgreSQL and Redis are read at the same time). A PostgreSQL failure leaves the
/// backlog out rather than failing the page: the queues are what an operator came for.
pub async fn overview(
    engine: &QueueEngine,
    outbox: &crate::Outbox,
    queues: &[&str],
    minutes: u32,
) -> redis::RedisResult<Overview> {
    let (queue_read, backlog) = tokio::join!(engine.summaries(queues, minutes), outbox.backlog());
    let (queues, workers) = queue_read?;
    let outbox = match backlog {
        Ok(backlog) => Some(backlog),
        Err(error) => {
            tracing::warn!(%error, "outbox backlog could not be read");
            None
        }
    };
    Ok(Overview {
        queues,
        workers,
        outbox,
        read_at_ms: chrono::Utc::now().timestamp_millis(),
    })
}

impl QueueEngine {
    /// Sizes of one queue partition (see `partitioned` for a whole queue's).
    async fn counts_in(&self, queue: &str) -> redis::RedisResult<QueueCounts> {
        let raw = self.raw_counts(queue).await?;
        let get = |i: usize| raw.get(i).copied().unwrap_or(0);
        let now = get(0);
        let mut waiting_by_priority = [0u64; 10];
        for (p, slot) in waiting_by_priority.iter_mut().enumerate() {
            *slot = u64::try_from(get(7 + p)).unwrap_or(0);
        }
        let oldest = get(6);
        let waiting_in_groups = u64::try_from(get(18)).unwrap_or(0);
        Ok(QueueCounts {
            queue: queue.to_owned(),
            waiting: waiting_by_priority.iter().sum::<u64>() + waiting_in_groups,
            waiting_by_priority,
            waiting_in_groups,
            open_breakers: u64::try_from(get(19)).unwrap_or(0),
            paused: get(1) == 1,
            scheduled: u64::try_from(get(2)).unwrap_or(0),
            retrying: u64::try_from(get(20))
                .unwrap_or(0)
                .min(u64::try_from(get(2)).unwrap_or(0)),
            active: u64::try_from(get(3)).unwrap_or(0),
            completed: u64::try_from(get(4)).unwrap_or(0),
            dead: u64::try_from(get(5)).unwrap_or(0),
            cancelled: u64::try_from(get(17)).unwrap_or(0),
            oldest_waiting_ms: if oldest >= 0 {
                u64::try_from(now - oldest).unwrap_or(0)
            } else {
                0
            },
        })
    }

    /// Per-minute outcomes of one partition for the last `minutes` minutes, oldest first (the
    /// current minute last).
    async fn throughput_in(
        &self,
        queue: &str,
        minutes: u32,
    ) -> redis::RedisResult<Vec<MinuteStats>> {
        let now_minute = chrono::Utc::now().timestamp_millis().div_euclid(60_000);
        let first = now_minute - i64::from(minutes.max(1)) + 1;
        let base = self.base(queue);
        self.period_stats(
            (first..=now_minute).map(|minute| (format!("{base}stats:{minute}"), minute * 60_000)),
        )
        .await
    }

    /// One job of a partition with its error history, or `None` if it does not exist (any more).
    async fn job_in(&self, queue: &str, id: &str) -> redis::RedisResult<Option<JobDetail>> {
        let base = self.base(queue);
        let mut pipe = redis::pipe();
        pipe.hgetall(format!("{base}j:{id}"))
            .lrange(format!("{base}e:{id}"), 0, -1);
        for state in JobState::ALL {
            pipe.zscore(self.state_key(queue, state), id);
        }
        let (map, errors, scores): (HashMap<String, String>, Vec<String>, Vec<Option<f64>>) = {
            let mut values: Vec<redis::Value> = pipe.query_async(&mut self.redis()).await?;
            let scores = values
                .split_off(2)
                .into_iter()
                .map(redis::from_redis_value::<Option<f64>>)
                .collect::<Result<_, _>>()?;
            let errors = redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))?;
            let map = redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))?;
            (map, errors, scores)
        };
        if map.is_empty() {
            return Ok(None);
        }
        let mut detail = detail_from_hash(queue, id, map, errors);
        // The state is the set the id is in (the hash is not rewritten on every transition).
        if let Some((state, score)) = JobState::ALL
            .into_iter()
            .zip(scores)
            .find_map(|(s, v)| v.map(|v| (s, v)))
        {
            detail.state = state.set_name().to_owned();
            if state == JobState::Completed {
                detail.finished_at_ms = Some(score as i64);
            }
        } else if let Some(group) = &detail.group {
            // A grouped job waits in its group's set, not in `ready`.
            let waiting: Option<f64> = self.redis().zscore(format!("{base}g:{group}"), id).await?;
            if waiting.is_some() {
                detail.state = JobState::Ready.set_name().to_owned();
            }
        }
        Ok(Some(detail))
    }

    /// The details of the jobs `scored` lists (ids with their scores in `state`'s set), in that
    /// order, one pipelined round trip; ids whose job is gone are left out. A completed job's
    /// score is its finish time.
    async fn details_in_state(
        &self,
        queue: &str,
        state: JobState,
        scored: &[(String, f64)],
    ) -> redis::RedisResult<Vec<JobDetail>> {
        if scored.is_empty() {
            return Ok(Vec::new());
        }
        let base = self.base(queue);
        let mut pipe = redis::pipe();
        for (id, _) in scored {
            pipe.hgetall(format!("{base}j:{id}"));
        }
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut self.redis()).await?;
        Ok(scored
            .iter()
            .zip(maps)
            .filter(|(_, map)| !map.is_empty())
            .map(|((id, score), map)| {
                let mut detail = detail_from_hash(queue, id, map, Vec::new());
                detail.state = state.set_name().to_owned();
                if state == JobState::Completed {
                    detail.finished_at_ms = Some(*score as i64);
                }
                detail
            })
            .collect())
    }

    /// A page of one partition's jobs in `state` (see [`Self::list`]).
    async fn list_in(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<JobPage> {
        let key = self.state_key(queue, state);
        self.page_of(queue, &key, state, newest_first(state), offset, limit)
            .await
    }

    /// A page of the sorted set `key`, whose members are jobs in `state`.
    async fn page_of(
        &self,
        queue: &str,
        key: &str,
        state: JobState,
        newest_first: bool,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<JobPage> {
        let limit = limit.clamp(1, 200);
        let stop = i64::try_from(offset + limit).unwrap_or(i64::MAX) - 1;
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let mut redis = self.redis();
        let (total, scored): (u64, Vec<(String, f64)>) = if newest_first {
            redis::pipe()
                .zcard(key)
                .zrevrange_withscores(key, start as isize, stop as isize)
                .query_async(&mut redis)
                .await?
        } else {
            redis::pipe()
                .zcard(key)
                .zrange_withscores(key, start as isize, stop as isize)
                .query_async(&mut redis)
                .await?
        };
        let jobs = self.details_in_state(queue, state, &scored).await?;
        Ok(JobPage {
            jobs,
            total,
            offset,
        })
    }

    /// Sizes and `minutes` of throughput of each of `queues` (read concurrently, one pipelined
    /// round trip per queue partition and read), plus the live workers.
    pub async fn summaries(
        &self,
        queues: &[&str],
        minutes: u32,
    ) -> redis::RedisResult<(Vec<QueueSummary>, Vec<crate::WorkerInfo>)> {
        let reads = queues.iter().map(|queue| async move {
            let (mut partitions, throughput) = tokio::try_join!(
                self.partition_counts(queue),
                self.throughput(queue, minutes)
            )?;
            let counts = QueueCounts::total(queue, &partitions);
            if partitions.len() == 1 {
                partitions.clear();
            }
            Ok::<_, redis::RedisError>(QueueSummary {
                counts,
                partitions,
                throughput,
            })
        });
        let (summaries, workers) =
            tokio::try_join!(futures::future::try_join_all(reads), self.workers())?;
        Ok((summaries, workers))
    }

    /// Retries a dead (or cancelled) job now, with its attempts reset. False if it is neither.
    pub async fn retry_dead(&self, queue: &str, id: &str) -> redis::RedisResult<bool> {
        self.admin_located(queue, "retry", id).await
    }

    /// Retries every dead job of a queue; returns how many.
    pub async fn retry_all_dead(&self, queue: &str) -> redis::RedisResult<u64> {
        self.bulk_all(queue, "retry_dead", 0).await
    }

    /// Runs a scheduled job now. False if it is not scheduled.
    pub async fn promote(&self, queue: &str, id: &str) -> redis::RedisResult<bool> {
        self.admin_located(queue, "promote", id).await
    }

    /// The groups of one partition (see [`Self::groups`]).
    async fn groups_in(&self, queue: &str, top: usize) -> redis::RedisResult<GroupsOverview> {
        let base = self.base(queue);
        let mut redis = self.redis();
        let top_stop = isize::try_from(top.clamp(1, 1000)).unwrap_or(1000) - 1;
        #[allow(clippy::type_complexity)]
        let (backlogs, groups_with_backlog, waiting, breakers): (
            Vec<(String, u64)>,
            u64,
            Option<i64>,
            Vec<String>,
        ) = redis::pipe()
            .zrevrange_withscores(format!("{base}gbacklog"), 0, top_stop)
            .zcard(format!("{base}gbacklog"))
            .get(format!("{base}gwaiting"))
            .zrange(format!("{base}breakers"), 0, 99)
            .query_async(&mut redis)
            .await?;
        let keys: Vec<String> = backlogs.iter().map(|(key, _)| key.clone()).collect();
        let mut statuses = self.group_statuses(queue, &keys).await?;
        let top_waiting: u64 = statuses.iter().map(|g| g.waiting).sum();
        let open_breakers = {
            let mut open = Vec::with_capacity(breakers.len());
            for key in &breakers {
                match statuses.iter().find(|g| &g.key == key) {
                    Some(status) => open.push(status.clone()),
                    None => open.extend(
                        self.group_statuses(queue, std::slice::from_ref(key))
                            .await?,
                    ),
                }
            }
            open
        };
        statuses.sort_by(|a, b| b.waiting.cmp(&a.waiting).then(a.key.cmp(&b.key)));
        let waiting = u64::try_from(waiting.unwrap_or(0)).unwrap_or(0);
        Ok(GroupsOverview {
            groups_with_backlog,
            waiting,
            top: statuses,
            others_waiting: waiting.saturating_sub(top_waiting),
            open_breakers,
        })
    }

    /// One group's status (an `idle` group with no breaker when nothing of it is known).
    pub async fn group(&self, queue: &str, key: &str) -> redis::RedisResult<GroupStatus> {
        let partition = self.group_partition(queue, key);
        let mut statuses = self.group_statuses(&partition, &[key.to_owned()]).await?;
        Ok(statuses.remove(0))
    }

    async fn group_statuses(
        &self,
        queue: &str,
        keys: &[String],
    ) -> redis::RedisResult<Vec<GroupStatus>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let base = self.base(queue);
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.zcard(format!("{base}g:{key}"))
                .scard(format!("{base}gr:{key}"))
                .zscore(format!("{base}gwait"), key)
                .sismember(format!("{base}gheld"), key)
                .zscore(format!("{base}grr"), key)
                .hgetall(format!("{base}gb:{key}"));
        }
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            u64,
            u64,
            Option<f64>,
            bool,
            Option<f64>,
            HashMap<String, String>,
        )> = {
            let values: Vec<redis::Value> = pipe.query_async(&mut self.redis()).await?;
            let mut values = values.into_iter();
            let mut rows = Vec::with_capacity(keys.len());
            for _ in keys {
                let mut next = || values.next().unwrap_or(redis::Value::Nil);
                rows.push((
                    redis::from_redis_value(next())?,
                    redis::from_redis_value(next())?,
                    redis::from_redis_value(next())?,
                    redis::from_redis_value(next())?,
                    redis::from_redis_value(next())?,
                    redis::from_redis_value(next())?,
                ));
            }
            rows
        };
        Ok(keys
            .iter()
            .zip(rows)
            .map(
                |(key, (waiting, running, until, held, in_rotation, breaker))| {
                    let state = if waiting == 0 {
                        "idle"
                    } else if until.is_some() {
                        "waiting"
                    } else if held {
                        "held"
                    } else if in_rotation.is_some() {
                        "ready"
                    } else {
                        // Admitted at the next claim (a job arrived while it was being placed).
                        "ready"
                    };
                    let breaker = (!breaker.is_empty()).then(|| BreakerStatus {
                        state: match breaker.get("state").map(String::as_str) {
                            Some("open") => "open",
                            Some("half") => "probing",
                            _ => "closed",
                        }
                        .to_owned(),
                        failures: breaker
                            .get("failures")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        opens: breaker
                            .get("opens")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        opened_at_ms: opt_i64(&breaker, "opened_at"),
                        reopens_at_ms: opt_i64(&breaker, "until")
                            .filter(|_| breaker.get("state").is_some_and(|s| s == "open")),
                        last_error: breaker.get("last_error").cloned(),
                    });
                    GroupStatus {
                        key: key.clone(),
                        waiting,
                        running,
                        state: state.to_owned(),
                        waiting_until_ms: until.map(|v| v as i64),
                        breaker,
                    }
                },
            )
            .collect())
    }

    /// A page of the jobs waiting in one group, next to run first.
    pub async fn group_jobs(
        &self,
        queue: &str,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<JobPage> {
        let partition = self.group_partition(queue, key);
        let set = format!("{}g:{key}", self.base(&partition));
        let mut page = self
            .page_of(&partition, &set, JobState::Ready, false, offset, limit)
            .await?;
        self.name_partition(queue, &partition, &mut page.jobs);
        Ok(page)
    }

    /// Closes a group's breaker by hand: its jobs may run again at once. False if it had none.
    pub async fn close_breaker(&self, queue: &str, key: &str) -> redis::RedisResult<bool> {
        self.admin(&self.group_partition(queue, key), "close_breaker", key)
            .await
    }

    /// Deletes a job in any state but active (a running job must finish or lose its lease first).
    pub async fn delete(&self, queue: &str, id: &str) -> redis::RedisResult<bool> {
        self.admin_located(queue, "delete", id).await
    }

    /// Stops every worker from claiming jobs of this queue (running jobs finish).
    pub async fn pause(&self, queue: &str) -> redis::RedisResult<()> {
        for partition in self.partitions(queue) {
            self.admin(&partition, "pause", "").await?;
        }
        Ok(())
    }

    /// Lets workers claim again.
    pub async fn resume(&self, queue: &str) -> redis::RedisResult<()> {
        for partition in self.partitions(queue) {
            self.admin(&partition, "resume", "").await?;
        }
        Ok(())
    }

    /// Deletes all completed jobs of a queue; returns how many.
    pub async fn purge_completed(&self, queue: &str) -> redis::RedisResult<u64> {
        self.bulk_all(queue, "purge_completed", 0).await
    }

    /// Deletes all dead jobs of a queue; returns how many.
    pub async fn purge_dead(&self, queue: &str) -> redis::RedisResult<u64> {
        self.bulk_all(queue, "purge_dead", 0).await
    }

    /// Deletes all cancelled jobs of a queue; returns how many.
    pub async fn purge_cancelled(&self, queue: &str) -> redis::RedisResult<u64> {
        self.bulk_all(queue, "purge_cancelled", 0).await
    }

    /// Re-queues a cancelled job, with its attempts reset. False if it is not cancelled (or
    /// dead: [`Self::retry_dead`] and this are one action).
    pub async fn retry_cancelled(&self, queue: &str, id: &str) -> redis::RedisResult<bool> {
        self.admin_located(queue, "retry", id).await
    }

    /// Deletes the dead and cancelled jobs of a queue that ended more than `older_than` ago, a
    /// thousand per script call; returns how many (their retention, run by maintenance).
    pub async fn trim_dead(&self, queue: &str, older_than: Duration) -> redis::RedisResult<u64> {
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        self.bulk_all(queue, "trim_dead", cutoff).await
    }

    /// Finds which state a job id is in (search by id), if it exists.
    pub async fn find(&self, queue: &str, id: &str) -> redis::RedisResult<Option<JobDetail>> {
        self.job(queue, id).await
    }

    /// Removes every key of a queue, all its partitions (tests and benchmarks only; uses SCAN,
    /// so it is slow on big queues).
    pub async fn obliterate(&self, queue: &str) -> redis::RedisResult<()> {
        for partition in self.partitions(queue) {
            self.obliterate_in(&partition).await?;
        }
        Ok(())
    }

    async fn obliterate_in(&self, queue: &str) -> redis::RedisResult<()> {
        let mut redis = self.redis();
        let pattern = format!(
            "{}*",
            self.base(queue).replace('{', "\\{").replace('}', "\\}")
        );
        let keys: Vec<String> = {
            let mut iter = redis.scan_match::<_, String>(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key?);
            }
            keys
        };
        for chunk in keys.chunks(1000) {
            redis.del::<_, ()>(chunk).await?;
        }
        Ok(())
    }
}

impl QueueEngine {
    /// Per-hour outcomes of one partition for the last `hours` hours (see
    /// [`Self::hourly_throughput`]).
    async fn hourly_throughput_in(
        &self,
        queue: &str,
        hours: u32,
    ) -> redis::RedisResult<Vec<MinuteStats>> {
        let now_hour = chrono::Utc::now().timestamp_millis().div_euclid(3_600_000);
        let first = now_hour - i64::from(hours.max(1)) + 1;
        let base = self.base(queue);
        self.period_stats(
            (first..=now_hour).map(|hour| (format!("{base}stats:h:{hour}"), hour * 3_600_000)),
        )
        .await
    }

    /// The outcome hashes at `keys` (with the start of the period each counts), read in one
    /// pipelined round trip.
    async fn period_stats(
        &self,
        keys: impl Iterator<Item = (String, i64)>,
    ) -> redis::RedisResult<Vec<MinuteStats>> {
        let mut pipe = redis::pipe();
        let mut starts = Vec::new();
        for (key, start) in keys {
            pipe.hgetall(key);
            starts.push(start);
        }
        let maps: Vec<HashMap<String, u64>> = pipe.query_async(&mut self.redis()).await?;
        Ok(starts
            .into_iter()
            .zip(maps)
            .map(|(start, map)| MinuteStats {
                minute_ms: start,
                enqueued: map.get("enqueued").copied().unwrap_or(0),
                completed: map.get("completed").copied().unwrap_or(0),
                failed: map.get("failed").copied().unwrap_or(0),
                retried: map.get("retried").copied().unwrap_or(0),
                dead: map.get("dead").copied().unwrap_or(0),
                cancelled: map.get("cancelled").copied().unwrap_or(0),
            })
            .collect())
    }

    /// Run times and failures per kind over the last `minutes` minutes (the current one
    /// included), as the workers wrote them: the kinds with the most attempts first.
    pub async fn kind_runtimes(
        &self,
        queue: &str,
        minutes: u32,
    ) -> redis::RedisResult<Vec<KindRuntime>> {
        let now_minute = chrono::Utc::now().timestamp_millis().div_euclid(60_000);
        let first = now_minute - i64::from(minutes.max(1)) + 1;
        let base = self.base(queue);
        let mut pipe = redis::pipe();
        for minute in first..=now_minute {
            pipe.hgetall(crate::runtimes::minute_key(&base, minute));
        }
        let maps: Vec<HashMap<String, u64>> = pipe.query_async(&mut self.redis()).await?;
        let mut kinds = BTreeMap::new();
        for map in &maps {
            for (field, value) in map {
                crate::runtimes::KindTally::add_field(&mut kinds, field, *value);
            }
        }
        let mut runtimes: Vec<KindRuntime> = kinds
            .into_iter()
            .filter(|(_, tally)| tally.attempts > 0)
            .map(|(kind, tally)| KindRuntime {
                attempts: tally.attempts,
                failed: tally.failed,
                failure_rate: tally.failure_rate().unwrap_or(0.0),
                mean_ms: tally.total_ms as f64 / tally.attempts as f64,
                p50_ms: tally.percentile(0.50).unwrap_or(0.0),
                p95_ms: tally.percentile(0.95).unwrap_or(0.0),
                p99_ms: tally.percentile(0.99).unwrap_or(0.0),
                kind,
            })
            .collect();
        runtimes.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.kind.cmp(&b.kind)));
        Ok(runtimes)
    }

    /// The sorted set `list` reads, and whether it lists the most recent first.
    fn list_source(&self, queue: &str, list: JobList) -> (String, bool) {
        match list {
            JobList::State(state) => (self.state_key(queue, state), newest_first(state)),
            JobList::FirstRuns => (self.state_key(queue, JobState::Scheduled), false),
            JobList::Retrying => (format!("{}retrying", self.base(queue)), false),
        }
    }

    /// A page of one partition's `list` kept by `filter`, found by a scan (see
    /// [`Self::scan_jobs`], which answers a whole state with an empty filter itself).
    async fn scan_jobs_in(
        &self,
        queue: &str,
        list: JobList,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<ScanPage> {
        let limit = limit.clamp(1, 200);
        let scan = self.scan(queue, list, filter, offset, limit).await?;
        let jobs = self
            .details_in_state(queue, list.state(), &scan.page)
            .await?;
        Ok(ScanPage {
            jobs,
            matched: scan.matched,
            scanned: scan.scanned,
            complete: scan.complete,
            offset,
        })
    }

    /// Every id of one partition's `list` that `filter` keeps (see [`Self::matching_ids`]).
    async fn matching_ids_in(
        &self,
        queue: &str,
        list: JobList,
        filter: &JobFilter,
    ) -> redis::RedisResult<Matches> {
        let scan = self.scan(queue, list, filter, 0, SCAN_LIMIT).await?;
        Ok(Matches {
            ids: scan.page.into_iter().map(|(id, _)| id).collect(),
            complete: scan.complete,
        })
    }

    /// Looks at up to [`SCAN_LIMIT`] jobs of `list` in order and keeps the ids (with their
    /// scores) of matches `offset..offset + limit`, counting every match.
    async fn scan(
        &self,
        queue: &str,
        list: JobList,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
    ) -> redis::RedisResult<Scan> {
        let (key, newest_first) = self.list_source(queue, list);
        let scheduled = self.state_key(queue, JobState::Scheduled);
        let base = self.base(queue);
        let mut redis = self.redis();
        let mut scan = Scan {
            page: Vec::new(),
            matched: 0,
            scanned: 0,
            complete: false,
        };
        while scan.scanned < SCAN_LIMIT {
            let start = isize::try_from(scan.scanned).unwrap_or(isize::MAX);
            let stop =
                start + isize::try_from(SCAN_BATCH.min(SCAN_LIMIT - scan.scanned)).unwrap_or(1) - 1;
            let batch: Vec<(String, f64)> = if newest_first {
                redis.zrevrange_withscores(&key, start, stop).await?
            } else {
                redis.zrange_withscores(&key, start, stop).await?
            };
            if batch.is_empty() {
                scan.complete = true;
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &batch {
                pipe.hmget(
                    format!("{base}j:{id}"),
                    &["kind", "payload", "last_error", "attempts"],
                );
                if list == JobList::Retrying {
                    pipe.zscore(&scheduled, id);
                }
            }
            let values: Vec<redis::Value> = pipe.query_async(&mut redis).await?;
            let mut values = values.into_iter();
            let asked = batch.len();
            for (id, score) in batch {
                let fields: Vec<Option<String>> =
                    redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
                let still_scheduled = if list == JobList::Retrying {
                    let score: Option<f64> =
                        redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
                    score.is_some()
                } else {
                    true
                };
                let field = |i: usize| fields.get(i).cloned().flatten().unwrap_or_default();
                let (kind, payload, last_error) = (field(0), field(1), field(2));
                let ran_before = field(3).parse::<u32>().unwrap_or(0) > 0;
                let in_list = match list {
                    JobList::State(_) => true,
                    JobList::FirstRuns => !ran_before,
                    JobList::Retrying => still_scheduled,
                };
                // A job deleted since the range was read has no hash: not listed.
                let exists = fields.iter().any(Option::is_some);
                if exists && in_list && filter.matches(&id, &kind, &payload, &last_error) {
                    if scan.matched >= offset && (scan.page.len() as u64) < limit {
                        scan.page.push((id, score));
                    }
                    scan.matched += 1;
                }
            }
            scan.scanned += asked as u64;
            if (asked as u64) < SCAN_BATCH.min(SCAN_LIMIT) {
                scan.complete = true;
                break;
            }
        }
        if !scan.complete {
            // Exactly SCAN_LIMIT jobs: complete if nothing follows.
            let next: Vec<String> = if newest_first {
                redis
                    .zrevrange(&key, SCAN_LIMIT as isize, SCAN_LIMIT as isize)
                    .await?
            } else {
                redis
                    .zrange(&key, SCAN_LIMIT as isize, SCAN_LIMIT as isize)
                    .await?
            };
            scan.complete = next.is_empty();
        }
        Ok(scan)
    }

    /// Retries dead or cancelled jobs now, with their attempts reset; returns how many were
    /// dead or cancelled (the others are left as they are).
    pub async fn retry_jobs(&self, queue: &str, ids: &[String]) -> redis::RedisResult<u64> {
        self.admin_many_all(queue, "retry_many", ids).await
    }

    /// Runs scheduled jobs (first runs or retries) now; returns how many were scheduled.
    pub async fn promote_jobs(&self, queue: &str, ids: &[String]) -> redis::RedisResult<u64> {
        self.admin_many_all(queue, "promote_many", ids).await
    }

    /// Deletes jobs in any state but running; returns how many were deleted.
    pub async fn delete_jobs(&self, queue: &str, ids: &[String]) -> redis::RedisResult<u64> {
        self.admin_many_all(queue, "delete_many", ids).await
    }
}

/// What a filtered scan found: the page's ids with their scores, and the figures of the scan.
struct Scan {
    page: Vec<(String, f64)>,
    matched: u64,
    scanned: u64,
    complete: bool,
}
