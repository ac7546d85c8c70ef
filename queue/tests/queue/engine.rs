//! The engine's guarantees, one test each: priority and FIFO, delays, leases, retries, dead
//! jobs, idempotent enqueue, bounded work on a 100,000-job backlog, batching, retention,
//! inspection, pause, and surviving a Redis restart.

use std::time::Duration;

use orderly_queue::{JobError, JobState, Retention, RetryPolicy, WorkerInfo};

use crate::helpers::{PrivateRedis, engine, engine_at, engine_with, eventually, job};

const LEASE: Duration = Duration::from_secs(30);

/// Claims one job of queue "q", polling for up to five seconds.
async fn claim_one_eventually(
    e: &orderly_queue::QueueEngine,
    worker: &str,
) -> Option<orderly_queue::ClaimedJob> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Some(job) = e
            .claim("q", worker, 1, LEASE)
            .await
            .unwrap()
            .jobs
            .into_iter()
            .next()
        {
            return Some(job);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn ids(claim: &orderly_queue::engine::Claim) -> Vec<String> {
    claim.jobs.iter().map(|j| j.id.clone()).collect()
}

#[tokio::test]
async fn strict_priority_then_fifo() {
    let e = engine().await;
    // Enqueued interleaved: low (9), high (0), normal (5).
    let specs = vec![
        job("q", "low-1", 9),
        job("q", "high-1", 0),
        job("q", "normal-1", 5),
        job("q", "low-2", 9),
        job("q", "high-2", 0),
        job("q", "normal-2", 5),
    ];
    for spec in specs {
        // One at a time, so arrival order is unambiguous.
        e.enqueue(&[spec]).await.unwrap();
    }
    let claim = e.claim("q", "w", 10, LEASE).await.unwrap();
    assert_eq!(
        ids(&claim),
        ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]
    );
}

#[tokio::test]
async fn delayed_jobs_wait_for_their_time() {
    let e = engine().await;
    let delayed = job("q", "later", 5).delay(Duration::from_millis(300));
    e.enqueue(&[delayed, job("q", "now", 5)]).await.unwrap();
    let first = e.claim("q", "w", 10, LEASE).await.unwrap();
    assert_eq!(ids(&first), ["now"]);
    // The engine says when to look again: no later than the delayed job's due time.
    let wake = first.next_wake_in.expect("a scheduled job exists");
    assert!(wake <= Duration::from_millis(300), "wake in {wake:?}");
    let counts = e.counts("q").await.unwrap();
    assert_eq!(counts.scheduled, 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            ids(&e.claim("q", "w", 10, LEASE).await.unwrap()) == ["later"]
        })
        .await
    );
}

#[tokio::test]
async fn a_delay_is_honoured_to_the_millisecond_scale() {
    let e = engine().await;
    let started = std::time::Instant::now();
    e.enqueue(&[job("q", "d", 5).delay(Duration::from_millis(150))])
        .await
        .unwrap();
    // Not claimable before its time...
    let early = e.claim("q", "w", 1, LEASE).await.unwrap();
    if started.elapsed() < Duration::from_millis(140) {
        assert!(
            early.jobs.is_empty(),
            "claimed {:?} after {:?}",
            ids(&early),
            started.elapsed()
        );
    }
    // ...and claimable right after it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            !e.claim("q", "w", 1, LEASE).await.unwrap().jobs.is_empty()
        })
        .await
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn enqueue_is_idempotent_by_id() {
    let e = engine().await;
    let added = e
        .enqueue(&[
            job("q", "same", 5),
            job("q", "same", 1),
            job("q", "other", 5),
        ])
        .await
        .unwrap();
    assert_eq!(added, [true, false, true]);
    assert_eq!(e.enqueue(&[job("q", "same", 5)]).await.unwrap(), [false]);
    let counts = e.counts("q").await.unwrap();
    assert_eq!(counts.waiting, 2);
    // The first spec won: priority 5, not 1.
    let detail = e.job("q", "same").await.unwrap().unwrap();
    assert_eq!(detail.priority, 5);
    // Even once it has run, a re-push (an outbox relay after the delete of a pushed row was lost) adds nothing.
    let claim = e.claim("q", "w", 10, LEASE).await.unwrap();
    let leases: Vec<_> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    e.ack("q", &leases).await.unwrap();
    assert_eq!(e.enqueue(&[job("q", "same", 5)]).await.unwrap(), [false]);
    assert_eq!(e.counts("q").await.unwrap().waiting, 0);
}

