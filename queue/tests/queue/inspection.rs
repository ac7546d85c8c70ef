//! What the dashboard reads beyond the state sets, against the real Redis: retries counted and
//! listed apart from first runs (and the index behind them kept clean), hourly rollups of the
//! outcome counts, run times per kind as workers write them, filtered lists that look at a
//! bounded number of jobs, and actions on many jobs by id.

use std::time::Duration;

use orderly_queue::{
    JobSpec, JobState,
    inspect::{JobFilter, JobList, SCAN_LIMIT},
    runtimes::RuntimeRecorder,
};
use redis::AsyncCommands;

use crate::helpers::{engine, eventually, job};

const LEASE: Duration = Duration::from_secs(30);

fn ids(jobs: &[orderly_queue::inspect::JobDetail]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

/// Claims the next job of `q` and fails it, to be retried after `retry_in`.
async fn fail_next(e: &orderly_queue::QueueEngine, error: &str, retry_in: Duration) -> String {
    let claim = e.claim("q", "w", 1, LEASE).await.unwrap();
    let job = claim.jobs.into_iter().next().expect("a job to claim");
    assert!(e.fail(&job, error, Some(retry_in)).await.unwrap());
    job.id
}

impl crate::helpers::TestEngine {
    /// A connection of its own to the engine's Redis, for reading keys directly.
    async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn retries_are_counted_and_listed_apart_from_first_runs() {
    let e = engine().await;
    // Two jobs fail once and wait an hour for their retry; one waits an hour for its first run.
    e.enqueue(&[job("q", "a", 5), job("q", "b", 5)])
        .await
        .unwrap();
    let first = fail_next(&e, "SMTP 451 try later", Duration::from_secs(3600)).await;
    let second = fail_next(&e, "SMTP 451 try later", Duration::from_secs(3601)).await;
    e.enqueue(&[job("q", "later", 5).delay(Duration::from_secs(3600))])
        .await
        .unwrap();

    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.scheduled, counts.retrying), (3, 2));
    let empty = JobFilter::default();
    let retries = e
        .scan_jobs("q", JobList::Retrying, &empty, 0, 25)
        .await
        .unwrap();
    assert_eq!(ids(&retries.jobs), [first.as_str(), second.as_str()]);
    assert!(retries.complete);
    assert_eq!(retries.matched, 2);
    assert!(retries.jobs.iter().all(|j| j.attempts == 1
        && j.state == "scheduled"
        && j.last_error.as_deref() == Some("SMTP 451 try later")));
    let first_runs = e
        .scan_jobs("q", JobList::FirstRuns, &empty, 0, 25)
        .await
        .unwrap();
    assert_eq!(ids(&first_runs.jobs), ["later"]);

    // Run one retry now, delete the other: neither is a waiting retry any more.
    assert!(e.promote("q", &first).await.unwrap());
    assert_eq!(e.counts("q").await.unwrap().retrying, 1);
    assert!(e.delete("q", &second).await.unwrap());
    assert_eq!(e.counts("q").await.unwrap().retrying, 0);

    // A retry that falls due is promoted by a claim, which leaves the index alone: the counts
    // drop it once it is no longer scheduled.
    let soon = fail_next(&e, "boom", Duration::from_millis(30)).await;
    assert_eq!(soon, first);
    assert_eq!(e.counts("q").await.unwrap().retrying, 1);
    let claimed = std::sync::Mutex::new(None);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let claim = e.claim("q", "w", 1, LEASE).await.unwrap();
            let job = claim.jobs.into_iter().next();
            let found = job.is_some();
            *claimed.lock().unwrap() = job.map(|j| j.id);
            found
        })
        .await,
        "the retry fell due and was claimed"
    );
    assert_eq!(claimed.lock().unwrap().as_deref(), Some(first.as_str()));
    let counts = e.counts("q").await.unwrap();
    assert_eq!((counts.scheduled, counts.retrying), (1, 0));
    let index: u64 = e
        .redis_connection()
        .await
        .zcard(format!("{}retrying", e.base("q")))
        .await
        .unwrap();
    assert_eq!(index, 0, "the promoted retry left the index");
}

