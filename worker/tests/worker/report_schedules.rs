//! Report schedules run by the real worker: a tick's job makes exactly one report of the right
//! days, built and emailed like any report and listed by schedule; a run that is repeated makes
//! nothing more; paused and deleted schedules make nothing; `since_last_run` continues where the
//! last report stopped; a worker that starts puts a stored schedule back into the engine.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Days, NaiveDate, Utc};
use orderly::{
    Services,
    pagination::PageRequest,
    queue::schedule::tick_job_id,
    reports::{
        NewReportSchedule, ReportSchedule, ReportScheduleChanges, ReportStatus, ScheduledRun,
    },
    testing::eventually,
    users::{Actor, DisplayName, Email, Password},
};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::helpers::{options, services, shop};

/// An admin (schedules are theirs) and their actor.
async fn admin(s: &Services) -> (orderly::users::User, Actor) {
    let (user, _) = s
        .users
        .create_admin(
            Email::parse(&format!(
                "boss-{}@example.com",
                uuid::Uuid::new_v4().simple()
            ))
            .unwrap(),
            Password::parse("admin-password".into()).unwrap(),
            DisplayName::parse("Boss").unwrap(),
        )
        .await
        .unwrap();
    let actor = Actor {
        user_id: user.id,
        role: user.role,
    };
    (user, actor)
}

/// Today's 06:00 UTC: a tick of `0 6 * * *` in UTC.
fn six_today() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(6, 0, 0)
        .unwrap()
        .and_utc()
}

/// Today's midnight UTC: a tick of `0 0 * * *` in UTC, always past.
fn midnight_today() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// The reports a schedule made.
async fn reports_of(s: &Services, actor: &Actor, id: uuid::Uuid) -> Vec<orderly::reports::Report> {
    s.reports
        .list(
            actor,
            Some(id),
            PageRequest::parse(Some(100), None).unwrap(),
        )
        .await
        .unwrap()
        .items
}

