//! The shop's slow work end to end with the real handlers: sales reports (rows, totals, delay,
//! download) built from seeded orders, a 100,000-order report with flat memory, and priorities
//! (a flood of low-priority work does not delay an order confirmation).

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use orderly::{
    jobs::{JobSettings, ReportJob},
    queue::Job,
    reports::{ReportRequest, ReportStatus},
    testing::eventually,
    users::{Actor, Role},
};
use sqlx::PgPool;

use crate::helpers::{peak_rss_mb, services, shop, start_shop_worker};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

async fn csv_lines(s: &orderly::Services, key: &str) -> Vec<csv::StringRecord> {
    let bytes = s.storage.read_all(key).await.unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_ref());
    reader.records().map(|r| r.unwrap()).collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_sales_report_has_the_right_rows_and_totals(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let fixture = shop(&s, 100).await;
    let mut expected_total = 0;
    for quantity in [1, 2, 3] {
        expected_total += fixture.order(&s, quantity).await.total_cents;
    }
    // One order outside the range (placed 40 days ago) must not appear.
    let old = fixture.order(&s, 5).await;
    sqlx::query("update orders set created_at = now() - interval '40 days' where id = $1")
        .bind(old.id)
        .execute(&pool)
        .await
        .unwrap();

    let request = ReportRequest::parse(
        "my_orders",
        "csv",
        today() - chrono::Duration::days(7),
        today(),
        None,
    )
    .unwrap();
    let report = s.reports.request(&fixture.actor, request).await.unwrap();
    assert_eq!(report.status, ReportStatus::Queued);
    let worker = start_shop_worker(&s, &["reports", "emails"]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.reports.find(report.id).await.unwrap().unwrap().status == ReportStatus::Ready
        })
        .await
    );
    // The requester is told by email.
    let email = fixture.customer.email.clone();
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.sent_emails
                .for_recipient(&email)
                .await
                .unwrap()
                .iter()
                .any(|m| m.kind == "email.report_ready")
        })
        .await
    );
    worker.stop().await.unwrap();

    let done = s.reports.find(report.id).await.unwrap().unwrap();
    assert_eq!(done.row_count, Some(3));
    let lines = csv_lines(&s, done.file_key.as_deref().unwrap()).await;
    assert_eq!(lines.len(), 3);
    let total: i64 = lines.iter().map(|l| l[8].parse::<i64>().unwrap()).sum();
    assert_eq!(total, expected_total);
    assert!(
        lines
            .iter()
            .all(|l| &l[3] == fixture.customer.email.as_str())
    );
    assert!(lines.iter().all(|l| l[0] != old.id.to_string()));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_report_requested_with_run_at_waits_for_its_time(pool: PgPool) {
    let s = services(pool, &[]);
    let fixture = shop(&s, 10).await;
    let run_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let request = ReportRequest::parse("my_orders", "csv", today(), today(), Some(run_at)).unwrap();
    let report = s.reports.request(&fixture.actor, request).await.unwrap();
    let worker = start_shop_worker(&s, &["reports"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.queue.counts("reports").await.unwrap().scheduled == 1
        })
        .await,
        "the build job is scheduled, not ready"
    );
    assert_eq!(
        s.reports.find(report.id).await.unwrap().unwrap().status,
        ReportStatus::Queued
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            s.reports.find(report.id).await.unwrap().unwrap().status == ReportStatus::Ready
        })
        .await
    );
    let built = s.reports.find(report.id).await.unwrap().unwrap();
    assert!(
        built.completed_at.unwrap() >= run_at,
        "built before its time"
    );
    worker.stop().await.unwrap();
}

