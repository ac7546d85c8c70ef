//! Job groups against the real Redis: claims rotate fairly between groups (and between groups
//! and ungrouped jobs) whatever one group's backlog; a group's concurrency cap and rate hold
//! across workers without holding back other groups; an ordered group runs first in, first out,
//! one job at a time, and a failed head keeps later jobs waiting until its retry; a group's
//! breaker opens after failures in a row, lets one probe through after its cool-down and closes
//! on a success or by hand; grouped waiting jobs can be cancelled, deleted and inspected.
//!
//! Time-based behaviour (cool-downs, retries, expired leases, rate tokens) is awaited by polling
//! with generous deadlines; no test asserts how fast anything happens.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use orderly_queue::{
    Breaker, CancelOutcome, ClaimedJob, GroupLimits, JobGroup, JobSpec, QueueEngine, QueueLimits,
    RateLimit,
};

use crate::helpers::{TestEngine, engine, job};

const LEASE: Duration = Duration::from_secs(30);

/// Long enough for anything time-based to come due on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A job of queue "q" in the unordered group `group`.
fn grouped(id: &str, group: &str) -> JobSpec {
    job("q", id, 5).in_group(JobGroup::new(group))
}

/// A job of queue "q" in the ordered group `group`.
fn ordered(id: &str, group: &str, priority: u8) -> JobSpec {
    job("q", id, priority).in_group(JobGroup::ordered(group))
}

/// A worker's engine (on `e`'s prefix) enforcing `group` limits on queue "q".
fn worker(e: &TestEngine, group: GroupLimits) -> QueueEngine {
    e.engine.clone().with_limits([(
        "q".to_owned(),
        QueueLimits {
            group,
            ..QueueLimits::default()
        },
    )])
}

/// A breaker opening after `failures` in a row, cooling down for `cooldown` (doubling up to 2 s).
fn breaker(failures: u32, cooldown: Duration) -> GroupLimits {
    GroupLimits {
        breaker: Some(Breaker {
            failures,
            cooldown,
            max_cooldown: Duration::from_secs(2).max(cooldown),
        }),
        ..GroupLimits::default()
    }
}

async fn claim(engine: &QueueEngine, n: usize) -> Vec<ClaimedJob> {
    engine.claim("q", "w", n, LEASE).await.unwrap().jobs
}

