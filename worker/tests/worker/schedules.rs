//! The schedule proof across real processes: three `orderly-worker` processes, each running its
//! schedule loop against one Redis prefix, make exactly one job per tick of an every-second
//! schedule; after every worker was stopped for five ticks, one restarted worker runs the missed
//! period once (its latest tick) and then ticks on as usual.
//!
//! The schedule's jobs go to a queue no worker serves, so every tick's job stays waiting and the
//! test counts them by their ids (`tick_of`). The built-in maintenance schedules are turned off.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orderly::{
    queue::{
        JobSpec, JobState,
        schedule::{Missed, Recurrence, ScheduleDef, tick_of},
    },
    testing::{database_url, eventually},
};
use sqlx::PgPool;
use tokio::time::{Instant, sleep};

use crate::helpers::{TestServices, WorkerProcess, services, stop_all};

/// The queue the ticks' jobs go to: no worker serves it, so they wait to be counted.
const QUEUE: &str = "schedule-proof";
const SCHEDULE: &str = "proof:every-second";
/// Every built-in schedule, turned off so only the proof's schedule ticks.
const BUILT_IN_SCHEDULES: [&str; 6] = [
    "MAINTENANCE_PURGE_IDEMPOTENCY_KEYS_CRON",
    "MAINTENANCE_TRIM_DEAD_JOBS_CRON",
    "MAINTENANCE_PRUNE_SENT_EMAILS_CRON",
    "MAINTENANCE_PRUNE_WEBHOOK_DELIVERIES_CRON",
    "MAINTENANCE_EXPIRE_REPORTS_CRON",
    "MAINTENANCE_EXPIRE_UPLOADS_CRON",
];

/// A worker on `prefix` serving only the idle maintenance queue; the schedule loop runs in
/// every worker.
fn start_worker(prefix: &str, database_url: &str) -> WorkerProcess {
    let mut overrides = vec![("DATABASE_URL", database_url.to_owned())];
    overrides.extend(BUILT_IN_SCHEDULES.map(|name| (name, "off".to_owned())));
    WorkerProcess::start(
        prefix,
        &[
            "--queues",
            "maintenance",
            "--concurrency",
            "1",
            "--no-relay",
        ],
        &overrides,
    )
}

/// The tick times (ms) of the schedule's jobs on the proof queue, in order, after checking
/// that every one is a tick's job of the schedule and that no job is anywhere but waiting.
async fn ticks(s: &TestServices) -> Vec<i64> {
    let mut redis = s.redis.clone();
    // One transaction, so a tick enqueued meanwhile cannot make the listing and the other
    // states' sizes disagree.
    let (ready, scheduled, others): (Vec<String>, Vec<String>, Vec<u64>) = {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrange(s.queue.state_key(QUEUE, JobState::Ready), 0, -1)
            .zrange(s.queue.state_key(QUEUE, JobState::Scheduled), 0, -1);
        for state in [
            JobState::Active,
            JobState::Completed,
            JobState::Dead,
            JobState::Cancelled,
        ] {
            pipe.zcard(s.queue.state_key(QUEUE, state));
        }
        let (ready, scheduled, a, c, d, x): (Vec<String>, Vec<String>, u64, u64, u64, u64) = pipe
            .query_async(&mut redis)
            .await
            .expect("list the proof queue");
        (ready, scheduled, vec![a, c, d, x])
    };
    assert!(
        others.iter().all(|n| *n == 0),
        "every job of the queue is a waiting tick: active, completed, dead, cancelled {others:?}"
    );
    let mut ticks: Vec<i64> = ready
        .iter()
        .chain(&scheduled)
        .map(|id| {
            let (name, tick) = tick_of(id).unwrap_or_else(|| panic!("{id} is a tick's job"));
            assert_eq!(name, SCHEDULE);
            tick.timestamp_millis()
        })
        .collect();
    ticks.sort_unstable();
    ticks
}

/// Polls until `enough` holds for the ticks so far, or panics after `limit`.
async fn wait_for_ticks(s: &TestServices, limit: Duration, enough: impl Fn(&[i64]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let now = ticks(s).await;
        if enough(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "ticks so far: {now:?}");
        sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts one job per second: consecutive ticks, none twice, none left out.
fn assert_consecutive(ticks: &[i64]) {
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "one job per tick: {ticks:?}");
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn three_worker_processes_make_one_job_per_tick_and_run_missed_ticks_once(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let url = database_url(&pool);

    // Three workers, then the schedule (each loop sees a new definition within a second).
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| start_worker(&s.prefix, &url)).collect();
    for worker in &mut workers {
        worker.wait_ready().await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.queue.workers().await.map(|w| w.len()).unwrap_or(0) == 3
        })
        .await,
        "three live workers"
    );
    s.schedules
        .define(&ScheduleDef {
            name: SCHEDULE.to_owned(),
            recurrence: Recurrence::cron("*/1 * * * * *", "UTC").unwrap(),
            job: JobSpec::new(QUEUE, "proof.tick", serde_json::json!({})),
            missed: Missed::RunOnce,
        })
        .await
        .unwrap();

    // About ten seconds of ticks.
    wait_for_ticks(&s, Duration::from_secs(90), |t| t.len() >= 10).await;
    stop_all(&mut workers).await;
    let first_run = ticks(&s).await;
    assert!(first_run.len() >= 10, "{first_run:?}");
    assert_consecutive(&first_run);
    let last = *first_run.last().unwrap();

    // Every worker down for five ticks, then one comes back.
    let back_at = last + 5_500;
    while Utc::now().timestamp_millis() < back_at {
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ticks(&s).await,
        first_run,
        "no job while every worker is down"
    );
    let restarted_at: DateTime<Utc> = Utc::now();
    let mut worker = start_worker(&s.prefix, &url);
    worker.wait_ready().await;
    wait_for_ticks(&s, Duration::from_secs(60), |t| {
        t.iter().filter(|tick| **tick > last).count() >= 4
    })
    .await;
    stop_all(std::slice::from_mut(&mut worker)).await;

    let all = ticks(&s).await;
    assert_eq!(&all[..first_run.len()], first_run.as_slice());
    let after = &all[first_run.len()..];
    // The missed period made one job, for its latest tick: nothing for the ticks in between,
    // and that tick is no earlier than the second the worker came back in.
    let caught_up = after[0];
    assert!(
        caught_up - last >= 5_000,
        "five ticks missed, one job for them: last {last}, then {after:?}"
    );
    assert!(
        caught_up >= restarted_at.timestamp_millis() / 1000 * 1000,
        "the latest missed tick runs, not an earlier one: restarted at {restarted_at}, ran {caught_up}"
    );
    // Then ticks resume, one job each.
    assert_consecutive(after);
    let listed = s.schedules.list().await.unwrap();
    assert_eq!(listed[0].last_tick_ms, after.last().copied());
}
