//! Model-based test: random sequences of enqueue / claim / ack / fail / expire / release /
//! retry / promote / delete / cancel / close a breaker / let time pass run against the real
//! engine and against a small in-memory model of what the engine promises; after every step the
//! results, the counts per state and each group's backlog, running jobs and breaker must agree.
//!
//! Jobs may belong to a group: two unordered ones and an ordered one, under a per-group
//! concurrency cap and a breaker. Which group a claim serves next is the engine's choice (its
//! rotation), so a claim is not compared with one expected list: each job it returns must be
//! one the model allows at that point (ungrouped jobs strictly by priority then age; a group's
//! best job by priority, or its oldest when ordered; never past the group's cap, never from a
//! group whose breaker is open, one job at a time from an ordered group or a probing breaker,
//! nothing from an ordered group waiting for its head's retry), and a claim that returns fewer
//! jobs than asked must leave nothing the model allows.
//!
//! Time-based waits are kept out of reach (retries of ordered jobs and breaker cool-downs last
//! an hour) and brought forward by the `TimePasses` step, so every run is deterministic.
//!
//! The model is deliberately naive (vectors and linear scans) so that it is obviously right.

use std::time::Duration;

use orderly_queue::{
    Breaker, CancelOutcome, ClaimedJob, GroupLimits, JobGroup, JobSpec, Priority, QueueEngine,
    QueueLimits, Retention, RetryPolicy,
};
use proptest::prelude::*;
use redis::aio::MultiplexedConnection;

use crate::helpers::{TestEngine, engine_with};

const MAX_ATTEMPTS: u32 = 3;
const LEASE: Duration = Duration::from_secs(60);

/// The group keys; the last one is ordered.
const GROUPS: [&str; 3] = ["a", "b", "o"];
const ORDERED: usize = 2;
/// Far beyond any run: only `TimePasses` ends these waits.
const LONG_WAIT: Duration = Duration::from_secs(3600);

/// The group limits of one run (each run draws its own, so that small caps and breakers that
/// open after one failure are as well covered as larger ones).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Jobs of one (unordered) group running at once.
    cap: usize,
    /// Failed attempts in a row that open a group's breaker.
    failures: u32,
}

impl Limits {
    fn queue_limits(self) -> QueueLimits {
        QueueLimits {
            group: GroupLimits {
                concurrency: Some(self.cap as u32),
                breaker: Some(Breaker {
                    failures: self.failures,
                    cooldown: LONG_WAIT,
                    max_cooldown: 2 * LONG_WAIT,
                }),
                rate: None,
            },
            ..QueueLimits::default()
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        id: u8,
        priority: u8,
        delayed: bool,
        /// An index into `GROUPS`.
        group: Option<usize>,
    },
    Claim {
        n: usize,
    },
    /// Acks, fails and releases pick a lease a worker holds now or, when `stale`, any lease
    /// ever handed out (most of those are stale: the engine must refuse them).
    Ack {
        pick: usize,
        stale: bool,
    },
    Fail {
        pick: usize,
        stale: bool,
        retry: bool,
    },
    Expire {
        pick: usize,
    },
    Release {
        pick: usize,
        stale: bool,
    },
    RetryDead {
        pick: usize,
    },
    Promote {
        pick: usize,
    },
    Delete {
        pick: usize,
    },
    /// Cancels the picked job (any state), or a job that does not exist when `missing`.
    Cancel {
        pick: usize,
        missing: bool,
    },
    /// An operator closes the breaker of a group that has one (any group when none has).
    CloseBreaker {
        pick: usize,
    },
    /// Every breaker's cool-down and every ordered retry's wait comes due (delayed jobs stay
    /// delayed: only `Promote` moves them).
    TimePasses,
}

fn group() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![1 => Just(None), 3 => (0..GROUPS.len()).prop_map(Some)]
}