fn ids(jobs: &[ClaimedJob]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

async fn ack(engine: &QueueEngine, job: &ClaimedJob) {
    assert_eq!(
        engine
            .ack("q", &[(job.id.clone(), job.lease)])
            .await
            .unwrap(),
        [true],
        "{} was still leased",
        job.id
    );
}

/// Claims one job at a time (with `lease`) every 10 ms until one comes or `PATIENCE` passes.
async fn next_job(engine: &QueueEngine, lease: Duration) -> Option<ClaimedJob> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let claimed = engine.claim("q", "w", 1, lease).await.unwrap().jobs.pop();
        if claimed.is_some() || Instant::now() >= deadline {
            return claimed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The attempts of the jobs waiting in `group`, by id.
async fn waiting_attempts(engine: &QueueEngine, group: &str) -> HashMap<String, u32> {
    let page = engine.group_jobs("q", group, 0, 100).await.unwrap();
    page.jobs.into_iter().map(|j| (j.id, j.attempts)).collect()
}

/// The breaker's state name (`closed`, `open`, `probing`), or `None` when the group has none.
async fn breaker_state(engine: &QueueEngine, group: &str) -> Option<String> {
    let status = engine.group("q", group).await.unwrap();
    status.breaker.map(|b| b.state)
}

#[tokio::test]
async fn a_new_group_is_served_within_one_turn_of_a_thousand_job_backlog() {
    let e = engine().await;
    let backlog: Vec<_> = (0..1000)
        .map(|i| grouped(&format!("a{i:04}"), "A"))
        .collect();
    e.enqueue(&backlog).await.unwrap();
    e.enqueue(&[grouped("b0", "B")]).await.unwrap();

    let first_two: Vec<String> = [claim(&e, 1).await, claim(&e, 1).await]
        .concat()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(first_two.contains(&"b0".to_owned()), "{first_two:?}");

    // The same once the big group has been served for a while: a newcomer waits one turn.
    for _ in 0..5 {
        assert!(claim(&e, 1).await[0].id.starts_with('a'));
    }
    e.enqueue(&[grouped("c0", "C")]).await.unwrap();
    let next_two: Vec<String> = [claim(&e, 1).await, claim(&e, 1).await]
        .concat()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(next_two.contains(&"c0".to_owned()), "{next_two:?}");
}

#[tokio::test]
async fn claims_rotate_round_robin_between_groups() {
    let e = engine().await;
    for group in ["A", "B", "C"] {
        let jobs: Vec<_> = (0..4)
            .map(|i| grouped(&format!("{group}{i}"), group))
            .collect();
        e.enqueue(&jobs).await.unwrap();
    }
    // In batches of 3 as well as one at a time, every group gets one job per round.
    let batch = claim(&e, 3).await;
    let mut groups: Vec<char> = batch.iter().map(|j| j.id.as_bytes()[0] as char).collect();
    groups.sort_unstable();
    assert_eq!(groups, ['A', 'B', 'C'], "{:?}", ids(&batch));
    for _ in 0..3 {
        let mut round: Vec<char> = Vec::new();
        for _ in 0..3 {
            round.push(claim(&e, 1).await[0].id.as_bytes()[0] as char);
        }
        round.sort_unstable();
        assert_eq!(round, ['A', 'B', 'C']);
    }
    assert!(claim(&e, 10).await.is_empty());
}

#[tokio::test]
async fn ungrouped_and_grouped_jobs_alternate() {
    let e = engine().await;
    let mut jobs: Vec<_> = (0..6).map(|i| grouped(&format!("g{i}"), "A")).collect();
    jobs.extend((0..6).map(|i| job("q", &format!("u{i}"), 5)));
    e.enqueue(&jobs).await.unwrap();

    // One at a time (a busy worker's claims), as well as within one claim.
    let mut claimed = Vec::new();
    for _ in 0..8 {
        claimed.push(claim(&e, 1).await.remove(0).id);
    }
    for pair in claimed.chunks(2) {
        let grouped = pair.iter().filter(|id| id.starts_with('g')).count();
        assert_eq!(grouped, 1, "one of each in every two claims: {claimed:?}");
    }
    let rest = claim(&e, 4).await;
    let grouped = rest.iter().filter(|j| j.id.starts_with('g')).count();
    assert_eq!(grouped, 2, "{:?}", ids(&rest));
    // Ungrouped jobs keep strict priority-then-FIFO order among themselves.
    let ungrouped: Vec<&String> = claimed.iter().filter(|id| id.starts_with('u')).collect();
    assert_eq!(ungrouped, ["u0", "u1", "u2", "u3"]);
}

#[tokio::test]
async fn priorities_hold_inside_an_unordered_group() {
    let e = engine().await;
    e.enqueue(&[
        job("q", "low", 9).in_group(JobGroup::new("A")),
        job("q", "normal-1", 5).in_group(JobGroup::new("A")),
        job("q", "urgent", 0).in_group(JobGroup::new("A")),
        job("q", "normal-2", 5).in_group(JobGroup::new("A")),
    ])
    .await
    .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(claim(&e, 1).await.remove(0).id);
    }
    assert_eq!(order, ["urgent", "normal-1", "normal-2", "low"]);
}

#[tokio::test]
async fn a_group_cap_holds_across_workers_and_does_not_block_other_groups() {
    let e = engine().await;
    let capped = GroupLimits {
        concurrency: Some(2),
        ..GroupLimits::default()
    };
    let (w1, w2, w3) = (worker(&e, capped), worker(&e, capped), worker(&e, capped));
    for group in ["A", "B"] {
        let jobs: Vec<_> = (0..6)
            .map(|i| grouped(&format!("{group}{i}"), group))
            .collect();
        e.enqueue(&jobs).await.unwrap();
    }
    let first = claim(&w1, 10).await;
    let of = |jobs: &[ClaimedJob], group: char| {
        jobs.iter()
            .filter(|j| j.id.starts_with(group))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (of(&first, 'A').len(), of(&first, 'B').len()),
        (2, 2),
        "{:?}",
        ids(&first)
    );
    assert!(claim(&w2, 10).await.is_empty(), "both groups at their cap");
    // A group at its cap holds back no other group.
    e.enqueue(&[grouped("C0", "C")]).await.unwrap();
    assert_eq!(ids(&claim(&w3, 10).await), ["C0"]);
    assert_eq!(e.group("q", "A").await.unwrap().state, "held");

    // A slot comes back on ack ...
    let a = of(&first, 'A');
    ack(&w1, &a[0]).await;
    let after_ack = claim(&w2, 10).await;
    assert_eq!(of(&after_ack, 'A').len(), 1, "{:?}", ids(&after_ack));
    assert_eq!(after_ack.len(), 1);
    assert!(claim(&w3, 10).await.is_empty());

    // ... on a failure (retried at once here) ...
    assert!(w1.fail(&a[1], "boom", Some(Duration::ZERO)).await.unwrap());
    let after_fail = claim(&w3, 10).await;
    assert_eq!(of(&after_fail, 'A').len(), 1, "{:?}", ids(&after_fail));
    assert!(claim(&w1, 10).await.is_empty());

    // ... on a release (graceful shutdown) ...
    let released = &after_fail[0];
    assert_eq!(
        w3.release("q", &[(released.id.clone(), released.lease)])
            .await
            .unwrap(),
        1
    );
    let short_lease = Duration::from_millis(300);
    let after_release = w2.claim("q", "dying", 10, short_lease).await.unwrap().jobs;
    assert_eq!(
        of(&after_release, 'A').len(),
        1,
        "{:?}",
        ids(&after_release)
    );

    // ... and when the lease of a worker that died expires (that worker took it with a short
    // lease and never renews it).
    assert!(claim(&w1, 10).await.is_empty(), "still 2 of A running");
    let after_expiry = next_job(&w1, LEASE).await.expect("the dead worker's slot");
    assert!(after_expiry.id.starts_with('A'), "{}", after_expiry.id);
    let status = e.group("q", "A").await.unwrap();
    assert_eq!(status.running, 2);
    assert!(claim(&w1, 10).await.is_empty());
}

#[tokio::test]
async fn a_group_cap_holds_while_several_workers_race() {
    let e = engine().await;
    let jobs: Vec<_> = (0..40).map(|i| grouped(&format!("a{i:02}"), "A")).collect();
    e.enqueue(&jobs).await.unwrap();
    let capped = GroupLimits {
        concurrency: Some(2),
        ..GroupLimits::default()
    };
    // Counted only while a worker holds the lease (after the claim returned, before the ack
    // is sent), so the count never exceeds what Redis has running.
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let engine = worker(&e, capped);
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while done.load(Ordering::SeqCst) < 40 && Instant::now() < deadline {
                    let claimed = engine
                        .claim("q", &format!("w{w}"), 3, LEASE)
                        .await
                        .unwrap()
                        .jobs;
                    if claimed.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    let now = running.fetch_add(claimed.len(), Ordering::SeqCst) + claimed.len();
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(claimed.len(), Ordering::SeqCst);
                    let leases: Vec<_> = claimed.iter().map(|j| (j.id.clone(), j.lease)).collect();
                    let acked = engine.ack("q", &leases).await.unwrap();
                    assert!(acked.iter().all(|a| *a));
                    done.fetch_add(claimed.len(), Ordering::SeqCst);
                }
            })
        })
        .collect();
    for handle in workers {
        handle.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 40, "every job ran");
    assert!(
        most.load(Ordering::SeqCst) <= 2,
        "{} of group A ran at once",
        most.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_group_rate_limits_that_group_only_and_says_when_its_token_is_due() {
    let e = engine().await;
    let five_a_second = RateLimit::parse("5/s").unwrap();
    assert_eq!(five_a_second.burst(), 1);
    let w = worker(
        &e,
        GroupLimits {
            rate: Some(five_a_second),
            ..GroupLimits::default()
        },
    );
    let mut jobs: Vec<_> = (0..20).map(|i| grouped(&format!("a{i:02}"), "A")).collect();
    jobs.extend((0..20).map(|i| grouped(&format!("b{i:02}"), "B")));
    jobs.extend((0..5).map(|i| job("q", &format!("u{i}"), 5)));
    e.enqueue(&jobs).await.unwrap();

    let started = Instant::now();
    let first = w.claim("q", "w", 20, LEASE).await.unwrap();
    let count = |jobs: &[ClaimedJob], prefix: char| {
        jobs.iter().filter(|j| j.id.starts_with(prefix)).count()
    };
    assert_eq!(
        (
            count(&first.jobs, 'a'),
            count(&first.jobs, 'b'),
            count(&first.jobs, 'u')
        ),
        (1, 1, 5),
        "a burst of one per group; ungrouped jobs unaffected: {:?}",
        ids(&first.jobs)
    );
    // Not the queue's rate: the claim says when a group's next token is due (one token is
    // 200 ms at 5/s), so an idle worker sleeps until then.
    assert!(!first.rate_limited);
    let wait = first.next_wake_in.expect("when the groups' tokens are due");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    let status = e.group("q", "A").await.unwrap();
    assert_eq!(status.state, "waiting");
    assert!(status.waiting_until_ms.is_some());

    // Over a while (and at least until A's next token came), each group gets no more than its
    // rate plus its burst, each on its own.
    let mut claimed_a = 1;
    let mut claimed_b = 1;
    let deadline = Instant::now() + PATIENCE;
    while (started.elapsed() < Duration::from_millis(1200) || claimed_a < 2)
        && Instant::now() < deadline
    {
        let claim = w.claim("q", "w", 20, LEASE).await.unwrap();
        claimed_a += count(&claim.jobs, 'a');
        claimed_b += count(&claim.jobs, 'b');
        let wait = claim.next_wake_in.unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait.clamp(Duration::from_millis(5), Duration::from_millis(50))).await;
    }
    assert!(claimed_a >= 2, "A got a token again after it was due");
    // One job more than the tokens the elapsed time allows, as slack for millisecond rounding.
    let allowed = (started.elapsed().as_secs_f64() * 5.0).floor() as usize + 2;
    assert!(claimed_a <= allowed, "A: {claimed_a} > {allowed}");
    assert!(claimed_b <= allowed, "B: {claimed_b} > {allowed}");
    // Jobs held back are untouched.
    let attempts = waiting_attempts(&e, "A").await;
    assert_eq!(attempts.len(), 20 - claimed_a);
    assert!(attempts.values().all(|a| *a == 0));
}

