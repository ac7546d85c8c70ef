//! The Redis queue engine: atomic Lua scripts for every state change, and typed calls around them.
//!
//! State lives in sorted sets per queue (see `scripts/common.lua` for the key layout): `ready`
//! (scored by priority, then sequence: strict priority, then FIFO), `scheduled` (by due time),
//! `active` (by lease deadline), `completed` and `dead` (by finish time). Every transition is one
//! script call, so a crash between two Redis commands cannot leave a job in two states or none.
//! Every script touches a bounded number of keys (batches of at most `MAX_BATCH`, trimming at
//! most 1000), so a backlog of a million jobs costs the same per call as a backlog of ten.
//!
//! The engine knows nothing of the shop: queues are names, payloads are JSON text.

use std::{collections::HashMap, time::Duration};

use redis::{AsyncCommands, Script, aio::ConnectionManagerConfig};
use serde::Serialize;

use crate::{
    connection::RedisConnection,
    job::{ClaimedJob, JobSpec, Priority, RetryPolicy},
    limits::QueueLimits,
    partitions::{self, Partitions},
};

/// Largest number of jobs one script call claims, acks or enqueues.
pub const MAX_BATCH: usize = 1000;

/// Scheduled jobs promoted to ready per claim call.
const PROMOTE_LIMIT: usize = 1000;

/// Ids per script call of an operator action on many jobs.
const IDS_PER_CALL: usize = 500;

/// The states a job moves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Ready,
    /// Waiting for its time (delay, schedule or retry backoff).
    Scheduled,
    /// Leased by a worker.
    Active,
    /// Finished successfully (kept for the retention window).
    Completed,
    /// Failed its last attempt, or failed permanently.
    Dead,
    /// Cancelled while waiting, or stopped on request while running: neither retried nor dead.
    Cancelled,
}

impl JobState {
    /// All states, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        Self::Ready,
        Self::Scheduled,
        Self::Active,
        Self::Completed,
        Self::Dead,
        Self::Cancelled,
    ];

    /// The name of the state's sorted set.
    pub fn set_name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.set_name() == name)
    }
}

/// What [`QueueEngine::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// No job with that id (never existed, or trimmed by retention).
    NotFound,
    /// It was waiting, scheduled or backing off before a retry, and is now cancelled.
    Cancelled,
    /// It is running: its worker passes the signal to the handler within a fraction of a second,
    /// and the job ends cancelled when the handler stops (or its lease expires).
    Signalled,
    /// It had already finished (completed, dead or cancelled); nothing changed.
    AlreadyFinished,
}

/// One entry of a job's event stream (jobs enqueued with [`JobSpec::events`] on).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    /// The stream entry id (`<ms>-<seq>`): increasing, and what a reader resumes after.
    pub id: String,
    /// `queued`, `started`, `progress`, `retrying`, `failed`, `completed`, `cancelling` or
    /// `cancelled`.
    pub kind: String,
    /// What the event says (progress `{fraction, note}`, a failure's `{attempt, error}`, a
    /// completion's `{result}`, a cancel's `{reason}`).
    pub data: serde_json::Value,
}

impl JobEvent {
    /// Whether the job's life ended with this event (no more events follow unless an operator
    /// retries the job).
    pub fn is_final(&self) -> bool {
        matches!(self.kind.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// What a claim call returns.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The jobs now leased to the caller.
    pub jobs: Vec<ClaimedJob>,
    /// When something may become claimable (next due scheduled job or lease deadline, or the
    /// rate limit's next token), if known.
    pub next_wake_in: Option<Duration>,
    /// Jobs are waiting for the queue's rate limit: nothing can be claimed before
    /// `next_wake_in`, whatever is enqueued meanwhile.
    pub rate_limited: bool,
}

/// Retention limits for finished jobs.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Completed jobs kept per queue.
    pub completed_keep: u64,
    /// Longest a completed job is kept.
    pub completed_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed_keep: 1000,
            completed_max_age: Duration::from_secs(3600),
        }
    }
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    ack: Script,
    ack_claim: Script,
    fail: Script,
    renew: Script,
    release: Script,
    admin: Script,
    bulk: Script,
    counts: Script,
    cancel: Script,
    cancel_watch: Script,
    annotate: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{}", include_str!("scripts/common.lua"), body))
}