fn stale() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.2)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0u8..3, prop::bool::weighted(0.15), group()).prop_map(|(id, priority, delayed, group)| Op::Enqueue { id, priority, delayed, group }),
        4 => (1usize..4).prop_map(|n| Op::Claim { n }),
        3 => (any::<usize>(), stale()).prop_map(|(pick, stale)| Op::Ack { pick, stale }),
        4 => (any::<usize>(), stale(), any::<bool>()).prop_map(|(pick, stale, retry)| Op::Fail { pick, stale, retry }),
        1 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
        1 => (any::<usize>(), stale()).prop_map(|(pick, stale)| Op::Release { pick, stale }),
        1 => any::<usize>().prop_map(|pick| Op::RetryDead { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Promote { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        2 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(pick, missing)| Op::Cancel { pick, missing }),
        1 => any::<usize>().prop_map(|pick| Op::CloseBreaker { pick }),
        2 => Just(Op::TimePasses),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Scheduled,
    Active { expired: bool },
    Completed,
    Dead,
    Cancelled,
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    priority: u8,
    /// Position in its priority band (assigned on every entry into ready).
    seq: u64,
    /// Its place in an ordered group: the order it was added in, kept for good.
    gseq: u64,
    group: Option<usize>,
    /// Its run_at lies ahead (a delay, or an ordered job's retry): what tells a breaker being
    /// closed that an ordered group's head waits for its retry.
    run_at_ahead: bool,
    state: State,
    attempts: u32,
    lease: u64,
    /// Asked to stop while it ran: however its attempt ends (but a success), it ends cancelled.
    cancel_requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerModel {
    /// Counting failures in a row.
    Closed { failures: u32 },
    /// Jobs wait; `due`: the cool-down is over and the next turn of the group probes.
    Open { due: bool },
    /// One job at a time decides.
    Probing,
}

impl BreakerModel {
    fn name(self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::Probing => "probing",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct GroupModel {
    /// `None`: no breaker state kept (never failed, or closed since).
    breaker: Option<BreakerModel>,
    /// The group waits for a time (its breaker's cool-down or its ordered head's retry);
    /// `Some(true)` once that time has come, until the next claim takes it into the rotation.
    waits: Option<bool>,
}

#[derive(Debug)]
struct Model {
    limits: Limits,
    jobs: Vec<Job>,
    next_seq: u64,
    /// Every lease ever handed out, stale ones included: the test acks and fails with them.
    leases: Vec<(String, u64)>,
    groups: [GroupModel; GROUPS.len()],
}

impl Model {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            jobs: Vec::new(),
            next_seq: 0,
            leases: Vec::new(),
            groups: Default::default(),
        }
    }

    fn get(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn make_ready(&mut self, id: &str) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let job = self.get(id).unwrap();
        job.state = State::Ready;
        job.seq = seq;
    }

    fn enqueue(&mut self, id: &str, priority: u8, delayed: bool, group: Option<usize>) -> bool {
        if self.jobs.iter().any(|j| j.id == id) {
            return false;
        }
        self.next_seq += 1;
        self.jobs.push(Job {
            id: id.to_owned(),
            priority,
            seq: self.next_seq,
            gseq: self.next_seq,
            group,
            run_at_ahead: delayed,
            state: if delayed {
                State::Scheduled
            } else {
                State::Ready
            },
            attempts: 0,
            lease: 0,
            cancel_requested: false,
        });
        true
    }

    fn cancel(&mut self, id: &str) -> CancelOutcome {
        let Some(job) = self.get(id) else {
            return CancelOutcome::NotFound;
        };
        match job.state {
            State::Ready | State::Scheduled => {
                job.state = State::Cancelled;
                CancelOutcome::Cancelled
            }
            State::Active { .. } => {
                job.cancel_requested = true;
                CancelOutcome::Signalled
            }
            State::Completed | State::Dead | State::Cancelled => CancelOutcome::AlreadyFinished,
        }
    }

    /// Ends an attempt of a job asked to stop; true if it was.
    fn settle_cancel_request(&mut self, id: &str) -> bool {
        let job = self.get(id).unwrap();
        if job.cancel_requested {
            job.cancel_requested = false;
            job.state = State::Cancelled;
            true
        } else {
            false
        }
    }

    /// The jobs of group `g` running now.
    fn running(&self, g: usize) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.group == Some(g) && matches!(j.state, State::Active { .. }))
            .count()
    }

    /// The job of group `g` next in line: the oldest of an ordered group, the best by priority
    /// then age of another.
    fn head(&self, g: usize) -> Option<&Job> {
        let waiting = self
            .jobs
            .iter()
            .filter(|j| j.group == Some(g) && j.state == State::Ready);
        if g == ORDERED {
            waiting.min_by_key(|j| j.gseq)
        } else {
            waiting.min_by_key(|j| (j.priority, j.seq))
        }
    }

    /// Whether a claim may hand out `id` now, or why not.
    fn may_claim(&self, id: &str) -> Result<(), String> {
        let job = self.job(id).ok_or_else(|| format!("{id} does not exist"))?;
        if job.state != State::Ready {
            return Err(format!("{id} is {:?}, not waiting", job.state));
        }
        let Some(g) = job.group else {
            let best = self
                .jobs
                .iter()
                .filter(|j| j.group.is_none() && j.state == State::Ready)
                .min_by_key(|j| (j.priority, j.seq))
                .map(|j| j.id.as_str());
            return (best == Some(id))
                .then_some(())
                .ok_or_else(|| format!("{id} overtook {best:?} among ungrouped jobs"));
        };
        let group = &self.groups[g];
        if group.waits == Some(false) {
            return Err(format!("group {} waits (breaker or retry)", GROUPS[g]));
        }
        if group.breaker == Some(BreakerModel::Open { due: false }) {
            return Err(format!("group {}'s breaker is open", GROUPS[g]));
        }
        let probing = matches!(
            group.breaker,
            Some(BreakerModel::Open { due: true } | BreakerModel::Probing)
        );
        let cap = if probing || g == ORDERED {
            1
        } else {
            self.limits.cap
        };
        if self.running(g) >= cap {
            return Err(format!("group {} has {cap} running", GROUPS[g]));
        }
        let head = self.head(g).map(|j| j.id.as_str());
        (head == Some(id))
            .then_some(())
            .ok_or_else(|| format!("{id} overtook {head:?} in group {}", GROUPS[g]))
    }

    /// What a claim does before it hands out jobs: groups whose wait is over rejoin the
    /// rotation, and expired leases are taken back, in the engine's order (deadline, then id):
    /// back to ready or dead.
    fn claim_prologue(&mut self) {
        for group in &mut self.groups {
            if group.waits == Some(true) {
                group.waits = None;
            }
        }
        let mut expired: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| j.state == State::Active { expired: true })
            .map(|j| j.id.clone())
            .collect();
        expired.sort();
        for id in expired {
            let attempts = self.get(&id).unwrap().attempts;
            if self.settle_cancel_request(&id) {
                continue;
            }
            if attempts >= MAX_ATTEMPTS {
                self.get(&id).unwrap().state = State::Dead;
            } else {
                self.make_ready(&id);
            }
        }
    }

    /// Checks and applies the jobs a claim of `n` returned (id, attempt), in order.
    fn claim(&mut self, n: usize, got: &[(String, u32)]) -> Result<(), String> {
        self.claim_prologue();
        if got.len() > n {
            return Err(format!("asked for {n}, got {got:?}"));
        }
        for (id, attempt) in got {
            self.may_claim(id)?;
            let job = self.get(id).unwrap();
            job.attempts += 1;
            job.lease += 1;
            job.state = State::Active { expired: false };
            let (attempts, lease, group) = (job.attempts, job.lease, job.group);
            if attempts != *attempt {
                return Err(format!(
                    "{id} is at attempt {attempts}, claimed as {attempt}"
                ));
            }
            self.leases.push((id.clone(), lease));
            if let Some(g) = group
                && self.groups[g].breaker == Some(BreakerModel::Open { due: true })
            {
                self.groups[g].breaker = Some(BreakerModel::Probing);
            }
        }
        if got.len() < n
            && let Some(left) = self
                .jobs
                .iter()
                .find(|j| j.state == State::Ready && self.may_claim(&j.id).is_ok())
        {
            return Err(format!(
                "got {} of {n} though {} may run",
                got.len(),
                left.id
            ));
        }
        Ok(())
    }

    fn holds(&mut self, id: &str, lease: u64) -> bool {
        self.get(id)
            .is_some_and(|j| j.lease == lease && matches!(j.state, State::Active { .. }))
    }

    fn ack(&mut self, id: &str, lease: u64) -> bool {
        if !self.holds(id, lease) {
            return false;
        }
        // A job that finished its work before it saw the request completes.
        let job = self.get(id).unwrap();
        job.state = State::Completed;
        job.cancel_requested = false;
        // Any success of a group closes its breaker.
        if let Some(g) = job.group {
            self.close_breaker(g);
        }
        true
    }

    /// Closes group `g`'s breaker (a success, or an operator); false if it kept no state.
    fn close_breaker(&mut self, g: usize) -> bool {
        let Some(before) = self.groups[g].breaker.take() else {
            return false;
        };
        // An open breaker's wait is lifted, unless it also holds an ordered head's retry.
        if matches!(before, BreakerModel::Open { .. }) && self.groups[g].waits.take().is_some() {
            let retrying = self
                .head(g)
                .is_some_and(|h| h.group == Some(ORDERED) && h.attempts > 0 && h.run_at_ahead);
            if retrying {
                self.groups[g].waits = Some(false);
            }
        }
        true
    }

    /// A failed attempt of group `g`'s job counts against its breaker.
    fn count_failure(&mut self, g: usize) {
        let threshold = self.limits.failures;
        let group = &mut self.groups[g];
        let opens = match group.breaker {
            None => threshold <= 1,
            Some(BreakerModel::Closed { failures }) => failures + 1 >= threshold,
            Some(BreakerModel::Open { .. }) => return,
            Some(BreakerModel::Probing) => true,
        };
        if opens {
            group.breaker = Some(BreakerModel::Open { due: false });
            group.waits = Some(false);
        } else {
            let failures = match group.breaker {
                Some(BreakerModel::Closed { failures }) => failures + 1,
                _ => 1,
            };
            group.breaker = Some(BreakerModel::Closed { failures });
        }
    }

    fn fail(&mut self, id: &str, lease: u64, retry: bool) -> bool {
        if !self.holds(id, lease) {
            return false;
        }
        if self.settle_cancel_request(id) {
            return true;
        }
        let job = self.job(id).unwrap();
        let (attempts, group) = (job.attempts, job.group);
        if let Some(g) = group {
            self.count_failure(g);
        }
        if retry && attempts < MAX_ATTEMPTS {
            if group == Some(ORDERED) {
                // Back in front of its group, which waits for the retry.
                let job = self.get(id).unwrap();
                job.state = State::Ready;
                job.run_at_ahead = true;
                self.groups[ORDERED].waits = Some(false);
            } else {
                self.make_ready(id);
            }
        } else {
            self.get(id).unwrap().state = State::Dead;
        }
        true
    }

    /// True if the job went back to ready (a job asked to stop ends cancelled instead).
    fn release(&mut self, id: &str, lease: u64) -> bool {
        if !self.holds(id, lease) || self.settle_cancel_request(id) {
            return false;
        }
        self.get(id).unwrap().attempts -= 1;
        self.make_ready(id);
        true
    }

    /// Every wait for a time comes due.
    fn time_passes(&mut self) {
        for group in &mut self.groups {
            if group.waits.is_some() {
                group.waits = Some(true);
            }
            if group.breaker == Some(BreakerModel::Open { due: false }) {
                group.breaker = Some(BreakerModel::Open { due: true });
            }
        }
        for job in &mut self.jobs {
            if job.group == Some(ORDERED) && job.state == State::Ready {
                job.run_at_ahead = false;
            }
        }
    }

    /// Waiting, scheduled, active, completed, dead, cancelled, waiting in groups, groups with
    /// an open or probing breaker.
    fn counts(&self) -> [u64; 8] {
        let mut c = [0u64; 8];
        for job in &self.jobs {
            let i = match job.state {
                State::Ready => 0,
                State::Scheduled => 1,
                State::Active { .. } => 2,
                State::Completed => 3,
                State::Dead => 4,
                State::Cancelled => 5,
            };
            c[i] += 1;
            if job.state == State::Ready && job.group.is_some() {
                c[6] += 1;
            }
        }
        c[7] = self
            .groups
            .iter()
            .filter(|g| {
                matches!(
                    g.breaker,
                    Some(BreakerModel::Open { .. } | BreakerModel::Probing)
                )
            })
            .count() as u64;
        c
    }

    /// Per group: waiting jobs, running jobs, breaker state and (closed) failures.
    fn group_views(&self) -> Vec<(u64, u64, Option<&'static str>, u64)> {
        (0..GROUPS.len())
            .map(|g| {
                let waiting = self
                    .jobs
                    .iter()
                    .filter(|j| j.group == Some(g) && j.state == State::Ready)
                    .count() as u64;
                let failures = match self.groups[g].breaker {
                    Some(BreakerModel::Closed { failures }) => u64::from(failures),
                    _ => 0,
                };
                (
                    waiting,
                    self.running(g) as u64,
                    self.groups[g].breaker.map(BreakerModel::name),
                    failures,
                )
            })
            .collect()
    }

    fn pick_in(&self, pick: usize, wanted: impl Fn(&State) -> bool) -> Option<String> {
        let candidates: Vec<&Job> = self.jobs.iter().filter(|j| wanted(&j.state)).collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()].id.clone())
    }
}