#[tokio::test]
async fn claims_batch_up_to_the_requested_size() {
    let e = engine().await;
    let specs: Vec<_> = (0..120).map(|i| job("q", &format!("j{i:03}"), 5)).collect();
    e.enqueue(&specs).await.unwrap();
    let first = e.claim("q", "w", 50, LEASE).await.unwrap();
    assert_eq!(first.jobs.len(), 50);
    assert_eq!(first.jobs[0].id, "j000");
    assert_eq!(first.jobs[49].id, "j049");
    assert!(first.jobs.iter().all(|j| j.attempt == 1));
    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.active), (70, 50));
}

/// The wake-ups waiting in the queue's list (one per job enqueued).
async fn wake_ups(e: &crate::helpers::TestEngine) -> i64 {
    let mut redis = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("LLEN")
        .arg(format!("{}marker", e.base("q")))
        .query_async(&mut redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_claim_that_drains_the_queue_clears_its_wake_ups_and_new_work_brings_its_own() {
    let e = engine().await;
    let specs: Vec<_> = (0..5).map(|i| job("q", &format!("j{i}"), 5)).collect();
    e.enqueue(&specs).await.unwrap();
    assert_eq!(wake_ups(&e).await, 5, "one wake-up per job enqueued");

    // Jobs are left: every wake-up stays, so other workers still come for them.
    assert_eq!(e.claim("q", "a", 2, LEASE).await.unwrap().jobs.len(), 2);
    assert_eq!(wake_ups(&e).await, 5);

    // The rest taken: the wake-ups would only send workers to claim nothing.
    assert_eq!(e.claim("q", "b", 10, LEASE).await.unwrap().jobs.len(), 3);
    assert_eq!(wake_ups(&e).await, 0);
    let mut waiting = e.blocking_connection().await.unwrap();
    assert!(
        !e.wait_for_work(&mut waiting, "q", Duration::from_millis(50))
            .await
            .unwrap(),
        "nothing wakes a worker while there is nothing to claim"
    );

    // Work enqueued after the draining claim wakes a waiting worker.
    let (woken, _) = tokio::join!(
        e.wait_for_work(&mut waiting, "q", Duration::from_secs(5)),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            e.enqueue(&[job("q", "later", 5)]).await.unwrap();
        }
    );
    assert!(woken.unwrap(), "new work woke the waiting worker");
    assert_eq!(ids(&e.claim("q", "b", 10, LEASE).await.unwrap()), ["later"]);
}

#[tokio::test]
async fn an_expired_lease_puts_the_job_back_and_counts_the_attempt() {
    let e = engine().await;
    e.enqueue(&[job("q", "x", 5)]).await.unwrap();
    let short = Duration::from_millis(100);
    let first = e.claim("q", "crashed-worker", 1, short).await.unwrap();
    assert_eq!(first.jobs[0].attempt, 1);
    let stale = first.jobs[0].clone();
    // The worker dies: no renewal. After the deadline another worker gets it, attempt 2.
    let second = claim_one_eventually(&e, "healthy-worker")
        .await
        .expect("job came back");
    assert_eq!(second.id, "x");
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease, stale.lease);
    let detail = e.job("q", "x").await.unwrap().unwrap();
    assert!(
        detail.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );
    assert_eq!(detail.worker.as_deref(), Some("healthy-worker"));

    // The old holder comes back: its ack and its failure are refused and change nothing.
    assert_eq!(
        e.ack("q", &[(stale.id.clone(), stale.lease)])
            .await
            .unwrap(),
        [false]
    );
    assert!(!e.fail(&stale, "late failure", None).await.unwrap());
    assert_eq!(e.counts("q").await.unwrap().active, 1);
    // The current holder acks fine.
    assert_eq!(
        e.ack("q", &[(second.id.clone(), second.lease)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(e.counts("q").await.unwrap().completed, 1);
}

#[tokio::test]
async fn an_expired_lease_on_the_last_attempt_makes_the_job_dead() {
    let e = engine().await;
    let spec = job("q", "fragile", 5).with_retry(RetryPolicy::once());
    e.enqueue(&[spec]).await.unwrap();
    e.claim("q", "w", 1, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            e.claim("q", "w", 1, LEASE).await.unwrap();
            e.counts("q").await.unwrap().dead == 1
        })
        .await
    );
}

#[tokio::test]
async fn renewal_keeps_a_lease_alive_and_reports_lost_ones() {
    let e = engine().await;
    e.enqueue(&[job("q", "long", 5), job("q", "lost", 5)])
        .await
        .unwrap();
    let lease = Duration::from_millis(300);
    let claim = e.claim("q", "w", 2, lease).await.unwrap();
    let long = claim.jobs.iter().find(|j| j.id == "long").unwrap().clone();
    let lost = claim.jobs.iter().find(|j| j.id == "lost").unwrap().clone();
    // Renew "long" several times over more than a lease length; "lost" is never renewed.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lost_ids = e
            .renew("q", &[(long.id.clone(), long.lease)], lease)
            .await
            .unwrap();
        assert!(lost_ids.is_empty(), "{lost_ids:?}");
    }
    // Meanwhile "lost" expired (no renewal) and went back to ready on the next claim.
    e.claim("q", "other", 0, lease).await.unwrap();
    let lost_ids = e
        .renew("q", &[(lost.id.clone(), lost.lease)], lease)
        .await
        .unwrap();
    assert_eq!(lost_ids, ["lost"]);
    assert_eq!(
        e.ack("q", &[(long.id.clone(), long.lease)]).await.unwrap(),
        [true]
    );
}

