//! Cancellation, progress, results and event streams against the real Redis: a waiting,
//! delayed or backing-off job is cancelled at once; a running one is signalled and ends
//! cancelled however its attempt ends (failure, expired lease, release at shutdown); progress
//! and results are written only under the current lease; a job enqueued with events on keeps a
//! resumable stream of its life.

use std::time::Duration;

use orderly_queue::{CancelOutcome, JobSpec, JobState, RetryPolicy};

use crate::helpers::{engine, job};

const LEASE: Duration = Duration::from_secs(30);

async fn state_of(e: &orderly_queue::QueueEngine, id: &str) -> Option<String> {
    e.job("q", id).await.unwrap().map(|detail| detail.state)
}

#[tokio::test]
async fn waiting_delayed_and_backing_off_jobs_are_cancelled_at_once() {
    let e = engine().await;
    e.enqueue(&[
        job("q", "backing-off", 5),
        job("q", "delayed", 5).delay(Duration::from_secs(3600)),
        job("q", "waiting", 5),
    ])
    .await
    .unwrap();
    // The first job runs, fails, and waits an hour for its retry.
    let claimed = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!(claimed.id, "backing-off");
    assert!(
        e.fail(&claimed, "boom", Some(Duration::from_secs(3600)))
            .await
            .unwrap()
    );

    for id in ["backing-off", "delayed", "waiting"] {
        let outcome = e.cancel("q", id, "not wanted").await.unwrap();
        assert_eq!(outcome, CancelOutcome::Cancelled, "{id}");
        assert_eq!(state_of(&e, id).await.as_deref(), Some("cancelled"), "{id}");
    }
    let detail = e.job("q", "delayed").await.unwrap().unwrap();
    assert_eq!(detail.cancel_reason.as_deref(), Some("not wanted"));
    assert!(detail.finished_at_ms.is_some());

    // Nothing cancelled is ever claimed, and a second cancel changes nothing.
    assert!(e.claim("q", "w1", 10, LEASE).await.unwrap().jobs.is_empty());
    assert_eq!(
        e.cancel("q", "delayed", "again").await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    assert_eq!(
        e.cancel("q", "no-such-job", "x").await.unwrap(),
        CancelOutcome::NotFound
    );
    let counts = e.counts("q").await.unwrap();
    assert_eq!(
        (counts.cancelled, counts.waiting, counts.scheduled),
        (3, 0, 0)
    );
    let listed = e.list("q", JobState::Cancelled, 0, 10).await.unwrap();
    assert_eq!(listed.total, 3);
}

#[tokio::test]
async fn a_running_job_is_signalled_and_ends_cancelled_however_its_attempt_ends() {
    let e = engine().await;
    e.enqueue(&[
        job("q", "fails", 5),
        job("q", "expires", 5),
        job("q", "released", 5),
        job("q", "completes", 5),
    ])
    .await
    .unwrap();
    let claimed = e
        .claim("q", "w1", 4, Duration::from_millis(300))
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 4);
    for job in &claimed {
        assert_eq!(
            e.cancel("q", &job.id, "stop").await.unwrap(),
            CancelOutcome::Signalled
        );
    }
    // What a worker polls: every job asked to stop that still runs.
    let mut asked = e.cancelling("q").await.unwrap();
    asked.sort();
    assert_eq!(asked, ["completes", "expires", "fails", "released"]);
    let by_id = |id: &str| claimed.iter().find(|j| j.id == id).unwrap().clone();

    // A retryable failure of a job asked to stop is not retried.
    assert!(
        e.fail(
            &by_id("fails"),
            "interrupted",
            Some(Duration::from_millis(1))
        )
        .await
        .unwrap()
    );
    // Released at shutdown: not put back.
    assert_eq!(
        e.release("q", &[("released".to_owned(), by_id("released").lease)])
            .await
            .unwrap(),
        0
    );
    // A handler that finished anyway completes: the work is done.
    assert_eq!(
        e.ack("q", &[("completes".to_owned(), by_id("completes").lease)])
            .await
            .unwrap(),
        [true]
    );
    // Its worker died: the expired lease ends it cancelled, not retried.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(e.claim("q", "w2", 10, LEASE).await.unwrap().jobs.is_empty());

    for (id, state) in [
        ("fails", "cancelled"),
        ("released", "cancelled"),
        ("completes", "completed"),
        ("expires", "cancelled"),
    ] {
        assert_eq!(state_of(&e, id).await.as_deref(), Some(state), "{id}");
    }
    assert!(
        e.cancelling("q").await.unwrap().is_empty(),
        "finished jobs leave the set"
    );
}

#[tokio::test]
async fn a_handler_that_stops_on_its_own_ends_its_job_cancelled() {
    let e = engine().await;
    e.enqueue(&[job("q", "moot", 5)]).await.unwrap();
    let claimed = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    assert!(e.cancelled(&claimed, "the order is gone").await.unwrap());
    let detail = e.job("q", "moot").await.unwrap().unwrap();
    assert_eq!(detail.state, "cancelled");
    assert_eq!(detail.cancel_reason.as_deref(), Some("the order is gone"));
    assert!(
        !e.cancelled(&claimed, "twice").await.unwrap(),
        "the lease is gone"
    );
}