fn spec(id: &str, priority: u8, delayed: bool, group: Option<usize>) -> JobSpec {
    let mut spec = JobSpec::new("m", "model.job", serde_json::json!({}))
        .with_id(id)
        .with_priority(Priority::new(priority))
        .with_retry(RetryPolicy::schedule(&[Duration::ZERO, Duration::ZERO]));
    if delayed {
        spec = spec.delay(LONG_WAIT);
    }
    match group {
        Some(ORDERED) => spec.in_group(JobGroup::ordered(GROUPS[ORDERED])),
        Some(g) => spec.in_group(JobGroup::new(GROUPS[g])),
        None => spec,
    }
}

fn claimed_stub(id: &str, lease: u64, attempt: u32) -> ClaimedJob {
    ClaimedJob {
        queue: "m".into(),
        id: id.to_owned(),
        lease,
        attempt,
        kind: "model.job".into(),
        payload: "{}".into(),
        priority: Priority::NORMAL,
        max_attempts: MAX_ATTEMPTS,
        request_id: None,
        retry: RetryPolicy::default(),
        created_at_ms: 0,
        traceparent: None,
    }
}

async fn real_counts(engine: &QueueEngine) -> [u64; 8] {
    let c = engine.counts("m").await.unwrap();
    [
        c.waiting,
        c.scheduled,
        c.active,
        c.completed,
        c.dead,
        c.cancelled,
        c.waiting_in_groups,
        c.open_breakers,
    ]
}

