//! Schedules against the real Redis: several loops at once enqueue exactly one job per tick, a
//! schedule that missed ticks runs the latest once (or none when told to skip), and pause,
//! resume, "run now" and the listing do what operators expect.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use orderly_queue::{
    JobSpec, JobState, QueueEngine, Retention,
    schedule::{Missed, Recurrence, ScheduleDef, Schedules, tick_of},
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestEngine, engine};

fn def(name: &str, recurrence: Recurrence, missed: Missed) -> ScheduleDef {
    ScheduleDef {
        name: name.to_owned(),
        recurrence,
        job: JobSpec::new("ticks", "tick.run", serde_json::json!({ "from": name })),
        missed,
    }
}

/// Every job id on the `ticks` queue, waiting or scheduled.
async fn tick_jobs(e: &TestEngine) -> Vec<String> {
    let mut redis = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for state in [JobState::Ready, JobState::Scheduled] {
        let some: Vec<String> = redis::cmd("ZRANGE")
            .arg(e.state_key("ticks", state))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .unwrap();
        ids.extend(some);
    }
    ids.sort();
    ids
}

/// A second engine on the same Redis and prefix: another process, as far as Redis can tell.
fn another_process(e: &TestEngine) -> QueueEngine {
    QueueEngine::new(
        orderly_queue::testing::connection(e.url.as_str()),
        &e.prefix,
        Retention::default(),
    )
}

#[tokio::test]
async fn three_schedulers_enqueue_exactly_one_job_per_tick() {
    let e = engine().await;
    let every_second = Recurrence::cron("*/1 * * * * *", "UTC").unwrap();
    Schedules::new(e.engine.clone())
        .define(&def("each-second", every_second, Missed::RunOnce))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let schedules = Schedules::new(another_process(&e));
            tokio::spawn(schedules.run(Duration::from_millis(500), stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    for handle in loops {
        handle.await.unwrap();
    }

    let ids = tick_jobs(&e).await;
    let mut ticks: Vec<i64> = ids
        .iter()
        .map(|id| tick_of(id).expect("a tick's job id").1.timestamp_millis())
        .collect();
    ticks.sort_unstable();
    assert!(
        ticks.len() >= 4,
        "five seconds give at least four ticks: {ids:?}"
    );
    // One job per tick: consecutive seconds, none twice, none left out.
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "ticks {ticks:?}");
    }
    let listed = Schedules::new(e.engine.clone()).list().await.unwrap();
    assert_eq!(listed[0].last_tick_ms, ticks.last().copied());
}

#[tokio::test]
async fn missed_ticks_run_once_after_downtime_or_not_at_all_when_skipped() {
    let e = engine().await;
    let schedules = Schedules::new(e.engine.clone());
    let every_ten_minutes = Recurrence::every(Duration::from_secs(600));
    schedules
        .define(&def("catch-up", every_ten_minutes.clone(), Missed::RunOnce))
        .await
        .unwrap();
    schedules
        .define(&def("skip", every_ten_minutes, Missed::Skip))
        .await
        .unwrap();
    let defined = Utc::now().timestamp_millis();
    let first_tick = Utc
        .timestamp_millis_opt((defined / 600_000 + 1) * 600_000)
        .unwrap();
    let at = |after_first: i64| first_tick + chrono::Duration::seconds(after_first);

    // Nothing before the first tick after the definition; on time, both schedules run it.
    assert!(schedules.enqueue_due(at(-1)).await.unwrap().is_empty());
    let first = schedules.enqueue_due(at(1)).await.unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(schedules.enqueue_due(at(2)).await.unwrap().is_empty());

    // Half an hour of downtime: three ticks missed, the latest 90 s ago. The catching-up
    // schedule runs that one once; the skipping one runs none and waits for the next.
    let resumed = schedules.enqueue_due(at(1890)).await.unwrap();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let (name, tick) = tick_of(&resumed[0]).unwrap();
    assert_eq!((name, tick), ("catch-up", at(1800)));
    let views = schedules.list().await.unwrap();
    let skip = views.iter().find(|v| v.def.name == "skip").unwrap();
    assert_eq!(
        skip.last_tick_ms,
        Some(at(1800).timestamp_millis()),
        "the skipped tick is recorded so it is not run later"
    );
    assert!(schedules.enqueue_due(at(1895)).await.unwrap().is_empty());
    let next = schedules.enqueue_due(at(2401)).await.unwrap();
    assert_eq!(next.len(), 2, "both run the next tick on time: {next:?}");
    assert_eq!(tick_jobs(&e).await.len(), 5);
}

#[tokio::test]
async fn pause_resume_run_now_and_the_listing() {
    let e = engine().await;
    let schedules = Schedules::new(e.engine.clone());
    let daily = Recurrence::cron("0 30 6 * * *", "Europe/Berlin").unwrap();
    schedules
        .define(&def("morning", daily, Missed::RunOnce))
        .await
        .unwrap();

    let listed = schedules.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    let next = Utc
        .timestamp_millis_opt(listed[0].next_tick_ms.unwrap())
        .unwrap();
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(local.format("%H:%M:%S").to_string(), "06:30:00");
    assert!(!listed[0].paused);

    schedules.set_paused("morning", true).await.unwrap();
    let paused = &schedules.list().await.unwrap()[0];
    assert!(paused.paused && paused.next_tick_ms.is_none());
    // A paused schedule enqueues nothing, even a day later.
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    assert!(schedules.enqueue_due(tomorrow).await.unwrap().is_empty());

    // "Run now" works while paused, and is what the listing shows as the last run.
    let id = schedules.run_now("morning").await.unwrap();
    assert_eq!(tick_jobs(&e).await, vec![id.clone()]);
    assert_eq!(schedules.list().await.unwrap()[0].last_job_id, Some(id));

    // Resuming does not make up the ticks missed while paused.
    schedules.set_paused("morning", false).await.unwrap();
    assert!(schedules.enqueue_due(Utc::now()).await.unwrap().is_empty());
    assert_eq!(tick_jobs(&e).await.len(), 1);

    // Unknown names and bad definitions are refused with a reason.
    assert!(schedules.run_now("evening").await.is_err());
    assert!(schedules.set_paused("evening", true).await.is_err());
    let bad_name = def(
        "no spaces",
        Recurrence::every(Duration::from_secs(5)),
        Missed::Skip,
    );
    let error = schedules.define(&bad_name).await.unwrap_err().to_string();
    assert!(error.contains("schedule name"), "{error}");
    assert!(Recurrence::cron("0 6 * * MON", "Berlin/Nowhere").is_err());

    assert!(schedules.remove("morning").await.unwrap());
    assert!(schedules.list().await.unwrap().is_empty());
}