/// The real worker with every handler and its schedule loop on (so it reconciles at start);
/// notify the `Notify` to stop it.
fn start_worker_with_schedules(
    s: &Services,
) -> (Arc<Notify>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut opts = options("reports", 4);
    opts.queues = vec!["reports".into(), "emails".into()];
    opts.schedules = true;
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let handle = tokio::spawn(orderly_worker::runner::run(s.clone(), opts, async move {
        signal.notified().await
    }));
    (stop, handle)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_tick_makes_one_report_of_the_previous_day_built_emailed_and_listed(pool: PgPool) {
    // A pushed outbox row is deleted; its copy says what was staged.
    orderly::queue::testing::keep_outbox_copies(&pool)
        .await
        .unwrap();
    let s = services(pool.clone(), &[]);
    let (boss, actor) = admin(&s).await;
    let fixture = shop(&s, 100).await;
    // One order yesterday (in the report), one today (not).
    let yesterday_order = fixture.order(&s, 2).await;
    sqlx::query("update orders set created_at = $2 where id = $1")
        .bind(yesterday_order.id)
        .bind(midnight_today() - chrono::Duration::hours(12))
        .execute(&pool)
        .await
        .unwrap();
    fixture.order(&s, 1).await;

    let schedule = s
        .report_schedules
        .create(
            &actor,
            NewReportSchedule::parse("sales", "csv", "0 0 * * *", "UTC", "previous_day").unwrap(),
        )
        .await
        .unwrap()
        .schedule;
    let name = ReportSchedule::engine_name(schedule.id);
    // As if a crash came between the row and the engine: a starting worker puts it back.
    assert!(s.schedules.remove(&name).await.unwrap());
    let (stop, worker) = start_worker_with_schedules(&s);
    assert!(
        eventually(Duration::from_secs(15), || async {
            s.schedules.get(&name).await.unwrap().is_some()
        })
        .await,
        "the worker defines the stored schedule in the engine at start"
    );

    // The tick's job, as the schedule loop enqueues it.
    let tick = midnight_today();
    let def = s.schedules.get(&name).await.unwrap().unwrap();
    assert_eq!(def.job.kind, "report.scheduled");
    let job_id = tick_job_id(&name, tick);
    s.queue
        .enqueue(&[def.job.clone().with_id(job_id.clone()).run_at(tick)])
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            reports_of(&s, &actor, schedule.id)
                .await
                .first()
                .is_some_and(|r| r.status == ReportStatus::Ready)
        })
        .await,
        "the tick's report is built"
    );
    let boss_email = boss.email.clone();
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.sent_emails
                .for_recipient(&boss_email)
                .await
                .unwrap()
                .iter()
                .any(|m| m.kind == "email.report_ready")
        })
        .await,
        "the schedule's owner is emailed"
    );

    // The same run again (a retried job, a second enqueue of its id): still one report.
    let (_, run) = ScheduledRun::of_job_id(&job_id).unwrap();
    assert_eq!(
        s.report_schedules.run(schedule.id, run).await.unwrap(),
        None
    );
    s.queue
        .enqueue(&[def.job.clone().with_id(job_id.clone()).run_at(tick)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    worker.await.unwrap().unwrap();

    let reports = reports_of(&s, &actor, schedule.id).await;
    assert_eq!(reports.len(), 1, "one report per run");
    let report = &reports[0];
    let yesterday = today() - Days::new(1);
    assert_eq!((report.from_date, report.to_date), (yesterday, yesterday));
    assert_eq!(report.user_id, boss.id);
    assert_eq!(report.kind, "sales");
    assert_eq!(report.schedule_id, Some(schedule.id));
    assert!(report.job_id.is_some(), "the row names its build job");
    assert_eq!(report.row_count, Some(1), "only yesterday's order");
    let outbox: i64 =
        sqlx::query_scalar("select count(*) from outbox_written where kind = 'report.build'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outbox, 1, "one build staged");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn paused_and_deleted_schedules_make_nothing_and_run_now_runs_while_paused(pool: PgPool) {
    let s = services(pool, &[]);
    let (_, actor) = admin(&s).await;
    let schedule = s
        .report_schedules
        .create(
            &actor,
            NewReportSchedule::parse(
                "my_orders",
                "csv",
                "0 6 * * MON",
                "Europe/Berlin",
                "previous_week",
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .schedule;
    let pause = ReportScheduleChanges {
        paused: Some(true),
        ..ReportScheduleChanges::default()
    };
    s.report_schedules
        .update(&actor, schedule.id, pause)
        .await
        .unwrap();
    let tick = ScheduledRun {
        at: six_today(),
        manual: false,
    };
    assert_eq!(
        s.report_schedules.run(schedule.id, tick).await.unwrap(),
        None
    );
    assert!(reports_of(&s, &actor, schedule.id).await.is_empty());

    // "Run now" (an operator's explicit request) runs even while paused.
    let name = ReportSchedule::engine_name(schedule.id);
    let run_now_id = s.schedules.run_now(&name).await.unwrap();
    let (of, run_now) = ScheduledRun::of_job_id(&run_now_id).unwrap();
    assert_eq!(of, schedule.id);
    assert!(run_now.manual);
    let report = s
        .report_schedules
        .run(schedule.id, run_now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.schedule_id, Some(schedule.id));
    assert_eq!(
        report.to_date - report.from_date,
        chrono::Duration::days(6),
        "a whole week"
    );

    s.report_schedules
        .delete(&actor, schedule.id)
        .await
        .unwrap();
    assert_eq!(
        s.report_schedules.run(schedule.id, tick).await.unwrap(),
        None
    );
    // Its report stays, no longer linked.
    let kept = s.reports.find(report.id).await.unwrap().unwrap();
    assert_eq!(kept.schedule_id, None);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn since_last_run_continues_from_the_last_report(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let (_, actor) = admin(&s).await;
    let schedule = s
        .report_schedules
        .create(
            &actor,
            NewReportSchedule::parse("sales", "csv", "0 6 * * *", "UTC", "since_last_run").unwrap(),
        )
        .await
        .unwrap()
        .schedule;
    // Created three days ago.
    sqlx::query("update report_schedules set created_at = now() - interval '3 days' where id = $1")
        .bind(schedule.id)
        .execute(&pool)
        .await
        .unwrap();
    let run = |at| ScheduledRun { at, manual: false };

    let first = s
        .report_schedules
        .run(schedule.id, run(six_today()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.from_date, first.to_date),
        (today() - Days::new(3), today() - Days::new(1)),
        "from the day it was created through yesterday"
    );
    // Again today, at another time: nothing new to cover yet.
    let later = six_today() + chrono::Duration::hours(6);
    assert_eq!(
        s.report_schedules
            .run(schedule.id, run(later))
            .await
            .unwrap(),
        None
    );
    // Tomorrow's run covers today.
    let tomorrow = six_today() + chrono::Duration::days(1);
    let second = s
        .report_schedules
        .run(schedule.id, run(tomorrow))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.from_date, second.to_date), (today(), today()));
    // A failed report does not count as covered: the next run covers its days again.
    sqlx::query("update reports set status = 'failed' where id = $1")
        .bind(second.id)
        .execute(&pool)
        .await
        .unwrap();
    let retry = s
        .report_schedules
        .run(schedule.id, run(tomorrow + chrono::Duration::hours(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((retry.from_date, retry.to_date), (today(), today()));
    assert_eq!(reports_of(&s, &actor, schedule.id).await.len(), 3);
}