async fn real_groups(engine: &QueueEngine) -> Vec<(u64, u64, Option<String>, u64)> {
    let mut views = Vec::new();
    for key in GROUPS {
        let status = engine.group("m", key).await.unwrap();
        let (state, failures) = match status.breaker {
            Some(b) if b.state == "closed" => (Some(b.state), b.failures),
            Some(b) => (Some(b.state), 0),
            None => (None, 0),
        };
        views.push((status.waiting, status.running, state, failures));
    }
    views
}

/// Brings every wait for a time forward to now in Redis, as `Model::time_passes` does: the
/// groups' waits, open breakers' cool-downs, and the run_at of ordered jobs waiting to retry.
async fn time_passes(
    engine: &QueueEngine,
    conn: &mut MultiplexedConnection,
    model: &Model,
) -> redis::RedisResult<()> {
    let base = engine.base("m");
    for key in GROUPS {
        let () = redis::cmd("ZADD")
            .arg(format!("{base}gwait"))
            .arg("XX")
            .arg(0)
            .arg(key)
            .query_async(conn)
            .await?;
        let state: Option<String> = redis::cmd("HGET")
            .arg(format!("{base}gb:{key}"))
            .arg("state")
            .query_async(conn)
            .await?;
        if state.as_deref() == Some("open") {
            let () = redis::cmd("HSET")
                .arg(format!("{base}gb:{key}"))
                .arg("until")
                .arg(0)
                .query_async(conn)
                .await?;
        }
    }
    for job in &model.jobs {
        if job.group == Some(ORDERED) && job.state == State::Ready {
            let () = redis::cmd("HSET")
                .arg(engine.job_key("m", &job.id))
                .arg("run_at")
                .arg(0)
                .query_async(conn)
                .await?;
        }
    }
    Ok(())
}