#[tokio::test]
async fn an_ordered_group_runs_first_in_first_out_one_at_a_time() {
    let e = engine().await;
    // Priorities are ignored in an ordered group: the order of arrival is what counts.
    e.enqueue(&[
        ordered("o1", "O", 9),
        ordered("o2", "O", 0),
        ordered("o3", "O", 5),
    ])
    .await
    .unwrap();
    let other = worker(&e, GroupLimits::default());
    for expected in ["o1", "o2", "o3"] {
        let claimed = claim(&e, 10).await;
        assert_eq!(ids(&claimed), [expected]);
        assert!(claim(&other, 10).await.is_empty(), "one at a time");
        ack(&e, &claimed[0]).await;
    }
    let detail = e.job("q", "o1").await.unwrap().unwrap();
    assert_eq!(detail.group.as_deref(), Some("O"));
    assert!(detail.ordered);
}

#[tokio::test]
async fn an_ordered_groups_failed_head_keeps_later_jobs_waiting_until_its_retry() {
    let e = engine().await;
    e.enqueue(&[
        ordered("o1", "O", 5),
        ordered("o2", "O", 5),
        ordered("o3", "O", 5),
        grouped("free", "F"),
    ])
    .await
    .unwrap();
    let head = claim(&e, 1).await.remove(0);
    assert_eq!(head.id, "o1");
    assert!(
        e.fail(&head, "endpoint down", Some(Duration::from_millis(300)))
            .await
            .unwrap()
    );
    // Until the retry is due nothing of the group runs; other groups go on.
    assert_eq!(ids(&claim(&e, 10).await), ["free"]);
    let status = e.group("q", "O").await.unwrap();
    assert_eq!((status.state.as_str(), status.waiting), ("waiting", 3));
    assert!(status.waiting_until_ms.is_some());
    assert_eq!(
        e.job("q", "o1").await.unwrap().unwrap().state,
        "ready",
        "waiting in its group, in front"
    );
    // Then the failed job runs again, before the others.
    let retried = next_job(&e, LEASE).await.expect("the retry comes due");
    assert_eq!((retried.id.as_str(), retried.attempt), ("o1", 2));
    assert!(claim(&e, 10).await.is_empty(), "still one at a time");

    // A head that dies lets the next job proceed at once.
    assert!(e.fail(&retried, "gone for good", None).await.unwrap());
    assert_eq!(e.job("q", "o1").await.unwrap().unwrap().state, "dead");
    let next = claim(&e, 10).await;
    assert_eq!(ids(&next), ["o2"]);
    ack(&e, &next[0]).await;
    assert_eq!(ids(&claim(&e, 10).await), ["o3"]);
}

