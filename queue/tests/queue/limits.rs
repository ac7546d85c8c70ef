//! Fleet-wide flow control against the real Redis: a rate limit holds the claims of several
//! workers together to its rate (jobs held back keep their attempts and the claim says when
//! the next token is due), and a concurrency cap counts every worker's leases, frees a slot on
//! ack and on an expired lease, and wakes a waiting worker when a slot frees.

use std::time::{Duration, Instant};

use orderly_queue::{QueueEngine, QueueLimits, RateLimit, Retention};

use crate::helpers::{TestEngine, engine, job};

const LEASE: Duration = Duration::from_secs(30);

/// Another engine (another process, as far as Redis can tell) on `e`'s prefix with `limits` on
/// queue `q`.
fn worker(e: &TestEngine, limits: QueueLimits) -> QueueEngine {
    QueueEngine::new(
        orderly_queue::testing::connection(e.url.as_str()),
        &e.prefix,
        Retention::default(),
    )
    .with_limits([("q".to_owned(), limits)])
}

async fn fill(e: &TestEngine, n: usize) {
    let jobs: Vec<_> = (0..n).map(|i| job("q", &format!("j{i:05}"), 5)).collect();
    e.enqueue(&jobs).await.unwrap();
}

#[tokio::test]
async fn a_rate_limit_holds_several_workers_together_to_its_rate() {
    let e = engine().await;
    fill(&e, 1000).await;
    let limits = QueueLimits {
        rate: Some(RateLimit::parse("50/s").unwrap()),
        ..QueueLimits::default()
    };
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let engine = worker(&e, limits);
            tokio::spawn(async move {
                let mut claimed = 0usize;
                let mut told_to_wait = 0usize;
                while started.elapsed() < run_for {
                    let claim = engine
                        .claim("q", &format!("w{w}"), 64, LEASE)
                        .await
                        .unwrap();
                    let leases: Vec<_> =
                        claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
                    claimed += leases.len();
                    if !leases.is_empty() {
                        engine.ack("q", &leases).await.unwrap();
                    }
                    if claim.rate_limited {
                        told_to_wait += 1;
                        let wait = claim.next_wake_in.expect("the next token's time");
                        assert!(
                            wait <= Duration::from_millis(21),
                            "one token is 20 ms: {wait:?}"
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
                (claimed, told_to_wait)
            })
        })
        .collect();
    let mut claimed = 0;
    let mut waits = 0;
    for handle in workers {
        let (c, w) = handle.await.unwrap();
        claimed += c;
        waits += w;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // 50/s for the run, plus the burst of 5 saved up at the start.
    let allowed = 50.0 * elapsed + 5.0;
    assert!(
        claimed as f64 <= allowed + 1.0 && claimed as f64 >= allowed * 0.9,
        "claimed {claimed} in {elapsed:.2} s at 50/s (allowed {allowed:.0})"
    );
    assert!(waits > 0);
    // Jobs held back are untouched: still waiting, never attempted.
    let counts = e.counts("q").await.unwrap();
    assert_eq!(counts.waiting as usize, 1000 - claimed);
    let next = e
        .list("q", orderly_queue::JobState::Ready, 0, 1)
        .await
        .unwrap();
    assert_eq!(next.jobs[0].attempts, 0);
}

#[tokio::test]
async fn a_concurrency_cap_counts_every_workers_leases() {
    let e = engine().await;
    fill(&e, 5).await;
    let limits = QueueLimits {
        concurrency: Some(2),
        ..QueueLimits::default()
    };
    let (a, b) = (worker(&e, limits), worker(&e, limits));
    let first = a.claim("q", "a", 5, LEASE).await.unwrap();
    assert_eq!(first.jobs.len(), 2, "capped at 2 running");
    assert!(!first.rate_limited);
    assert!(b.claim("q", "b", 5, LEASE).await.unwrap().jobs.is_empty());

    // An ack frees a slot for any worker, and wakes one that waits (the wake-ups the enqueue
    // left are cleared first, so only the ack's can answer).
    let mut redis = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{}marker", e.base("q")))
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut waiting = e.blocking_connection().await.unwrap();
    assert!(
        !b.wait_for_work(&mut waiting, "q", Duration::from_millis(50))
            .await
            .unwrap()
    );
    let done = &first.jobs[0];
    assert_eq!(
        a.ack("q", &[(done.id.clone(), done.lease)]).await.unwrap(),
        [true]
    );
    assert!(
        b.wait_for_work(&mut waiting, "q", Duration::from_millis(500))
            .await
            .unwrap(),
        "the ack woke a waiting worker"
    );
    let second = b.claim("q", "b", 5, LEASE).await.unwrap();
    assert_eq!(second.jobs.len(), 1);

    // A worker that dies keeps its slot only until its lease expires.
    let short = b.claim("q", "b", 5, LEASE).await.unwrap();
    assert!(short.jobs.is_empty(), "still 2 running");
    let (id, lease) = (second.jobs[0].id.clone(), second.jobs[0].lease);
    let _: () = redis::cmd("ZADD")
        .arg(e.state_key("q", orderly_queue::JobState::Active))
        .arg("XX")
        .arg(0)
        .arg(&id)
        .query_async(&mut redis)
        .await
        .unwrap();
    let after_expiry = a.claim("q", "a", 5, LEASE).await.unwrap();
    assert_eq!(
        after_expiry.jobs.len(),
        1,
        "the dead worker's slot came back"
    );
    assert!(!b.ack("q", &[(id, lease)]).await.unwrap()[0]);

    // A worker without the cap (another configuration) is not held by it: limits are per
    // process configuration, so every worker must run with the same.
    assert_eq!(e.claim("q", "free", 5, LEASE).await.unwrap().jobs.len(), 2);
}

#[tokio::test]
async fn a_slow_rate_answers_when_its_next_token_is_due() {
    let e = engine().await;
    fill(&e, 3).await;
    let w = worker(
        &e,
        QueueLimits {
            rate: Some(RateLimit::parse("60/m").unwrap()),
            ..QueueLimits::default()
        },
    );
    let first = w.claim("q", "w", 3, LEASE).await.unwrap();
    assert_eq!(first.jobs.len(), 1, "a burst of one");
    assert!(first.rate_limited);
    let wait = first.next_wake_in.unwrap();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
        "{wait:?}"
    );
    tokio::time::sleep(wait).await;
    let second = w.claim("q", "w", 3, LEASE).await.unwrap();
    assert_eq!(second.jobs.len(), 1, "one more token after a second");
}