#[tokio::test]
async fn a_cancelled_retry_leaves_the_retries() {
    let e = engine().await;
    e.enqueue(&[job("q", "a", 5)]).await.unwrap();
    let id = fail_next(&e, "boom", Duration::from_secs(3600)).await;
    assert_eq!(e.counts("q").await.unwrap().retrying, 1);
    e.cancel("q", &id, "operator").await.unwrap();
    let counts = e.counts("q").await.unwrap();
    assert_eq!(
        (counts.scheduled, counts.retrying, counts.cancelled),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn outcomes_roll_up_by_the_hour_for_a_week() {
    let e = engine().await;
    e.enqueue(&[job("q", "a", 5), job("q", "b", 5), job("q", "c", 5)])
        .await
        .unwrap();
    let claim = e.claim("q", "w", 2, LEASE).await.unwrap();
    let leases: Vec<(String, u64)> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    e.ack("q", &leases).await.unwrap();
    fail_next(&e, "boom", Duration::from_secs(60)).await;

    let hours = e.hourly_throughput("q", 24).await.unwrap();
    assert_eq!(hours.len(), 24);
    let now = hours.last().unwrap();
    assert_eq!(
        (now.enqueued, now.completed, now.failed, now.retried),
        (3, 2, 1, 1)
    );
    assert!(hours[..23].iter().all(|h| h.completed == 0));
    assert_eq!(now.minute_ms % 3_600_000, 0, "periods start on the hour");
    let week = e.hourly_throughput("q", 168).await.unwrap();
    assert_eq!(week.len(), 168);
    // The rollup is kept eight days.
    let hour = chrono::Utc::now().timestamp_millis().div_euclid(3_600_000);
    let ttl: i64 = e
        .redis_connection()
        .await
        .ttl(format!("{}stats:h:{hour}", e.base("q")))
        .await
        .unwrap();
    assert!(
        (7 * 86_400..=8 * 86_400).contains(&ttl),
        "rollup expires after 8 days, not {ttl}s"
    );
}

#[tokio::test]
async fn run_times_per_kind_come_back_as_percentiles() {
    let e = engine().await;
    let recorder = RuntimeRecorder::default();
    let minute = chrono::Utc::now().timestamp_millis().div_euclid(60_000);
    // This minute and ten minutes ago: 95 quick sends (8 ms), 5 slow ones (3 s) that failed.
    for i in 0..95 {
        recorder.record_at(minute - (i % 2) * 10, "email.welcome", "completed", 8.0);
    }
    for _ in 0..5 {
        recorder.record_at(minute, "email.welcome", "retried", 3_000.0);
    }
    recorder.record_at(minute, "report:build", "dead", 40.0);
    recorder.record_at(minute, "report:build", "cancelled", 40.0);
    // Two hours ago: outside the hour read.
    recorder.record_at(minute - 120, "email.welcome", "dead", 9_000.0);
    recorder.flush(&e, "q").await.unwrap();
    // A second flush with nothing new writes nothing and keeps what was written.
    recorder.flush(&e, "q").await.unwrap();

    let kinds = e.kind_runtimes("q", 60).await.unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(
        names,
        ["email.welcome", "report:build"],
        "most attempts first"
    );
    let email = &kinds[0];
    assert_eq!((email.attempts, email.failed), (100, 5));
    assert!((email.failure_rate - 0.05).abs() < 1e-9);
    assert!((5.0..=10.0).contains(&email.p50_ms), "{email:?}");
    assert!((5.0..=10.0).contains(&email.p95_ms), "{email:?}");
    assert!((2_000.0..=5_000.0).contains(&email.p99_ms), "{email:?}");
    assert!((email.mean_ms - (95.0 * 8.0 + 5.0 * 3_000.0) / 100.0).abs() < 1.0);
    let report = &kinds[1];
    assert_eq!(
        (report.attempts, report.failed),
        (2, 1),
        "a cancel is no failure"
    );

    let ttl: i64 = e
        .redis_connection()
        .await
        .ttl(format!("{}runtimes:{minute}", e.base("q")))
        .await
        .unwrap();
    assert!((1..=7200).contains(&ttl), "minute figures expire: {ttl}");
}

/// `n` jobs of kind `kind` whose payload names `customer`.
fn jobs(kind: &str, customer: &str, n: usize) -> Vec<JobSpec> {
    (0..n)
        .map(|i| {
            JobSpec::new("q", kind, serde_json::json!({"customer": customer, "n": i}))
                .with_id(format!("{kind}-{customer}-{i:03}"))
        })
        .collect()
}

#[tokio::test]
async fn lists_filter_by_kind_and_text_and_act_on_many_jobs() {
    let e = engine().await;
    e.enqueue(&jobs("email.welcome", "Ada", 30)).await.unwrap();
    e.enqueue(&jobs("email.receipt", "Ada", 5)).await.unwrap();
    e.enqueue(&jobs("email.welcome", "Grace", 7)).await.unwrap();
    let waiting = JobList::State(JobState::Ready);

    let welcome = JobFilter {
        kind: Some("email.welcome".into()),
        text: None,
    };
    let page = e.scan_jobs("q", waiting, &welcome, 25, 25).await.unwrap();
    assert_eq!((page.matched, page.scanned, page.complete), (37, 42, true));
    assert_eq!(page.jobs.len(), 12, "the second page of 37 matches");
    assert!(page.jobs.iter().all(|j| j.kind == "email.welcome"));

    // Text: the id, kind, payload or last error, case ignored; with a kind, both must hold.
    let grace = JobFilter {
        kind: None,
        text: Some("grace".into()),
    };
    assert_eq!(
        e.scan_jobs("q", waiting, &grace, 0, 25)
            .await
            .unwrap()
            .matched,
        7
    );
    let ada_receipts = JobFilter {
        kind: Some("email.receipt".into()),
        text: Some("ADA".into()),
    };
    let receipts = e
        .scan_jobs("q", waiting, &ada_receipts, 0, 25)
        .await
        .unwrap();
    assert_eq!(receipts.matched, 5);

    // A dead job is found by its last error.
    let claim = e.claim("q", "w", 3, LEASE).await.unwrap();
    for claimed in &claim.jobs {
        assert!(
            e.fail(claimed, "SMTP 554 rejected as spam", None)
                .await
                .unwrap()
        );
    }
    let dead = JobList::State(JobState::Dead);
    let spam = JobFilter {
        kind: None,
        text: Some("Spam".into()),
    };
    let matches = e.matching_ids("q", dead, &spam).await.unwrap();
    assert_eq!(matches.ids.len(), 3);
    assert!(matches.complete);
    assert_eq!(
        e.scan_jobs("q", dead, &JobFilter::default(), 0, 25)
            .await
            .unwrap()
            .matched,
        3
    );

    // Retry two of them by id, then delete every receipt; ids that are not in the state asked
    // for are left alone.
    let retried = e.retry_jobs("q", &matches.ids[..2]).await.unwrap();
    assert_eq!(retried, 2);
    assert_eq!(e.counts("q").await.unwrap().dead, 1);
    assert_eq!(e.retry_jobs("q", &matches.ids[..2]).await.unwrap(), 0);
    let receipts = e.matching_ids("q", waiting, &ada_receipts).await.unwrap();
    assert_eq!(e.delete_jobs("q", &receipts.ids).await.unwrap(), 5);
    assert_eq!(
        e.scan_jobs("q", waiting, &ada_receipts, 0, 25)
            .await
            .unwrap()
            .matched,
        0
    );
}

#[tokio::test]
async fn a_filter_looks_at_a_bounded_number_of_jobs() {
    let e = engine().await;
    let total = SCAN_LIMIT as usize + 150;
    for chunk in jobs("bulk.job", "x", total).chunks(1000) {
        e.enqueue(chunk).await.unwrap();
    }
    let waiting = JobList::State(JobState::Ready);
    let all = JobFilter {
        kind: Some("bulk.job".into()),
        text: None,
    };
    let page = e.scan_jobs("q", waiting, &all, 0, 25).await.unwrap();
    assert_eq!((page.matched, page.scanned), (SCAN_LIMIT, SCAN_LIMIT));
    assert!(!page.complete, "the scan stopped short of the end");
    let none = JobFilter {
        kind: None,
        text: Some("no such text".into()),
    };
    let nothing = e.scan_jobs("q", waiting, &none, 0, 25).await.unwrap();
    assert_eq!((nothing.matched, nothing.scanned), (0, SCAN_LIMIT));
    assert!(!nothing.complete);
    let matches = e.matching_ids("q", waiting, &all).await.unwrap();
    assert_eq!(matches.ids.len(), SCAN_LIMIT as usize);
    assert!(!matches.complete);
    assert_eq!(e.delete_jobs("q", &matches.ids).await.unwrap(), SCAN_LIMIT);
    // What is left fits in one scan.
    let rest = e.matching_ids("q", waiting, &all).await.unwrap();
    assert_eq!(rest.ids.len(), 150);
    assert!(rest.complete);
}
