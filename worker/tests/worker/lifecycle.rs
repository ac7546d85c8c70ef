//! A report's life as its owner sees it, with the real worker: a report being built is stopped
//! by a cancel within a second and leaves no file; a report cancelled before it ran is never
//! built; a client following a build gets progress and then the report, and picks up where it
//! left off after reconnecting.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use orderly::{
    jobs::LiveUpdate,
    reports::{Report, ReportCancel, ReportRequest, ReportStatus},
    testing::eventually,
    users::{Actor, Role},
};
use sqlx::PgPool;

use crate::helpers::{ShopFixture, services, shop, start_shop_worker};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// `n` one-line orders of the fixture's customer, placed over the last `days` days (oldest
/// first), written in two statements.
async fn seed_orders(pool: &PgPool, fixture: &ShopFixture, n: i64, days: i64) {
    sqlx::query(
        "insert into orders (id, user_id, status, total_cents, currency, created_at) \
         select gen_random_uuid(), $1, 'placed', 1299, 'EUR', \
                now() - make_interval(secs => ($3 * 86400.0) * (1 - i::float8 / $2)) \
         from generate_series(1, $2) as i",
    )
    .bind(fixture.customer.id)
    .bind(n)
    .bind(days as f64)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents) \
         select id, 1, $1, 'MUG', 'Blue mug', 1, 1299 from orders",
    )
    .bind(fixture.product.id)
    .execute(pool)
    .await
    .unwrap();
}

fn admin(fixture: &ShopFixture) -> Actor {
    Actor {
        user_id: fixture.customer.id,
        role: Role::Admin,
    }
}

async fn request_sales(s: &orderly::Services, actor: &Actor, days: i64) -> Report {
    let request = ReportRequest::parse(
        "sales",
        "csv",
        today() - chrono::Duration::days(days),
        today(),
        None,
    )
    .unwrap();
    s.reports.request(actor, request).await.unwrap()
}