impl Scripts {
    fn load() -> Self {
        Self {
            enqueue: script(include_str!("scripts/enqueue.lua")),
            claim: script(include_str!("scripts/claim.lua")),
            ack: script(include_str!("scripts/ack.lua")),
            ack_claim: script(include_str!("scripts/ack_claim.lua")),
            fail: script(include_str!("scripts/fail.lua")),
            renew: script(include_str!("scripts/renew.lua")),
            release: script(include_str!("scripts/release.lua")),
            admin: script(include_str!("scripts/admin.lua")),
            bulk: script(include_str!("scripts/bulk.lua")),
            counts: script(include_str!("scripts/counts.lua")),
            cancel: script(include_str!("scripts/cancel.lua")),
            cancel_watch: script(include_str!("scripts/cancel_watch.lua")),
            annotate: script(include_str!("scripts/annotate.lua")),
        }
    }
}

/// A handle on the queue engine; cheap to clone (one shared multiplexed connection).
#[derive(Clone)]
pub struct QueueEngine {
    redis: RedisConnection,
    prefix: String,
    retention: Retention,
    scripts: std::sync::Arc<Scripts>,
    /// Flow control per queue (none for queues not listed).
    limits: std::sync::Arc<HashMap<String, QueueLimits>>,
    /// How many partitions each queue has (see [`crate::partitions`]).
    partitions: std::sync::Arc<Partitions>,
}

impl std::fmt::Debug for QueueEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueEngine")
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

type RawJob = (
    String,
    u64,
    u32,
    String,
    String,
    u8,
    u32,
    String,
    String,
    i64,
    String,
);

type RawClaim = (i64, i64, Vec<RawJob>, i64);

fn claim_from_raw(queue: &str, (next_wake, now, raw, rate_limited): RawClaim) -> Claim {
    let jobs = raw
        .into_iter()
        .map(
            |(
                id,
                lease,
                attempt,
                kind,
                payload,
                priority,
                max_attempts,
                request_id,
                retry,
                created_at_ms,
                traceparent,
            )| ClaimedJob {
                queue: queue.to_owned(),
                id,
                lease,
                attempt,
                kind,
                payload,
                priority: Priority::new(priority),
                max_attempts,
                request_id: (!request_id.is_empty()).then_some(request_id),
                retry: RetryPolicy::decode(&retry),
                created_at_ms,
                traceparent: (!traceparent.is_empty()).then_some(traceparent),
            },
        )
        .collect();
    let next_wake_in = (next_wake >= 0)
        .then(|| Duration::from_millis(u64::try_from(next_wake - now).unwrap_or(0)));
    Claim {
        jobs,
        next_wake_in,
        rate_limited: rate_limited == 1,
    }
}