#[tokio::test]
async fn failures_retry_on_the_backoff_then_die_with_every_error_kept() {
    let e = engine().await;
    let policy = RetryPolicy::schedule(&[Duration::from_millis(100), Duration::from_millis(200)]);
    e.enqueue(&[job("q", "flaky", 5).with_retry(policy)])
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for attempt in 1..=3u32 {
        let claimed = claim_one_eventually(&e, "w")
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} never became claimable"));
        assert_eq!(claimed.attempt, attempt);
        attempts.push(std::time::Instant::now());
        let error = JobError::retry(format!("boom {attempt}"));
        let retry_in = claimed.next_retry(&error, 0.5);
        let state_after = e.fail(&claimed, error.message(), retry_in).await.unwrap();
        assert!(state_after);
        if attempt < 3 {
            assert_eq!(
                retry_in,
                Some(Duration::from_millis(100 * u64::from(attempt)))
            );
            assert_eq!(e.counts("q").await.unwrap().scheduled, 1);
        } else {
            assert_eq!(retry_in, None);
        }
    }
    // Each retry waited at least its backoff.
    assert!(attempts[1] - attempts[0] >= Duration::from_millis(100));
    assert!(attempts[2] - attempts[1] >= Duration::from_millis(200));
    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.scheduled, counts.waiting), (1, 0, 0));
    let detail = e.job("q", "flaky").await.unwrap().unwrap();
    assert_eq!(detail.state, "dead");
    assert_eq!(detail.attempts, 3);
    let errors: Vec<_> = detail
        .errors
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3"]);
    assert_eq!(detail.last_error.as_deref(), Some("boom 3"));
}

#[tokio::test]
async fn a_permanent_failure_is_dead_at_once() {
    let e = engine().await;
    e.enqueue(&[job("q", "bad", 5)]).await.unwrap();
    let claimed = e.claim("q", "w", 1, LEASE).await.unwrap().jobs.remove(0);
    let error = JobError::permanent("550 no such user");
    assert_eq!(claimed.next_retry(&error, 0.5), None);
    e.fail(&claimed, error.message(), None).await.unwrap();
    assert_eq!(e.counts("q").await.unwrap().dead, 1);
}