async fn job_state(s: &orderly::Services, report: &Report) -> Option<String> {
    let job_id = report.job_id.expect("the report names its job").to_string();
    s.queue
        .job("reports", &job_id)
        .await
        .unwrap()
        .map(|job| job.state)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_report_being_built_stops_within_a_second_of_a_cancel_and_leaves_no_file(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let fixture = shop(&s, 10).await;
    seed_orders(&pool, &fixture, 200_000, 30).await;
    let actor = admin(&fixture);
    let report = request_sales(&s, &actor, 31).await;
    let worker = start_shop_worker(&s, &["reports"]);

    // Cancel once the build has written its first parts.
    assert!(
        eventually(Duration::from_secs(60), || async {
            let now = s.reports.find(report.id).await.unwrap().unwrap();
            now.status == ReportStatus::Running && now.row_count.unwrap_or(0) > 0
        })
        .await,
        "the build started"
    );
    let asked = Instant::now();
    let stopping = s.reports.cancel(&actor, report.id).await.unwrap();
    assert!(
        matches!(stopping, ReportCancel::Stopping(_)),
        "{stopping:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.reports.find(report.id).await.unwrap().unwrap().status == ReportStatus::Cancelled
        })
        .await
    );
    let stopped_after = asked.elapsed();
    eprintln!("cancel to cancelled: {} ms", stopped_after.as_millis());
    assert!(
        eventually(Duration::from_secs(10), || async {
            job_state(&s, &report).await.as_deref() == Some("cancelled")
        })
        .await,
        "the job ends cancelled, neither retried nor dead"
    );
    let cancelled = s.reports.find(report.id).await.unwrap().unwrap();
    assert!(cancelled.row_count.unwrap() < 200_000, "{cancelled:?}");
    assert!(cancelled.cancelled_at.is_some() && cancelled.file_key.is_none());
    let key = format!(
        "reports/{}/sales-{}-{}.csv",
        report.id, report.from_date, report.to_date
    );
    assert!(
        s.storage.read_all(&key).await.is_err(),
        "the partial file is gone"
    );
    worker.stop().await.unwrap();
    // A second cancel is refused: it is over.
    let again = s.reports.cancel(&actor, report.id).await.unwrap_err();
    assert_eq!(again.status(), 409);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_report_cancelled_before_it_ran_is_never_built(pool: PgPool) {
    let s = services(pool, &[]);
    let fixture = shop(&s, 10).await;
    fixture.order(&s, 1).await;
    let in_a_minute = Utc::now() + chrono::Duration::seconds(60);
    let request =
        ReportRequest::parse("my_orders", "csv", today(), today(), Some(in_a_minute)).unwrap();
    let report = s.reports.request(&fixture.actor, request).await.unwrap();
    // The job is in the queue (delayed) once the outbox pushed it.
    assert!(
        eventually(Duration::from_secs(10), || async {
            job_state(&s, &report).await.as_deref() == Some("scheduled")
        })
        .await
    );
    let cancelled = s.reports.cancel(&fixture.actor, report.id).await.unwrap();
    let ReportCancel::Cancelled(row) = cancelled else {
        panic!("a waiting report is cancelled at once: {cancelled:?}");
    };
    assert_eq!(row.status, ReportStatus::Cancelled);
    assert_eq!(job_state(&s, &report).await.as_deref(), Some("cancelled"));
    // Someone else's report is not theirs to cancel.
    let stranger = shop(&s, 1).await;
    let error = s
        .reports
        .cancel(&stranger.actor, report.id)
        .await
        .unwrap_err();
    assert_eq!(error.status(), 404);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_job_that_comes_after_its_report_was_cancelled_ends_at_once(pool: PgPool) {
    let s = services(pool, &[]);
    let fixture = shop(&s, 10).await;
    let report = request_sales(&s, &admin(&fixture), 1).await;
    // Cancelled in the database only (as when the outbox had not pushed the job yet).
    s.reports.mark_cancelled(report.id).await.unwrap();
    let worker = start_shop_worker(&s, &["reports"]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            job_state(&s, &report).await.as_deref() == Some("cancelled")
        })
        .await
    );
    worker.stop().await.unwrap();
    let row = s.reports.find(report.id).await.unwrap().unwrap();
    assert_eq!(row.status, ReportStatus::Cancelled);
    assert!(row.file_key.is_none());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_follower_gets_progress_then_the_report_and_resumes_after_reconnecting(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let fixture = shop(&s, 10).await;
    seed_orders(&pool, &fixture, 100_000, 30).await;
    let actor = admin(&fixture);
    let report = request_sales(&s, &actor, 31).await;

    // Connected before the build starts: the first update is a step of the job's life.
    let mut first = s.reports.follow(&actor, report.id, None).await.unwrap();
    let worker = start_shop_worker(&s, &["reports"]);
    let mut seen = Vec::new();
    let resume_after = loop {
        let update = tokio::time::timeout(Duration::from_secs(60), first.next())
            .await
            .expect("an update")
            .expect("the stream goes on")
            .unwrap();
        match update {
            LiveUpdate::Step { id, kind, data } => {
                seen.push(kind.clone());
                if kind == "progress" {
                    assert!(data["fraction"].as_f64().unwrap() <= 1.0);
                    break id;
                }
            }
            LiveUpdate::Final { .. } => panic!("ended before any progress: {seen:?}"),
        }
    };
    assert_eq!(seen.first().map(String::as_str), Some("queued"), "{seen:?}");
    drop(first);

    // Reconnect after the first progress: only what came after it, then the report.
    let mut resumed = s
        .reports
        .follow(&actor, report.id, Some(resume_after.clone()))
        .await
        .unwrap();
    let position = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    let mut progress_after = 0;
    let last = loop {
        let update = tokio::time::timeout(Duration::from_secs(120), resumed.next())
            .await
            .expect("an update")
            .expect("the stream ends with a final update")
            .unwrap();
        match update {
            LiveUpdate::Step { id, kind, .. } => {
                assert!(
                    position(&id) > position(&resume_after),
                    "{id} after {resume_after}"
                );
                progress_after += usize::from(kind == "progress");
            }
            LiveUpdate::Final { kind, row, .. } => break (kind, row),
        }
    };
    assert!(
        resumed.next().await.is_none(),
        "the stream ends after the final update"
    );
    assert_eq!(last.0, "completed");
    assert_eq!(last.1.status, ReportStatus::Ready);
    assert_eq!(last.1.row_count, Some(100_000));
    assert!(progress_after >= 1, "progress went on after the reconnect");

    // Following a finished report answers at once with how it ended.
    let mut late = s.reports.follow(&actor, report.id, None).await.unwrap();
    match late.next().await.unwrap().unwrap() {
        LiveUpdate::Final { kind, .. } => assert_eq!(kind, "completed"),
        other => panic!("{other:?}"),
    }
    // The job keeps its result and final progress for the dashboard.
    let job_id = report.job_id.unwrap().to_string();
    let job = s.queue.job("reports", &job_id).await.unwrap().unwrap();
    assert_eq!(job.result.unwrap()["rows"], 100_000);
    assert_eq!(job.progress.unwrap()["fraction"], 1.0);
    worker.stop().await.unwrap();
}
