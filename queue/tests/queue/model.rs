//! Model-based test: random sequences of enqueue / claim / ack / fail / expire / release /
//! retry / promote / delete / cancel run against the real engine and against a small in-memory
//! model of what the engine promises; after every step the results and the counts per state
//! must agree.
//!
//! The model is deliberately naive (vectors and linear scans) so that it is obviously right.

use std::time::Duration;

use orderly_queue::{
    CancelOutcome, ClaimedJob, JobSpec, Priority, QueueEngine, Retention, RetryPolicy,
};
use proptest::prelude::*;

use crate::helpers::{TestEngine, engine_with};

const MAX_ATTEMPTS: u32 = 3;
const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        id: u8,
        priority: u8,
        delayed: bool,
    },
    Claim {
        n: usize,
    },
    Ack {
        pick: usize,
    },
    Fail {
        pick: usize,
        retry: bool,
    },
    Expire {
        pick: usize,
    },
    Release {
        pick: usize,
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..3, prop::bool::weighted(0.15)).prop_map(|(id, priority, delayed)| Op::Enqueue { id, priority, delayed }),
        4 => (1usize..4).prop_map(|n| Op::Claim { n }),
        3 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retry)| Op::Fail { pick, retry }),
        1 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => any::<usize>().prop_map(|pick| Op::RetryDead { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Promote { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        2 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(pick, missing)| Op::Cancel { pick, missing }),
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
    state: State,
    attempts: u32,
    lease: u64,
    /// Asked to stop while it ran: however its attempt ends (but a success), it ends cancelled.
    cancel_requested: bool,
}

#[derive(Debug, Default)]
struct Model {
    jobs: Vec<Job>,
    next_seq: u64,
    /// Every lease ever handed out, stale ones included: the test acks and fails with them.
    leases: Vec<(String, u64)>,
}

impl Model {
    fn get(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    fn make_ready(&mut self, id: &str) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let job = self.get(id).unwrap();
        job.state = State::Ready;
        job.seq = seq;
    }

    fn enqueue(&mut self, id: &str, priority: u8, delayed: bool) -> bool {
        if self.jobs.iter().any(|j| j.id == id) {
            return false;
        }
        self.next_seq += 1;
        self.jobs.push(Job {
            id: id.to_owned(),
            priority,
            seq: self.next_seq,
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

    fn claim(&mut self, n: usize) -> Vec<(String, u32)> {
        // Expired leases first, in the engine's order (deadline, then id): back to ready or dead.
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
        let mut ready: Vec<(u8, u64, String)> = self
            .jobs
            .iter()
            .filter(|j| j.state == State::Ready)
            .map(|j| (j.priority, j.seq, j.id.clone()))
            .collect();
        ready.sort();
        let mut out = Vec::new();
        for (_, _, id) in ready.into_iter().take(n) {
            let job = self.get(&id).unwrap();
            job.attempts += 1;
            job.lease += 1;
            job.state = State::Active { expired: false };
            let (attempts, lease) = (job.attempts, job.lease);
            self.leases.push((id.clone(), lease));
            out.push((id, attempts));
        }
        out
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
        true
    }

    /// Returns (recorded, retry decision used).
    fn fail(&mut self, id: &str, lease: u64, retry: bool) -> bool {
        if !self.holds(id, lease) {
            return false;
        }
        if self.settle_cancel_request(id) {
            return true;
        }
        let attempts = self.get(id).unwrap().attempts;
        if retry && attempts < MAX_ATTEMPTS {
            self.make_ready(id);
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

    fn counts(&self) -> [u64; 6] {
        let mut c = [0u64; 6];
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
        }
        c
    }

    fn pick_in(&self, pick: usize, wanted: impl Fn(&State) -> bool) -> Option<String> {
        let candidates: Vec<&Job> = self.jobs.iter().filter(|j| wanted(&j.state)).collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()].id.clone())
    }
}

fn spec(id: &str, priority: u8, delayed: bool) -> JobSpec {
    let spec = JobSpec::new("m", "model.job", serde_json::json!({}))
        .with_id(id)
        .with_priority(Priority::new(priority))
        .with_retry(RetryPolicy::schedule(&[Duration::ZERO, Duration::ZERO]));
    if delayed {
        spec.delay(Duration::from_secs(3600))
    } else {
        spec
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
    }
}

async fn real_counts(engine: &QueueEngine) -> [u64; 6] {
    let c = engine.counts("m").await.unwrap();
    [
        c.waiting,
        c.scheduled,
        c.active,
        c.completed,
        c.dead,
        c.cancelled,
    ]
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let test_engine: TestEngine = engine_with(Retention {
        completed_keep: 10_000,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    let engine = &test_engine.engine;
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Enqueue {
                id,
                priority,
                delayed,
            } => {
                let id = format!("j{id}");
                let expected = model.enqueue(&id, *priority, *delayed);
                let got = engine
                    .enqueue(&[spec(&id, *priority, *delayed)])
                    .await
                    .unwrap()[0];
                prop_assert_eq!(got, expected, "step {} {:?}", step, op);
            }
            Op::Claim { n } => {
                let expected = model.claim(*n);
                let got: Vec<(String, u32)> = engine
                    .claim("m", "model-worker", *n, LEASE)
                    .await
                    .unwrap()
                    .jobs
                    .into_iter()
                    .map(|j| (j.id, j.attempt))
                    .collect();
                prop_assert_eq!(got, expected, "step {} {:?}", step, op);
            }
            Op::Ack { pick } | Op::Fail { pick, .. } | Op::Release { pick } => {
                if model.leases.is_empty() {
                    continue;
                }
                let (id, lease) = model.leases[pick % model.leases.len()].clone();
                let attempt = model
                    .jobs
                    .iter()
                    .find(|j| j.id == id)
                    .map(|j| j.attempts)
                    .unwrap_or(1);
                match &op {
                    Op::Ack { .. } => {
                        let expected = model.ack(&id, lease);
                        let got = engine.ack("m", &[(id.clone(), lease)]).await.unwrap()[0];
                        prop_assert_eq!(got, expected, "step {} {:?}", step, op);
                    }
                    Op::Fail { retry, .. } => {
                        let retry_in = (*retry && attempt < MAX_ATTEMPTS).then_some(Duration::ZERO);
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
                    let mut conn = redis::Client::open(test_engine.url.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap();
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
        }
        prop_assert_eq!(
            real_counts(engine).await,
            model.counts(),
            "counts after step {} {:?}",
            step,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}