#[tokio::test]
async fn dead_jobs_can_be_retried_and_deleted() {
    let e = engine().await;
    e.enqueue(&[job("q", "a", 5), job("q", "b", 5), job("q", "c", 5)])
        .await
        .unwrap();
    for claimed in e.claim("q", "w", 3, LEASE).await.unwrap().jobs {
        e.fail(&claimed, "nope", None).await.unwrap();
    }
    assert_eq!(e.counts("q").await.unwrap().dead, 3);
    // One retried: back to ready with fresh attempts.
    assert!(e.retry_dead("q", "a").await.unwrap());
    assert!(!e.retry_dead("q", "a").await.unwrap(), "not dead any more");
    let again = e.claim("q", "w", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), ("a", 1));
    // One deleted: gone everywhere.
    assert!(e.delete("q", "b").await.unwrap());
    assert!(e.job("q", "b").await.unwrap().is_none());
    // The rest retried in bulk.
    assert_eq!(e.retry_all_dead("q").await.unwrap(), 1);
    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.waiting), (0, 1));
}

#[tokio::test]
async fn dead_jobs_past_their_retention_are_trimmed_and_no_others() {
    let e = engine().await;
    e.enqueue(&[
        job("q", "old", 5),
        job("q", "recent", 5),
        job("q", "new", 5),
    ])
    .await
    .unwrap();
    for claimed in e.claim("q", "w", 3, LEASE).await.unwrap().jobs {
        e.fail(&claimed, "nope", None).await.unwrap();
    }
    // Backdate two deaths: 40 days and 10 days ago.
    let mut redis = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let day_ms = 86_400_000_i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (id, days) in [("old", 40), ("recent", 10)] {
        let _: () = redis::cmd("ZADD")
            .arg(e.state_key("q", JobState::Dead))
            .arg("XX")
            .arg(now_ms - days * day_ms)
            .arg(id)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let trimmed = e
        .trim_dead("q", Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(trimmed, 1);
    assert!(
        e.job("q", "old").await.unwrap().is_none(),
        "hash and errors gone"
    );
    assert!(e.job("q", "recent").await.unwrap().is_some());
    assert!(e.job("q", "new").await.unwrap().is_some());
    assert_eq!(e.counts("q").await.unwrap().dead, 2);
}

#[tokio::test]
async fn scheduled_jobs_can_be_promoted_to_now() {
    let e = engine().await;
    e.enqueue(&[job("q", "tomorrow", 5).delay(Duration::from_secs(86_400))])
        .await
        .unwrap();
    assert!(e.claim("q", "w", 1, LEASE).await.unwrap().jobs.is_empty());
    assert!(e.promote("q", "tomorrow").await.unwrap());
    assert_eq!(
        ids(&e.claim("q", "w", 1, LEASE).await.unwrap()),
        ["tomorrow"]
    );
}

#[tokio::test]
async fn a_paused_queue_is_not_claimed_until_resumed() {
    let e = engine().await;
    e.enqueue(&[job("q", "p", 5)]).await.unwrap();
    e.pause("q").await.unwrap();
    assert!(e.counts("q").await.unwrap().paused);
    assert!(e.claim("q", "w", 1, LEASE).await.unwrap().jobs.is_empty());
    e.resume("q").await.unwrap();
    assert_eq!(ids(&e.claim("q", "w", 1, LEASE).await.unwrap()), ["p"]);
}

#[tokio::test]
async fn released_jobs_go_back_without_counting_the_attempt() {
    let e = engine().await;
    e.enqueue(&[job("q", "r", 5)]).await.unwrap();
    let claimed = e.claim("q", "w", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!(
        e.release("q", &[(claimed.id.clone(), claimed.lease)])
            .await
            .unwrap(),
        1
    );
    let again = e.claim("q", "w", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!(again.attempt, 1);
    // The released lease is stale now.
    assert_eq!(
        e.ack("q", &[(claimed.id.clone(), claimed.lease)])
            .await
            .unwrap(),
        [false]
    );
}

#[tokio::test]
async fn completed_jobs_are_trimmed_to_the_retention_limits() {
    let e = engine_with(Retention {
        completed_keep: 5,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    let specs: Vec<_> = (0..12).map(|i| job("q", &format!("c{i:02}"), 5)).collect();
    e.enqueue(&specs).await.unwrap();
    let claim = e.claim("q", "w", 12, LEASE).await.unwrap();
    for claimed in claim.jobs {
        e.ack("q", &[(claimed.id.clone(), claimed.lease)])
            .await
            .unwrap();
    }
    let counts = e.counts("q").await.unwrap();
    assert_eq!(counts.completed, 5);
    // The oldest are gone entirely (hash and errors), the newest are kept.
    assert!(e.job("q", "c00").await.unwrap().is_none());
    assert!(e.job("q", "c11").await.unwrap().is_some());

    // Age limit: with a zero max age everything finished is trimmed on the next ack.
    let aged = engine_with(Retention {
        completed_keep: 1000,
        completed_max_age: Duration::ZERO,
    })
    .await;
    aged.enqueue(&[job("q", "old", 5), job("q", "new", 5)])
        .await
        .unwrap();
    let claim = aged.claim("q", "w", 2, LEASE).await.unwrap();
    aged.ack("q", &[(claim.jobs[0].id.clone(), claim.jobs[0].lease)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    aged.ack("q", &[(claim.jobs[1].id.clone(), claim.jobs[1].lease)])
        .await
        .unwrap();
    assert!(aged.job("q", "old").await.unwrap().is_none());
}

#[tokio::test]
async fn inspection_reports_counts_ages_throughput_lists_and_workers() {
    let e = engine().await;
    e.enqueue(&[
        job("q", "p0", 0),
        job("q", "p5a", 5),
        job("q", "p5b", 5),
        job("q", "p9", 9),
    ])
    .await
    .unwrap();
    e.enqueue(&[job("q", "sched", 5).delay(Duration::from_secs(3600))])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let counts = e.counts("q").await.unwrap();
    assert_eq!(counts.waiting, 4);
    assert_eq!(counts.waiting_by_priority[0], 1);
    assert_eq!(counts.waiting_by_priority[5], 2);
    assert_eq!(counts.waiting_by_priority[9], 1);
    assert_eq!(counts.scheduled, 1);
    assert!(
        counts.oldest_waiting_ms >= 20,
        "{}",
        counts.oldest_waiting_ms
    );

    let claim = e.claim("q", "w", 2, LEASE).await.unwrap();
    e.ack("q", &[(claim.jobs[0].id.clone(), claim.jobs[0].lease)])
        .await
        .unwrap();
    e.fail(&claim.jobs[1], "broken", None).await.unwrap();
    let minutes = e.throughput("q", 60).await.unwrap();
    assert_eq!(minutes.len(), 60);
    let total_completed: u64 = minutes.iter().map(|m| m.completed).sum();
    let total_failed: u64 = minutes.iter().map(|m| m.failed).sum();
    let total_enqueued: u64 = minutes.iter().map(|m| m.enqueued).sum();
    assert_eq!((total_completed, total_failed, total_enqueued), (1, 1, 5));

    let ready = e.list("q", JobState::Ready, 0, 10).await.unwrap();
    assert_eq!(ready.total, 2);
    assert_eq!(
        ready.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["p5b", "p9"]
    );
    let dead = e.list("q", JobState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.jobs[0].id, "p5a");
    assert_eq!(dead.jobs[0].last_error.as_deref(), Some("broken"));
    let page2 = e.list("q", JobState::Ready, 1, 1).await.unwrap();
    assert_eq!(
        page2.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["p9"]
    );

    let info = WorkerInfo {
        id: "host:1:abc".into(),
        host: "host".into(),
        pid: 1,
        queues: vec!["q".into()],
        concurrency: 8,
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        running: 3,
        last_heartbeat_ms: chrono::Utc::now().timestamp_millis(),
    };
    e.heartbeat(&info).await.unwrap();
    assert_eq!(e.workers().await.unwrap(), std::slice::from_ref(&info));
    e.deregister(&info.id).await.unwrap();
    assert!(e.workers().await.unwrap().is_empty());
}

#[tokio::test]
async fn purge_completed_empties_the_set() {
    let e = engine().await;
    let specs: Vec<_> = (0..30).map(|i| job("q", &format!("k{i}"), 5)).collect();
    e.enqueue(&specs).await.unwrap();
    let claim = e.claim("q", "w", 30, LEASE).await.unwrap();
    let leases: Vec<_> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    e.ack("q", &leases).await.unwrap();
    assert_eq!(e.purge_completed("q").await.unwrap(), 30);
    assert_eq!(e.counts("q").await.unwrap().completed, 0);
    assert!(e.job("q", "k0").await.unwrap().is_none());
}

/// A backlog of 100,000 due jobs (the size that makes the published apalis-redis fail) drains
/// completely: every script call touches a bounded number of keys.
#[tokio::test]
async fn a_backlog_of_100_000_due_jobs_drains() {
    let e = engine_with(Retention {
        completed_keep: 100,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    const N: usize = 100_000;
    // Half ready, half scheduled and already due, to exercise promotion in bounded steps too.
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(200);
    let specs: Vec<_> = (0..N)
        .map(|i| {
            let spec = job("q", &format!("b{i}"), (i % 10) as u8);
            if i % 2 == 0 { spec } else { spec.run_at(soon) }
        })
        .collect();
    for chunk in specs.chunks(5000) {
        e.enqueue(chunk).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut done = 0;
    let mut calls = 0;
    while done < N {
        let claim = e.claim("q", "w", 1000, LEASE).await.unwrap();
        calls += 1;
        assert!(calls < 1000, "drain did not progress");
        if claim.jobs.is_empty() {
            continue;
        }
        let leases: Vec<_> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
        let acked = e.ack("q", &leases).await.unwrap();
        assert!(acked.iter().all(|ok| *ok));
        done += leases.len();
    }
    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.scheduled, counts.active), (0, 0, 0));
    assert!(counts.completed <= 100);
}

/// A worker's connection to Redis is lost and comes back: the engine's calls fail while Redis
/// is down and work again afterwards on the same engine (no restart of the process needed).
#[tokio::test]
async fn calls_work_again_after_a_redis_restart() {
    let mut redis = PrivateRedis::start();
    let e = engine_at(&redis.url(), Retention::default()).await;
    e.enqueue(&[job("q", "before", 5)]).await.unwrap();
    redis.kill();
    assert!(e.enqueue(&[job("q", "during", 5)]).await.is_err());
    redis.restart();
    // Redis kept nothing (no persistence), as in a crash of a cache-only Redis.
    assert!(
        eventually(Duration::from_secs(10), || async {
            e.enqueue(&[job("q", "after", 5)]).await.is_ok()
        })
        .await,
        "engine did not reconnect"
    );
    assert_eq!(ids(&e.claim("q", "w", 10, LEASE).await.unwrap()), ["after"]);
}

/// A job's trace context goes in with it and comes back with every claim and in its details;
/// jobs without one, grouped or not, in the same batch, stay without.
#[tokio::test]
async fn a_trace_context_travels_with_its_job_and_only_with_it() {
    let e = engine().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = job("q", "traced", 5);
    traced.traceparent = Some(traceparent.to_owned());
    let grouped = job("q", "grouped", 5).in_group(orderly_queue::JobGroup::new("g"));
    let plain = job("q", "plain", 5);
    assert_eq!(
        e.enqueue(&[traced, grouped, plain]).await.unwrap(),
        [true, true, true]
    );
    let claim = e.claim("q", "w", 10, LEASE).await.unwrap();
    let by_id = |id: &str| claim.jobs.iter().find(|j| j.id == id).cloned().unwrap();
    assert_eq!(by_id("traced").traceparent.as_deref(), Some(traceparent));
    assert_eq!(by_id("grouped").traceparent, None);
    assert_eq!(by_id("plain").traceparent, None);
    assert_eq!(
        e.job("q", "traced")
            .await
            .unwrap()
            .unwrap()
            .traceparent
            .as_deref(),
        Some(traceparent)
    );
    assert_eq!(
        e.job("q", "plain").await.unwrap().unwrap().traceparent,
        None
    );

    // A retry runs in the same trace.
    let first = by_id("traced");
    e.fail(&first, "flaky", Some(Duration::ZERO)).await.unwrap();
    let again = claim_one_eventually(&e, "w").await.expect("retried");
    assert_eq!(again.id, "traced");
    assert_eq!(again.traceparent.as_deref(), Some(traceparent));
}