#[tokio::test]
async fn cancelled_jobs_can_be_retried_purged_and_are_trimmed_with_dead_ones() {
    let e = engine().await;
    e.enqueue(&[job("q", "a", 5), job("q", "b", 5), job("q", "c", 5)])
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        e.cancel("q", id, "x").await.unwrap();
    }
    assert!(e.retry_cancelled("q", "a").await.unwrap());
    let claimed = e.claim("q", "w1", 10, LEASE).await.unwrap().jobs;
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id.as_str(), claimed[0].attempt), ("a", 1));
    assert!(
        e.job("q", "a")
            .await
            .unwrap()
            .unwrap()
            .cancel_reason
            .is_none()
    );

    // Retention counts from when they were cancelled.
    assert_eq!(e.trim_dead("q", Duration::from_secs(60)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(e.trim_dead("q", Duration::from_millis(1)).await.unwrap(), 2);
    assert!(e.job("q", "b").await.unwrap().is_none());

    e.enqueue(&[job("q", "d", 5)]).await.unwrap();
    e.cancel("q", "d", "x").await.unwrap();
    assert_eq!(e.purge_cancelled("q").await.unwrap(), 1);
    assert_eq!(e.counts("q").await.unwrap().cancelled, 0);
}

#[tokio::test]
async fn events_tell_a_jobs_life_in_order_and_resume_after_any_of_them() {
    let e = engine().await;
    let spec = |id: &str| {
        JobSpec::new("q", "test.job", serde_json::json!({}))
            .with_id(id)
            .with_retry(RetryPolicy::schedule(&[Duration::ZERO]))
            .with_events()
    };
    e.enqueue(&[spec("watched"), job("q", "unwatched", 9)])
        .await
        .unwrap();

    // First attempt: progress, then a failure that is retried at once.
    let first = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!(first.id, "watched");
    let progress = r#"{"fraction":0.5,"note":"half"}"#;
    assert!(
        e.annotate("q", "watched", first.lease, "progress", progress)
            .await
            .unwrap()
    );
    assert!(e.fail(&first, "flaky", Some(Duration::ZERO)).await.unwrap());
    // The first attempt's lease is stale now: it can write nothing more.
    assert!(
        !e.annotate("q", "watched", first.lease, "progress", progress)
            .await
            .unwrap()
    );
    let second = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    assert_eq!((second.id.as_str(), second.attempt), ("watched", 2));
    assert!(
        e.annotate("q", "watched", second.lease, "result", r#"{"rows":7}"#)
            .await
            .unwrap()
    );
    assert_eq!(
        e.ack("q", &[("watched".into(), second.lease)])
            .await
            .unwrap(),
        [true]
    );

    let events = e.job_events("q", "watched", None, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|ev| ev.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "started",
            "progress",
            "retrying",
            "started",
            "completed"
        ]
    );
    assert_eq!(events[2].data["note"], "half");
    assert_eq!(events[3].data["error"], "flaky");
    assert_eq!(events[4].data["attempt"], 2);
    assert_eq!(events[5].data["result"]["rows"], 7);
    assert!(events[5].is_final() && !events[4].is_final());
    let detail = e.job("q", "watched").await.unwrap().unwrap();
    assert_eq!(detail.progress.unwrap()["note"], "half");
    assert_eq!(detail.result.unwrap()["rows"], 7);
    assert!(detail.events);

    // Resuming after any entry gives exactly what followed it.
    let after_second = e
        .job_events("q", "watched", Some(&events[1].id), 100)
        .await
        .unwrap();
    assert_eq!(after_second, events[2..].to_vec());
    let after_last = e
        .job_events("q", "watched", Some(&events[5].id), 100)
        .await
        .unwrap();
    assert!(after_last.is_empty());

    // Jobs enqueued without events keep no stream.
    let unwatched = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    e.ack("q", &[(unwatched.id.clone(), unwatched.lease)])
        .await
        .unwrap();
    assert!(
        e.job_events("q", "unwatched", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!e.job("q", "unwatched").await.unwrap().unwrap().events);
}

#[tokio::test]
async fn a_cancelled_watched_job_ends_its_stream_with_the_reason() {
    let e = engine().await;
    let spec = JobSpec::new("q", "test.job", serde_json::json!({}))
        .with_id("r")
        .with_events();
    e.enqueue(&[spec]).await.unwrap();
    let running = e.claim("q", "w1", 1, LEASE).await.unwrap().jobs.remove(0);
    e.cancel("q", "r", "by its owner").await.unwrap();
    e.fail(&running, "stopped", None).await.unwrap();
    let kinds: Vec<(String, serde_json::Value)> = e
        .job_events("q", "r", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|ev| (ev.kind, ev.data))
        .collect();
    assert_eq!(kinds[2].0, "cancelling");
    assert_eq!(kinds[3].0, "cancelled");
    assert_eq!(kinds[3].1["reason"], "by its owner");
    assert_eq!(kinds.len(), 4);
}