#[tokio::test]
async fn a_restarted_ordered_job_keeps_its_place() {
    let e = engine().await;
    e.enqueue(&[ordered("o1", "O", 5), ordered("o2", "O", 5)])
        .await
        .unwrap();
    // Released at shutdown: back in front.
    let first = claim(&e, 1).await.remove(0);
    e.release("q", &[(first.id.clone(), first.lease)])
        .await
        .unwrap();
    let again = claim(&e, 1).await.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), ("o1", 1));
    // Its worker died: back in front once the lease expires.
    e.release("q", &[(again.id.clone(), again.lease)])
        .await
        .unwrap();
    let dying = e
        .claim("q", "dying", 1, Duration::from_millis(300))
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(dying.id, "o1");
    let after_expiry = next_job(&e, LEASE).await.expect("the lease expires");
    assert_eq!((after_expiry.id.as_str(), after_expiry.attempt), ("o1", 2));
}

#[tokio::test]
async fn a_breaker_opens_after_failures_in_a_row_and_a_probe_success_closes_it() {
    let e = engine().await;
    let w = worker(&e, breaker(2, Duration::from_millis(200)));
    let bad: Vec<_> = (1..=5)
        .map(|i| grouped(&format!("bad{i}"), "bad"))
        .collect();
    e.enqueue(&bad).await.unwrap();
    let failing = claim(&w, 2).await;
    assert_eq!(ids(&failing), ["bad1", "bad2"]);
    assert!(
        w.fail(&failing[0], "503", Some(Duration::from_millis(50)))
            .await
            .unwrap()
    );
    assert_eq!(breaker_state(&e, "bad").await.as_deref(), Some("closed"));
    assert!(w.fail(&failing[1], "503", None).await.unwrap());

    // Open: the group's jobs wait untouched, other groups go on.
    let good: Vec<_> = (1..=3)
        .map(|i| grouped(&format!("good{i}"), "good"))
        .collect();
    e.enqueue(&good).await.unwrap();
    let meanwhile = claim(&w, 10).await;
    assert!(
        meanwhile.iter().all(|j| j.id.starts_with("good")) && meanwhile.len() == 3,
        "{:?}",
        ids(&meanwhile)
    );
    let attempts = waiting_attempts(&e, "bad").await;
    for id in ["bad3", "bad4", "bad5"] {
        assert_eq!(attempts.get(id), Some(&0), "{id}: {attempts:?}");
    }
    let status = e.group("q", "bad").await.unwrap();
    let open = status.breaker.expect("a breaker");
    assert_eq!((open.state.as_str(), open.opens), ("open", 1));
    assert_eq!(open.last_error.as_deref(), Some("503"));
    let (opened, reopens) = (open.opened_at_ms.unwrap(), open.reopens_at_ms.unwrap());
    assert_eq!(reopens - opened, 200, "the first cool-down");
    let overview = e.groups("q", 10).await.unwrap();
    assert_eq!(overview.open_breakers.len(), 1);
    assert_eq!(overview.open_breakers[0].key, "bad");
    assert_eq!(e.counts("q").await.unwrap().open_breakers, 1);

    // After the cool-down exactly one job runs: the probe.
    let probe = next_job(&w, LEASE)
        .await
        .expect("a probe after the cool-down");
    assert!(probe.id.starts_with("bad"), "{}", probe.id);
    assert_eq!(breaker_state(&e, "bad").await.as_deref(), Some("probing"));
    assert!(claim(&w, 10).await.is_empty(), "one probe at a time");

    // Its success closes the breaker: the group flows again.
    ack(&w, &probe).await;
    assert_eq!(breaker_state(&e, "bad").await, None);
    assert_eq!(e.counts("q").await.unwrap().open_breakers, 0);
    let mut rest: Vec<String> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    // bad1's retry (50 ms backoff) joins the rest once it is due.
    while rest.len() < 3 && Instant::now() < deadline {
        rest.extend(claim(&w, 10).await.into_iter().map(|j| j.id));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rest.sort();
    let mut expected = vec!["bad1", "bad3", "bad4", "bad5"];
    expected.retain(|id| *id != probe.id);
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker_for_twice_as_long() {
    let e = engine().await;
    let w = worker(&e, breaker(1, Duration::from_millis(200)));
    let jobs: Vec<_> = (1..=4).map(|i| grouped(&format!("b{i}"), "B")).collect();
    e.enqueue(&jobs).await.unwrap();
    let first = claim(&w, 1).await.remove(0);
    assert!(w.fail(&first, "timeout", None).await.unwrap());
    let once = e.group("q", "B").await.unwrap().breaker.unwrap();
    let first_reopen = once.reopens_at_ms.unwrap();
    let first_cooldown = first_reopen - once.opened_at_ms.unwrap();

    let probe = next_job(&w, LEASE).await.expect("a probe");
    assert_eq!(breaker_state(&e, "B").await.as_deref(), Some("probing"));
    assert!(w.fail(&probe, "timeout again", None).await.unwrap());
    let twice = e.group("q", "B").await.unwrap().breaker.unwrap();
    assert_eq!((twice.state.as_str(), twice.opens), ("open", 2));
    assert_eq!(
        twice.opened_at_ms, once.opened_at_ms,
        "the same run of failures"
    );
    // The probe failed no earlier than the first cool-down ended, and the second cool-down is
    // twice the first: it ends at least two cool-downs later.
    let second_reopen = twice.reopens_at_ms.unwrap();
    assert!(
        second_reopen - first_reopen >= 2 * first_cooldown,
        "{first_reopen} then {second_reopen}"
    );
    let failed_at: i64 = redis::cmd("HGET")
        .arg(format!("{}gb:B", e.base("q")))
        .arg("failed_at")
        .query_async(
            &mut redis::Client::open(e.url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(second_reopen - failed_at, 2 * first_cooldown);
    assert!(claim(&w, 10).await.is_empty(), "open again");

    // The next probe succeeds: closed, and the rest flows.
    let probe = next_job(&w, LEASE).await.expect("a second probe");
    ack(&w, &probe).await;
    assert_eq!(breaker_state(&e, "B").await, None);
    assert_eq!(claim(&w, 10).await.len(), 1);
}

#[tokio::test]
async fn a_success_ends_the_run_of_failures() {
    let e = engine().await;
    let w = worker(&e, breaker(3, Duration::from_secs(3600)));
    let jobs: Vec<_> = (1..=7).map(|i| grouped(&format!("c{i}"), "C")).collect();
    e.enqueue(&jobs).await.unwrap();
    let batch = claim(&w, 3).await;
    assert!(w.fail(&batch[0], "no", None).await.unwrap());
    assert!(w.fail(&batch[1], "no", None).await.unwrap());
    ack(&w, &batch[2]).await;
    assert_eq!(breaker_state(&e, "C").await, None, "the success reset it");

    let batch = claim(&w, 2).await;
    assert!(w.fail(&batch[0], "no", None).await.unwrap());
    assert!(w.fail(&batch[1], "no", None).await.unwrap());
    let status = e.group("q", "C").await.unwrap().breaker.unwrap();
    assert_eq!((status.state.as_str(), status.failures), ("closed", 2));
    let third = claim(&w, 1).await;
    assert_eq!(third.len(), 1, "two failures in a row are not three");
    assert!(w.fail(&third[0], "no", Some(Duration::ZERO)).await.unwrap());
    assert_eq!(breaker_state(&e, "C").await.as_deref(), Some("open"));
    assert!(claim(&w, 10).await.is_empty());
}

#[tokio::test]
async fn closing_a_breaker_by_hand_lets_jobs_run_at_once() {
    let e = engine().await;
    let w = worker(&e, breaker(1, Duration::from_secs(3600)));
    e.enqueue(&[grouped("h1", "H"), grouped("h2", "H"), grouped("h3", "H")])
        .await
        .unwrap();
    let first = claim(&w, 1).await.remove(0);
    assert!(w.fail(&first, "down", None).await.unwrap());
    assert!(claim(&w, 10).await.is_empty(), "open for an hour");
    assert!(e.close_breaker("q", "H").await.unwrap());
    assert_eq!(breaker_state(&e, "H").await, None);
    assert_eq!(ids(&claim(&w, 10).await), ["h2", "h3"]);
    assert!(
        !e.close_breaker("q", "H").await.unwrap(),
        "nothing to close"
    );
    assert!(!e.close_breaker("q", "never-seen").await.unwrap());
}

#[tokio::test]
async fn closing_a_breaker_while_it_probes_lets_the_group_run_at_once() {
    let e = engine().await;
    let w = worker(
        &e,
        GroupLimits {
            concurrency: Some(2),
            ..breaker(1, Duration::from_millis(200))
        },
    );
    let jobs: Vec<_> = (1..=4).map(|i| grouped(&format!("p{i}"), "P")).collect();
    e.enqueue(&jobs).await.unwrap();
    let first = claim(&w, 1).await.remove(0);
    assert!(w.fail(&first, "down", None).await.unwrap());
    let probe = next_job(&w, LEASE).await.expect("a probe");
    assert!(claim(&w, 10).await.is_empty(), "the probe runs alone");
    assert_eq!(e.group("q", "P").await.unwrap().state, "held");

    assert!(e.close_breaker("q", "P").await.unwrap());
    let at_once = claim(&w, 10).await;
    assert_eq!(
        at_once.len(),
        1,
        "up to the cap of 2 with the probe still running"
    );
    ack(&w, &probe).await;
    assert_eq!(claim(&w, 10).await.len(), 1);
}

#[tokio::test]
async fn closing_a_breaker_keeps_an_ordered_groups_retry_waiting() {
    let e = engine().await;
    let w = worker(&e, breaker(1, Duration::from_millis(200)));
    e.enqueue(&[ordered("o1", "O", 5), ordered("o2", "O", 5)])
        .await
        .unwrap();
    let head = claim(&w, 1).await.remove(0);
    assert!(
        w.fail(&head, "retry in an hour", Some(Duration::from_secs(3600)))
            .await
            .unwrap()
    );
    assert_eq!(breaker_state(&e, "O").await.as_deref(), Some("open"));
    assert!(e.close_breaker("q", "O").await.unwrap());
    // The breaker is closed, but the head's retry is not due for an hour, and nothing may
    // overtake it.
    assert!(claim(&w, 10).await.is_empty());
    let status = e.group("q", "O").await.unwrap();
    assert_eq!(status.state, "waiting");
    let hour_from_now = chrono::Utc::now().timestamp_millis() + 3_000_000;
    assert!(status.waiting_until_ms.unwrap() > hour_from_now);
}

#[tokio::test]
async fn closing_a_breaker_runs_a_promoted_ordered_job_at_once() {
    let e = engine().await;
    let w = worker(&e, breaker(1, Duration::from_secs(3600)));
    let later = Duration::from_secs(3600);
    e.enqueue(&[
        ordered("first", "O", 5).delay(later),
        ordered("second", "O", 5).delay(later),
    ])
    .await
    .unwrap();
    // "second" is promoted and started by a worker that dies; meanwhile "first" is promoted
    // and takes its place in front.
    assert!(e.promote("q", "second").await.unwrap());
    let dying = w
        .claim("q", "dying", 1, Duration::from_millis(300))
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(dying.id, "second");
    assert!(e.promote("q", "first").await.unwrap());
    let first = next_job(&w, LEASE).await.expect("the lease expires");
    assert_eq!(first.id, "first");
    // "first" fails for good and opens the breaker; "second" is next, started once already,
    // but waits for no retry: closing the breaker lets it run at once, not an hour later.
    assert!(w.fail(&first, "gone", None).await.unwrap());
    assert!(claim(&w, 10).await.is_empty());
    assert!(e.close_breaker("q", "O").await.unwrap());
    let next = claim(&w, 10).await;
    assert_eq!(ids(&next), ["second"]);
    assert_eq!(next[0].attempt, 2);
}

#[tokio::test]
async fn an_expired_lease_is_not_the_groups_failure() {
    let e = engine().await;
    let w = worker(&e, breaker(1, Duration::from_secs(3600)));
    e.enqueue(&[grouped("k1", "K")]).await.unwrap();
    let dying = w
        .claim("q", "dying", 1, Duration::from_millis(300))
        .await
        .unwrap()
        .jobs
        .remove(0);
    let again = next_job(&w, LEASE).await.expect("the lease expires");
    assert_eq!((again.id.as_str(), again.attempt), (dying.id.as_str(), 2));
    assert_eq!(breaker_state(&e, "K").await, None);
    assert_eq!(e.counts("q").await.unwrap().open_breakers, 0);
}

#[tokio::test]
async fn grouped_waiting_jobs_can_be_cancelled_deleted_and_inspected() {
    let e = engine().await;
    e.enqueue(&[
        grouped("a1", "A"),
        grouped("a2", "A"),
        grouped("a3", "A"),
        job("q", "plain", 5),
    ])
    .await
    .unwrap();
    let counts = e.counts("q").await.unwrap();
    assert_eq!(
        (
            counts.waiting,
            counts.waiting_in_groups,
            counts.waiting_by_priority[5]
        ),
        (4, 3, 1)
    );
    let detail = e.job("q", "a1").await.unwrap().unwrap();
    assert_eq!(detail.state, "ready");
    assert_eq!(detail.group.as_deref(), Some("A"));
    assert!(!detail.ordered);
    let page = e.group_jobs("q", "A", 0, 10).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.jobs[0].id, "a1");

    assert_eq!(
        e.cancel("q", "a1", "not wanted").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(e.job("q", "a1").await.unwrap().unwrap().state, "cancelled");
    assert!(e.delete("q", "a2").await.unwrap());
    assert!(e.job("q", "a2").await.unwrap().is_none());

    let counts = e.counts("q").await.unwrap();
    assert_eq!(
        (counts.waiting, counts.waiting_in_groups, counts.cancelled),
        (2, 1, 1)
    );
    let overview = e.groups("q", 10).await.unwrap();
    assert_eq!((overview.waiting, overview.groups_with_backlog), (1, 1));
    assert_eq!(overview.top[0].waiting, 1);
    let mut rest: Vec<String> = claim(&e, 10).await.into_iter().map(|j| j.id).collect();
    rest.sort();
    assert_eq!(rest, ["a3", "plain"]);

    // The last one gone, the group is idle and leaves the overview.
    let overview = e.groups("q", 10).await.unwrap();
    assert_eq!((overview.waiting, overview.groups_with_backlog), (0, 0));
    assert!(overview.top.is_empty());
    let status = e.group("q", "A").await.unwrap();
    assert_eq!((status.state.as_str(), status.running), ("idle", 1));
}

#[tokio::test]
async fn the_groups_overview_shows_the_largest_backlogs_and_sums_the_rest() {
    let e = engine().await;
    for (group, size) in [("g1", 1), ("g5", 5), ("g3", 3), ("g4", 4), ("g2", 2)] {
        let jobs: Vec<_> = (0..size)
            .map(|i| grouped(&format!("{group}-{i}"), group))
            .collect();
        e.enqueue(&jobs).await.unwrap();
    }
    let overview = e.groups("q", 2).await.unwrap();
    let top: Vec<(&str, u64)> = overview
        .top
        .iter()
        .map(|g| (g.key.as_str(), g.waiting))
        .collect();
    assert_eq!(top, [("g5", 5), ("g4", 4)]);
    assert_eq!(overview.others_waiting, 6);
    assert_eq!((overview.waiting, overview.groups_with_backlog), (15, 5));
    assert!(overview.top.iter().all(|g| g.state == "ready"));
    assert!(overview.open_breakers.is_empty());
}

#[tokio::test]
async fn a_group_key_must_be_1_to_200_bytes() {
    let e = engine().await;
    for bad in [String::new(), "k".repeat(201), "é".repeat(101)] {
        let refused = e.enqueue(&[grouped("x", &bad)]).await;
        assert!(refused.is_err(), "a key of {} bytes", bad.len());
    }
    // A batch with one bad key adds nothing.
    let mixed = e
        .enqueue(&[grouped("fine", "ok"), grouped("bad", "")])
        .await;
    assert!(mixed.is_err());
    assert!(!e.exists("q", "fine").await.unwrap());
    assert_eq!(
        e.enqueue(&[grouped("longest", &"k".repeat(200))])
            .await
            .unwrap(),
        [true]
    );
}