async fn run(limits: Limits, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let test_engine: TestEngine = engine_with(Retention {
        completed_keep: 10_000,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    let engine = &test_engine
        .engine
        .clone()
        .with_limits([("m".to_owned(), limits.queue_limits())]);
    let mut conn = redis::Client::open(test_engine.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut model = Model::new(limits);
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Enqueue {
                id,
                priority,
                delayed,
                group,
            } => {
                let id = format!("j{id}");
                let expected = model.enqueue(&id, *priority, *delayed, *group);
                let got = engine
                    .enqueue(&[spec(&id, *priority, *delayed, *group)])
                    .await
                    .unwrap()[0];
                prop_assert_eq!(got, expected, "step {} {:?}", step, op);
            }
            Op::Claim { n } => {
                let got: Vec<(String, u32)> = engine
                    .claim("m", "model-worker", *n, LEASE)
                    .await
                    .unwrap()
                    .jobs
                    .into_iter()
                    .map(|j| (j.id, j.attempt))
                    .collect();
                let checked = model.claim(*n, &got);
                prop_assert!(
                    checked.is_ok(),
                    "step {} {:?} claimed {:?}: {}",
                    step,
                    op,
                    got,
                    checked.unwrap_err()
                );
                // Whether a breaker whose cool-down ended turned to probing depends on whether
                // the rotation reached its group (the engine's choice): the model follows.
                for (g, key) in GROUPS.iter().enumerate() {
                    if model.groups[g].breaker == Some(BreakerModel::Open { due: true }) {
                        let status = engine.group("m", key).await.unwrap();
                        if status.breaker.is_some_and(|b| b.state == "probing") {
                            model.groups[g].breaker = Some(BreakerModel::Probing);
                        }
                    }
                }
            }
            Op::Ack { pick, stale }
            | Op::Fail { pick, stale, .. }
            | Op::Release { pick, stale } => {
                let held: Vec<(String, u64)> = model
                    .jobs
                    .iter()
                    .filter(|j| matches!(j.state, State::Active { .. }))
                    .map(|j| (j.id.clone(), j.lease))
                    .collect();
                let choices = if *stale || held.is_empty() {
                    &model.leases
                } else {
                    &held
                };
                if choices.is_empty() {
                    continue;
                }
                let (id, lease) = choices[pick % choices.len()].clone();
                let (attempt, group) = model
                    .job(&id)
                    .map(|j| (j.attempts, j.group))
                    .unwrap_or((1, None));
                match &op {
                    Op::Ack { .. } => {
                        let expected = model.ack(&id, lease);
                        let got = engine.ack("m", &[(id.clone(), lease)]).await.unwrap()[0];
                        prop_assert_eq!(got, expected, "step {} {:?}", step, op);
                    }
                    Op::Fail { retry, .. } => {
                        // An ordered job's retry waits until time passes; others retry at once.
                        let delay = if group == Some(ORDERED) {
                            LONG_WAIT
                        } else {
                            Duration::ZERO
                        };
                        let retry_in = (*retry && attempt < MAX_ATTEMPTS).then_some(delay);
                        let expected = model.fail(&id, lease, *retry);
                        let got = engine
                            .fail(
                                &claimed_stub(&id, lease, attempt),
                                "model failure",
                                retry_in,
                            )
                            .await
                            .unwrap();
                        prop_assert_eq!(got, expected, "step {} {:?}", step, op);
                    }
                    _ => {
                        let expected = model.release(&id, lease);
                        let got = engine.release("m", &[(id.clone(), lease)]).await.unwrap() == 1;
                        prop_assert_eq!(got, expected, "step {} {:?}", step, op);
                    }
                }
            }
            Op::Expire { pick } => {
                // A worker dies: its lease deadline is moved into the past.
                if let Some(id) = model.pick_in(*pick, |s| *s == State::Active { expired: false }) {
                    model.get(&id).unwrap().state = State::Active { expired: true };
                    let _: () = redis::cmd("ZADD")
                        .arg(engine.state_key("m", orderly_queue::JobState::Active))
                        .arg("XX")
                        .arg(0)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
            Op::RetryDead { pick } => {
                // The same operator action retries dead and cancelled jobs.
                if let Some(id) =
                    model.pick_in(*pick, |s| matches!(s, State::Dead | State::Cancelled))
                {
                    model.get(&id).unwrap().attempts = 0;
                    model.make_ready(&id);
                    prop_assert!(engine.retry_dead("m", &id).await.unwrap());
                }
            }
            Op::Promote { pick } => {
                if let Some(id) = model.pick_in(*pick, |s| *s == State::Scheduled) {
                    model.get(&id).unwrap().run_at_ahead = false;
                    model.make_ready(&id);
                    prop_assert!(engine.promote("m", &id).await.unwrap());
                }
            }
            Op::Cancel { pick, missing } => {
                let id = if *missing {
                    Some("never-enqueued".to_owned())
                } else {
                    model.pick_in(*pick, |_| true)
                };
                if let Some(id) = id {
                    let expected = model.cancel(&id);
                    let got = engine.cancel("m", &id, "model cancel").await.unwrap();
                    prop_assert_eq!(got, expected, "step {} {:?}", step, op);
                }
            }
            Op::Delete { pick } => {
                if let Some(id) = model.pick_in(*pick, |s| !matches!(s, State::Active { .. })) {
                    model.jobs.retain(|j| j.id != id);
                    prop_assert!(engine.delete("m", &id).await.unwrap());
                }
            }
            Op::CloseBreaker { pick } => {
                let with_breaker: Vec<usize> = (0..GROUPS.len())
                    .filter(|g| model.groups[*g].breaker.is_some())
                    .collect();
                let group = if with_breaker.is_empty() {
                    pick % GROUPS.len()
                } else {
                    with_breaker[pick % with_breaker.len()]
                };
                let expected = model.close_breaker(group);
                let got = engine.close_breaker("m", GROUPS[group]).await.unwrap();
                prop_assert_eq!(got, expected, "step {} {:?}", step, op);
            }
            Op::TimePasses => {
                time_passes(engine, &mut conn, &model).await.unwrap();
                model.time_passes();
            }
        }
        prop_assert_eq!(
            real_counts(engine).await,
            model.counts(),
            "counts after step {} {:?}",
            step,
            op
        );
        let expected_groups = model.group_views();
        let got_groups = real_groups(engine).await;
        prop_assert!(
            got_groups
                .iter()
                .zip(&expected_groups)
                .all(|(got, want)| got.0 == want.0
                    && got.1 == want.1
                    && got.2.as_deref() == want.2
                    && got.3 == want.3),
            "groups (waiting, running, breaker, failures) after step {} {:?}: engine {:?}, model {:?}",
            step,
            op,
            got_groups,
            expected_groups
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(
        cap in 1usize..=3,
        failures in 1u32..=3,
        ops in prop::collection::vec(op(), 1..100),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(Limits { cap, failures }, ops))?;
    }
}