/// 100,000 orders: the report streams them, so the process's peak memory barely moves.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_report_over_100_000_orders_streams_with_flat_memory(pool: PgPool) {
    let s = services(pool.clone(), &[]);
    let fixture = shop(&s, 10).await;
    // Seed 100,000 orders of one line each in two statements.
    sqlx::query(
        "insert into orders (id, user_id, status, total_cents, currency) \
         select gen_random_uuid(), $1, 'placed', 1299, 'EUR' from generate_series(1, 100000)",
    )
    .bind(fixture.customer.id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents) \
         select id, 1, $1, 'MUG', 'Blue mug', 1, 1299 from orders",
    )
    .bind(fixture.product.id)
    .execute(&pool)
    .await
    .unwrap();
    let admin = Actor {
        user_id: fixture.customer.id,
        role: Role::Admin,
    };
    let request = ReportRequest::parse("sales", "csv", today(), today(), None).unwrap();
    let report = s.reports.request(&admin, request).await.unwrap();
    let before_mb = peak_rss_mb();
    let started = Instant::now();
    let worker = start_shop_worker(&s, &["reports"]);
    assert!(
        eventually(Duration::from_secs(120), || async {
            s.reports.find(report.id).await.unwrap().unwrap().status == ReportStatus::Ready
        })
        .await
    );
    let elapsed = started.elapsed();
    let grown_mb = peak_rss_mb() - before_mb;
    worker.stop().await.unwrap();
    let built = s.reports.find(report.id).await.unwrap().unwrap();
    assert_eq!(built.row_count, Some(100_000));
    eprintln!(
        "100,000-order report: {} bytes in {:.2} s, peak RSS grew {grown_mb:.1} MB",
        built.byte_size.unwrap_or(0),
        elapsed.as_secs_f64()
    );
    // The file is ~14 MB; collecting it in memory would grow the peak by at least that much.
    assert!(
        grown_mb < 12.0,
        "peak RSS grew {grown_mb:.1} MB while building the report"
    );
}

/// A flood of low-priority report builds does not delay an order confirmation: reports have
/// their own queue and workers, and inside the emails queue the confirmation (high priority)
/// overtakes the normal-priority mail that was enqueued first.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_flood_of_low_priority_work_does_not_delay_a_confirmation(pool: PgPool) {
    let s = services(pool, &[]);
    let fixture = shop(&s, 10).await;
    let settings = JobSettings::default();
    // 2,000 report builds waiting.
    let floods: Vec<_> = (0..2000)
        .map(|_| {
            ReportJob {
                report_id: uuid::Uuid::now_v7(),
            }
            .spec(&settings)
            .unwrap()
        })
        .collect();
    s.producer.enqueue_many(floods).await.unwrap();
    // 300 normal-priority emails queued before the order.
    let welcomes: Vec<_> = (0..300)
        .map(|_| {
            orderly::jobs::EmailJob::Welcome {
                user_id: fixture.customer.id,
            }
            .spec(&settings)
            .unwrap()
        })
        .collect();
    s.producer.enqueue_many(welcomes).await.unwrap();
    let order = fixture.order(&s, 1).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.queue.counts("emails").await.unwrap().waiting_by_priority
                [orderly::queue::Priority::HIGH.level() as usize]
                == 1
        })
        .await,
        "the confirmation is queued at high priority"
    );

    let worker = start_shop_worker(&s, &["emails", "reports"]);
    let email = fixture.customer.email.clone();
    assert!(
        eventually(Duration::from_secs(60), || async {
            s.sent_emails
                .for_recipient(&email)
                .await
                .unwrap()
                .iter()
                .any(|m| m.subject.contains(&order.id.to_string()))
        })
        .await
    );
    // When the confirmation went out, most of the earlier normal-priority mail was still waiting,
    // and so was most of the report flood.
    let emails = s.queue.counts("emails").await.unwrap();
    let reports = s.queue.counts("reports").await.unwrap();
    worker.stop().await.unwrap();
    assert!(
        emails.waiting > 150,
        "the confirmation overtook the queue: {emails:?}"
    );
    assert!(reports.waiting + reports.active + reports.completed + reports.dead > 0);
    assert!(
        reports.dead + reports.completed < 2000,
        "reports did not have to finish first: {reports:?}"
    );
}