impl QueueEngine {
    /// An engine over `redis` (its clones carry the commands; blocking reads get connections
    /// of their own to the same servers), with every key under `<prefix>:`.
    pub fn new(redis: RedisConnection, prefix: &str, retention: Retention) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            retention,
            scripts: std::sync::Arc::new(Scripts::load()),
            limits: std::sync::Arc::new(HashMap::new()),
            partitions: std::sync::Arc::new(Partitions::default()),
        }
    }

    /// The same engine with queues split into `partitions` (see [`crate::partitions`]). Every
    /// process that enqueues or works a queue must use the same counts.
    pub fn with_partitions(mut self, partitions: Partitions) -> Self {
        self.partitions = std::sync::Arc::new(partitions);
        self
    }

    /// The partitions of `queue` (its own name first; just that when it is not partitioned).
    pub fn partitions(&self, queue: &str) -> Vec<String> {
        self.partitions.names(queue)
    }

    /// The partition of `queue` where group `key`'s jobs go.
    pub fn group_partition(&self, queue: &str, key: &str) -> String {
        self.partitions.partition_for(queue, key)
    }

    /// The partition of `queue` that holds job `id`, looked up when the queue is partitioned
    /// (every partition asked at once); `None` when no partition has it. An unpartitioned
    /// queue is answered without a round trip.
    pub async fn locate(&self, queue: &str, id: &str) -> redis::RedisResult<Option<String>> {
        let names = self.partitions(queue);
        if names.len() == 1 {
            return Ok(names.into_iter().next());
        }
        let found = futures::future::try_join_all(names.iter().map(|partition| {
            let mut redis = self.redis.clone();
            let key = self.job_key(partition, id);
            async move { redis.exists::<_, bool>(key).await }
        }))
        .await?;
        Ok(names
            .into_iter()
            .zip(found)
            .find_map(|(name, found)| found.then_some(name)))
    }

    /// The same engine enforcing `limits` on the queues they name (see [`crate::limits`]).
    pub fn with_limits(mut self, limits: impl IntoIterator<Item = (String, QueueLimits)>) -> Self {
        self.limits =
            std::sync::Arc::new(limits.into_iter().filter(|(_, l)| l.is_limited()).collect());
        self
    }

    /// The flow control of `queue` (the default, none, when it has no limits), all its
    /// partitions together.
    pub fn limits(&self, queue: &str) -> QueueLimits {
        self.limits.get(queue).copied().unwrap_or_default()
    }

    /// The flow control a queue partition's scripts enforce: its share of its queue's limits
    /// (see [`QueueLimits::share`]).
    fn partition_limits(&self, partition: &str) -> QueueLimits {
        let queue = partitions::queue_of(partition);
        let limits = self.limits.get(queue).copied().unwrap_or_default();
        limits.share(
            partitions::index_of(partition),
            self.partitions.count(queue),
        )
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared connection (for the worker registry and inspection).
    pub(crate) fn redis(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// The key base of a queue: `<prefix>:{<queue>}:`. The braces are a Redis Cluster hash tag,
    /// so all of a queue's keys live in one slot and one script may touch them together.
    pub fn base(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:", self.prefix)
    }

    /// The key of a queue's sorted set for `state`.
    pub fn state_key(&self, queue: &str, state: JobState) -> String {
        format!("{}{}", self.base(queue), state.set_name())
    }

    /// The key of a job's hash.
    pub fn job_key(&self, queue: &str, id: &str) -> String {
        format!("{}j:{id}", self.base(queue))
    }

    /// The key that holds uniqueness key `key` of `queue` for its window; its value is the id
    /// of the job that took it.
    pub fn unique_key(&self, queue: &str, key: &str) -> String {
        format!("{}u:{key}", self.base(queue))
    }

    /// The keys every script of `queue` declares: the ready set, which routes the call to the
    /// queue's node on a Redis Cluster, and the queue's migration fence, a key that never
    /// exists. The fence matters only while the queue's slot moves between cluster nodes
    /// (resharding): keys then move in batches, so either node may hold only some of them, and
    /// a script reading a job hash that has not arrived yet would see the job as gone. A call
    /// that declares a missing key in a moving slot is refused with `TRYAGAIN` by both nodes
    /// (on the node giving the slot up once any declared key is there, on the node taking it
    /// always), and redis-rs retries it after a pause: the queue's scripts wait for the move to
    /// end instead of running on half a queue. Outside a move Redis does not look at whether a
    /// declared key exists, so the fence costs one argument per call.
    fn script_keys(&self, queue: &str) -> [String; 2] {
        let base = self.base(queue);
        [format!("{base}ready"), format!("{base}fence")]
    }

    /// Enqueues jobs (any mix of queues). Returns, per job, whether it was added (`false`: a
    /// job with that id already exists and was left as it is, or the job's uniqueness key is
    /// held by another job, see [`crate::job::Uniqueness`]).
    pub async fn enqueue(&self, jobs: &[JobSpec]) -> redis::RedisResult<Vec<bool>> {
        self.enqueue_with(jobs, None).await
    }

    /// [`Self::enqueue`], succeeding only once `acks.replicas` replicas hold the jobs: each
    /// script call goes in one pipeline with a `WAIT` right behind it, so the `WAIT` runs on the
    /// server and client connection that took the jobs, whatever happens to the connection
    /// afterwards (a failover, a reconnection, a slot moving to another cluster node: then
    /// the pipeline fails or the jobs are not where the `WAIT` ran, and the call is an error).
    /// On a Redis Cluster the pipeline goes to the node of the queue's slot, so each queue is
    /// confirmed by its own node's replicas. An error may leave jobs on the primary
    /// unconfirmed; enqueueing them again is harmless (idempotent by id).
    ///
    /// The engine should be on a connection of its own: `WAIT` holds up everything queued
    /// behind it on its connection, for up to the timeout while a replica is away.
    pub async fn enqueue_confirmed(
        &self,
        jobs: &[JobSpec],
        acks: crate::ReplicaAcks,
    ) -> redis::RedisResult<Vec<bool>> {
        self.enqueue_with(jobs, Some(acks)).await
    }

    async fn enqueue_with(
        &self,
        jobs: &[JobSpec],
        acks: Option<crate::ReplicaAcks>,
    ) -> redis::RedisResult<Vec<bool>> {
        if let Some(job) = jobs.iter().find(|job| {
            job.group
                .as_ref()
                .is_some_and(|g| g.key.is_empty() || g.key.len() > crate::JobGroup::MAX_KEY_BYTES)
        }) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a job's group key must be 1 to 200 bytes",
                format!("job {} of queue {}", job.id, job.queue),
            )));
        }
        let mut added = vec![false; jobs.len()];
        // Group by queue, keeping each job's position so results line up with the input.
        // (A partitioned queue's jobs go to their partitions: one call per partition.)
        let mut by_queue: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let partition = self
                .partitions
                .partition_for(&job.queue, job.partition_key());
            match by_queue.iter_mut().find(|(q, _)| *q == partition) {
                Some((_, idx)) => idx.push(i),
                None => by_queue.push((partition, vec![i])),
            }
        }
        for (queue, indices) in by_queue {
            let queue = queue.as_str();
            for chunk in indices.chunks(MAX_BATCH) {
                // The script call as an `EVALSHA` command, so that it can also travel in a
                // pipeline with a `WAIT`.
                let mut call = redis::cmd("EVALSHA");
                // Group and trace arguments only when a job of the batch has them (see
                // enqueue.lua): the common case sends no empty arguments.
                let traced = chunk.iter().any(|&i| jobs[i].traceparent.is_some());
                let grouped = traced || chunk.iter().any(|&i| jobs[i].group.is_some());
                let width = if traced {
                    14
                } else if grouped {
                    13
                } else {
                    11
                };
                let keys = self.script_keys(queue);
                call.arg(self.scripts.enqueue.get_hash())
                    .arg(keys.len())
                    .arg(&keys[..])
                    .arg(self.base(queue))
                    .arg(width);
                for &i in chunk {
                    let job = &jobs[i];
                    let run_at = job.run_at.map(|t| t.timestamp_millis()).unwrap_or(0);
                    // An empty key is no key. PX refuses 0 and a deadline past i64 (which
                    // would fail the whole batch), so the window is clamped between the two.
                    let (unique_key, window_ms) = job.unique.as_ref().map_or(("", 0), |u| {
                        (u.key.as_str(), u.window_ms.clamp(1, i64::MAX as u64 / 2))
                    });
                    call.arg(&job.id)
                        .arg(&job.kind)
                        .arg(job.payload.to_string())
                        .arg(job.priority.level())
                        .arg(job.retry.max_attempts)
                        .arg(run_at)
                        .arg(job.request_id.as_deref().unwrap_or(""))
                        .arg(job.retry.encode())
                        .arg(unique_key)
                        .arg(window_ms)
                        .arg(if job.events { "1" } else { "" });
                    if grouped {
                        call.arg(job.group.as_ref().map_or("", |g| g.key.as_str()))
                            .arg(if job.group.as_ref().is_some_and(|g| g.ordered) {
                                "1"
                            } else {
                                ""
                            });
                    }
                    if traced {
                        call.arg(job.traceparent.as_deref().unwrap_or(""));
                    }
                }
                let results: Vec<i64> = match acks {
                    None => self.eval_sha(&self.scripts.enqueue, &call).await?,
                    Some(acks) => {
                        self.eval_sha_confirmed(&self.scripts.enqueue, &call, acks)
                            .await?
                    }
                };
                for (&i, result) in chunk.iter().zip(results) {
                    added[i] = result == 1;
                }
            }
        }
        Ok(added)
    }

    /// Runs `call`, an `EVALSHA` of `script`, loading the script first if the server has not
    /// seen it (a restarted or new server, a cluster node that took over a slot).
    async fn eval_sha<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        call: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut redis = self.redis.clone();
        match call.query_async(&mut redis).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.load_async(&mut redis).await?;
                call.query_async(&mut redis).await
            }
            other => other,
        }
    }

    /// [`Self::eval_sha`] with a `WAIT` for `acks` in the same pipeline; an error unless enough
    /// replicas confirmed.
    async fn eval_sha_confirmed<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        call: &redis::Cmd,
        acks: crate::ReplicaAcks,
    ) -> redis::RedisResult<T> {
        let mut pipeline = redis::pipe();
        pipeline
            .add_command(call.clone())
            .cmd("WAIT")
            .arg(acks.replicas)
            .arg(
                u64::try_from(acks.timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        let mut redis = self.redis.clone();
        let (result, confirmed): (T, i64) = match pipeline.query_async(&mut redis).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.load_async(&mut redis).await?;
                pipeline.query_async(&mut redis).await?
            }
            other => other?,
        };
        if confirmed < i64::from(acks.replicas) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "push not confirmed by enough replicas",
                format!(
                    "{confirmed} of {} replicas within {} ms",
                    acks.replicas,
                    acks.timeout.as_millis()
                ),
            )));
        }
        Ok(result)
    }

    /// Claims up to `max` jobs of `queue` for `worker`, leasing them for `lease`.
    pub async fn claim(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        lease: Duration,
    ) -> redis::RedisResult<Claim> {
        let raw: RawClaim = self
            .scripts
            .claim
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .arg(max.min(MAX_BATCH))
            .arg(lease.as_millis() as u64)
            .arg(worker)
            .arg(PROMOTE_LIMIT)
            .arg(&self.partition_limits(queue).script_args()[..])
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(claim_from_raw(queue, raw))
    }

    /// Completes `leases` and claims up to `max` new jobs in one script call (a busy worker's
    /// steady state: each finished batch brings its replacements). Returns the ack results, as
    /// [`QueueEngine::ack`], and the claim.
    pub async fn ack_and_claim(
        &self,
        queue: &str,
        leases: &[(String, u64)],
        worker: &str,
        max: usize,
        lease: Duration,
    ) -> redis::RedisResult<(Vec<bool>, Claim)> {
        if leases.len() > MAX_BATCH {
            let acked = self.ack(queue, leases).await?;
            let claim = self.claim(queue, worker, max, lease).await?;
            return Ok((acked, claim));
        }
        let mut invocation = self.scripts.ack_claim.prepare_invoke();
        invocation
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .arg(self.retention.completed_keep)
            .arg(self.retention.completed_max_age.as_millis() as u64)
            .arg(max.min(MAX_BATCH))
            .arg(lease.as_millis() as u64)
            .arg(worker)
            .arg(PROMOTE_LIMIT)
            .arg(&self.partition_limits(queue).script_args()[..]);
        for (id, token) in leases {
            invocation.arg(id).arg(*token);
        }
        let (acked, raw): (Vec<i64>, RawClaim) =
            invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok((
            acked.into_iter().map(|r| r == 1).collect(),
            claim_from_raw(queue, raw),
        ))
    }

    /// Completes leased jobs. Returns, per job, whether the lease was still held (a `false` job
    /// was taken back after its lease expired and will run again elsewhere).
    pub async fn ack(
        &self,
        queue: &str,
        leases: &[(String, u64)],
    ) -> redis::RedisResult<Vec<bool>> {
        let mut out = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(MAX_BATCH) {
            let mut invocation = self.scripts.ack.prepare_invoke();
            invocation
                .key(&self.script_keys(queue)[..])
                .arg(self.base(queue))
                .arg(self.retention.completed_keep)
                .arg(self.retention.completed_max_age.as_millis() as u64)
                .arg(self.partition_limits(queue).concurrency.unwrap_or(0));
            for (id, lease) in chunk {
                invocation.arg(id).arg(*lease);
            }
            let results: Vec<i64> = invocation.invoke_async(&mut self.redis.clone()).await?;
            out.extend(results.into_iter().map(|r| r == 1));
        }
        Ok(out)
    }

    /// Records a failed attempt: retry after `retry_in`, or dead when `None`.
    /// Returns false if the lease was lost (the failure is then not recorded).
    pub async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_in: Option<Duration>,
    ) -> redis::RedisResult<bool> {
        let entry = serde_json::json!({
            "attempt": job.attempt,
            "at": chrono::Utc::now().timestamp_millis(),
            "error": error,
        });
        let delay: i64 = retry_in.map(|d| d.as_millis() as i64).unwrap_or(-1);
        let result: i64 = self
            .scripts
            .fail
            .key(&self.script_keys(&job.queue)[..])
            .arg(self.base(&job.queue))
            .arg(&job.id)
            .arg(job.lease)
            .arg(entry.to_string())
            .arg(error)
            .arg(delay)
            .arg(
                &crate::limits::Breaker::script_args(
                    self.partition_limits(&job.queue).group.breaker,
                )[..],
            )
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(result == 1)
    }

    /// Ends a leased job as cancelled (its handler stopped on a cancellation signal, or gave up
    /// because the work became moot): neither retried nor dead. False if the lease was lost.
    pub async fn cancelled(&self, job: &ClaimedJob, reason: &str) -> redis::RedisResult<bool> {
        let result: i64 = self
            .scripts
            .fail
            .key(&self.script_keys(&job.queue)[..])
            .arg(self.base(&job.queue))
            .arg(&job.id)
            .arg(job.lease)
            .arg("{}")
            .arg(reason)
            .arg(-2)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(result == 1)
    }

    /// Cancels a job: at once if it waits (ready, delayed, backing off before a retry); by a
    /// signal to its handler if it runs (see [`CancelOutcome`]). `reason` is kept on the job
    /// and shown on the dashboard.
    pub async fn cancel(
        &self,
        queue: &str,
        id: &str,
        reason: &str,
    ) -> redis::RedisResult<CancelOutcome> {
        let Some(partition) = self.locate(queue, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let outcome: i64 = self
            .scripts
            .cancel
            .key(&self.script_keys(&partition)[..])
            .arg(self.base(&partition))
            .arg(id)
            .arg(reason)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match outcome {
            1 => CancelOutcome::Cancelled,
            2 => CancelOutcome::Signalled,
            3 => CancelOutcome::AlreadyFinished,
            _ => CancelOutcome::NotFound,
        })
    }

    /// The running jobs of a queue partition that were asked to stop (what each worker checks
    /// for the jobs it holds).
    pub async fn cancelling(&self, queue: &str) -> redis::RedisResult<Vec<String>> {
        self.scripts
            .cancel_watch
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// Writes `field` (`progress` or `result`, JSON text) of a job the caller holds the lease
    /// of; false if the lease was lost. Handlers use [`crate::JobControl`], which bounds and
    /// throttles what it writes.
    pub async fn annotate(
        &self,
        queue: &str,
        id: &str,
        lease: u64,
        field: &str,
        value: &str,
    ) -> redis::RedisResult<bool> {
        let written: i64 = self
            .scripts
            .annotate
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .arg(id)
            .arg(lease)
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(written == 1)
    }

    /// Up to `count` events of a job's stream after entry `after` (`None`: from the start),
    /// oldest first. Empty when the job has no stream (enqueued without events, or its stream
    /// expired a day after its last event). A partitioned queue's partitions are all read at
    /// once (the stream may outlive the job, so the job's hash cannot say where it is).
    pub async fn job_events(
        &self,
        queue: &str,
        id: &str,
        after: Option<&str>,
        count: usize,
    ) -> redis::RedisResult<Vec<JobEvent>> {
        let start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let reads = self.partitions(queue).into_iter().map(|partition| {
            let mut redis = self.redis.clone();
            let mut read = redis::cmd("XRANGE");
            read.arg(format!("{}ev:{id}", self.base(&partition)))
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(count.max(1));
            async move {
                read.query_async::<Vec<(String, HashMap<String, String>)>>(&mut redis)
                    .await
            }
        });
        let entries = futures::future::try_join_all(reads).await?;
        Ok(entries
            .into_iter()
            .flatten()
            .map(|(id, mut fields)| JobEvent {
                id,
                kind: fields.remove("type").unwrap_or_default(),
                data: fields
                    .remove("data")
                    .and_then(|data| serde_json::from_str(&data).ok())
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    /// Extends leases still held; returns the ids whose lease was lost.
    pub async fn renew(
        &self,
        queue: &str,
        leases: &[(String, u64)],
        lease: Duration,
    ) -> redis::RedisResult<Vec<String>> {
        let mut lost = Vec::new();
        for chunk in leases.chunks(MAX_BATCH) {
            let mut invocation = self.scripts.renew.prepare_invoke();
            invocation
                .key(&self.script_keys(queue)[..])
                .arg(self.base(queue))
                .arg(lease.as_millis() as u64);
            for (id, token) in chunk {
                invocation.arg(id).arg(*token);
            }
            let chunk_lost: Vec<String> = invocation.invoke_async(&mut self.redis.clone()).await?;
            lost.extend(chunk_lost);
        }
        Ok(lost)
    }

    /// Puts leased jobs back to ready without counting the attempt (graceful shutdown).
    pub async fn release(
        &self,
        queue: &str,
        leases: &[(String, u64)],
    ) -> redis::RedisResult<usize> {
        let mut released = 0;
        for chunk in leases.chunks(MAX_BATCH) {
            let mut invocation = self.scripts.release.prepare_invoke();
            invocation
                .key(&self.script_keys(queue)[..])
                .arg(self.base(queue));
            for (id, token) in chunk {
                invocation.arg(id).arg(*token);
            }
            let n: usize = invocation.invoke_async(&mut self.redis.clone()).await?;
            released += n;
        }
        Ok(released)
    }

    /// Waits until a job may be claimable on `queue`, at most `timeout`, on `conn` (a
    /// connection reserved for blocking reads: a blocked multiplexed connection would stall
    /// every other command sharing it). Returns true if woken by new work.
    pub async fn wait_for_work(
        &self,
        conn: &mut RedisConnection,
        queue: &str,
        timeout: Duration,
    ) -> redis::RedisResult<bool> {
        // BLPOP takes seconds as a float; 1 ms granularity is plenty.
        let secs = (timeout.as_millis().max(1) as f64) / 1000.0;
        let popped: Option<(String, String)> = conn
            .blpop(format!("{}marker", self.base(queue)), secs)
            .await?;
        Ok(popped.is_some())
    }

    /// A connection for [`QueueEngine::wait_for_work`]: no response timeout (the wait is the
    /// point), reconnecting after Redis restarts like the shared one.
    pub async fn blocking_connection(&self) -> redis::RedisResult<RedisConnection> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None)
            .set_number_of_retries(1);
        self.redis.dedicated(config).await
    }

    /// Runs an operator action on one job (`retry`, `promote`, `delete`) or a queue (`pause`, `resume`).
    pub(crate) async fn admin(
        &self,
        queue: &str,
        action: &str,
        id: &str,
    ) -> redis::RedisResult<bool> {
        let changed: i64 = self
            .scripts
            .admin
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .arg(action)
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(changed == 1)
    }

    /// Runs an operator action on each of `ids` (`retry_many`, `promote_many`, `delete_many`),
    /// a bounded number per script call; returns how many jobs it changed.
    pub(crate) async fn admin_many(
        &self,
        queue: &str,
        action: &str,
        ids: &[String],
    ) -> redis::RedisResult<u64> {
        let mut changed = 0;
        for chunk in ids.chunks(IDS_PER_CALL) {
            let n: u64 = self
                .scripts
                .admin
                .key(&self.script_keys(queue)[..])
                .arg(self.base(queue))
                .arg(action)
                .arg(chunk)
                .invoke_async(&mut self.redis.clone())
                .await?;
            changed += n;
        }
        Ok(changed)
    }

    /// Runs a bulk action on one partition in bounded steps until nothing is left, with a
    /// cutoff time (ms since the epoch) for actions that take one (0 for the others); returns
    /// how many jobs it touched.
    pub(crate) async fn bulk_before(
        &self,
        queue: &str,
        action: &str,
        cutoff_ms: i64,
    ) -> redis::RedisResult<u64> {
        let mut total = 0;
        loop {
            let n: u64 = self
                .scripts
                .bulk
                .key(&self.script_keys(queue)[..])
                .arg(self.base(queue))
                .arg(action)
                .arg(MAX_BATCH)
                .arg(cutoff_ms)
                .invoke_async(&mut self.redis.clone())
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// The raw size snapshot of a queue (see `scripts/counts.lua`).
    pub(crate) async fn raw_counts(&self, queue: &str) -> redis::RedisResult<Vec<i64>> {
        self.scripts
            .counts
            .key(&self.script_keys(queue)[..])
            .arg(self.base(queue))
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// Whether a job exists in any state (in any partition of its queue).
    pub async fn exists(&self, queue: &str, id: &str) -> redis::RedisResult<bool> {
        if self.partitions.count(queue) > 1 {
            return Ok(self.locate(queue, id).await?.is_some());
        }
        self.redis.clone().exists(self.job_key(queue, id)).await
    }
}
