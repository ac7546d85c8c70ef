//! Fleet-wide flow control with real processes: three `orderly-worker` processes at concurrency
//! 64 each, `QUEUE_RATE_LIMITS=emails=40/s`, and 1,000 order confirmations queued at once: a
//! real SMTP server receives them at 40 a second (no five-second window above 44 a second, at
//! least 36 a second on average while the backlog lasts) and every one arrives.

use std::time::{Duration, Instant};

use orderly::{
    jobs::EmailJob,
    queue::{Job, JobSpec},
    testing::database_url,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{WorkerProcess, services, shop, stop_all},
    smtp::TestSmtp,
};

const EMAILS: usize = 1000;
/// The confirmations and the customer's welcome email (registering the fixture's customer
/// staged it).
const EXPECTED: usize = EMAILS + 1;

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn three_workers_send_a_backlog_of_email_at_the_fleet_wide_rate(pool: PgPool) {
    let smtp = TestSmtp::start(vec![], None);
    let s = services(pool.clone(), &[]);
    let fixture = shop(&s, 10).await;
    // 1,000 one-line orders of the fixture's customer, in two statements.
    let order_ids: Vec<Uuid> = sqlx::query_scalar(
        "insert into orders (id, user_id, status, total_cents, currency) \
         select gen_random_uuid(), $1, 'placed', 1299, 'EUR' from generate_series(1, $2) \
         returning id",
    )
    .bind(fixture.customer.id)
    .bind(EMAILS as i64)
    .fetch_all(&pool)
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

    let url = database_url(&pool);
    let overrides = vec![
        ("DATABASE_URL", url),
        ("SMTP_URL", smtp.url.clone()),
        ("MAIL_FROM", "Orderly <orders@shop.example>".to_owned()),
        ("QUEUE_RATE_LIMITS", "emails=40/s".to_owned()),
        // A send that fails for a moment is tried again soon, not minutes later.
        ("EMAIL_RETRY_BASE_MS", "200".to_owned()),
    ];
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| {
            WorkerProcess::start(
                &s.prefix,
                &["--queues", "emails", "--concurrency", "64", "--no-relay"],
                &overrides,
            )
        })
        .collect();
    for worker in &mut workers {
        worker.wait_ready().await;
    }

    // All at once, in one call.
    let settings = s.jobs.settings();
    let specs: Vec<JobSpec> = order_ids
        .iter()
        .map(|&order_id| {
            EmailJob::OrderConfirmation { order_id }
                .spec(settings)
                .unwrap()
        })
        .collect();
    let queued_at = Instant::now();
    assert!(
        s.queue
            .enqueue(&specs)
            .await
            .unwrap()
            .iter()
            .all(|added| *added)
    );

    let deadline = queued_at + Duration::from_secs(90);
    while smtp.arrivals().len() < EXPECTED {
        if Instant::now() >= deadline {
            panic!(
                "only {} of {EXPECTED} emails arrived; the queue: {:?}",
                smtp.arrivals().len(),
                s.queue.counts("emails").await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_all(&mut workers).await;

    // A moment for a duplicate to show, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = smtp.arrivals();
    assert_eq!(arrivals.len(), EXPECTED, "none lost, none twice");
    let mut recipients: Vec<String> = smtp.received().iter().flat_map(|m| m.to.clone()).collect();
    recipients.dedup();
    assert_eq!(recipients.len(), 1, "every message went to the customer");
    // The densest five seconds, sliding over every arrival.
    let window = Duration::from_secs(5);
    let densest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|at| at.duration_since(arrivals[i]) < window)
                .count()
        })
        .max()
        .unwrap();
    let span = arrivals
        .last()
        .unwrap()
        .duration_since(arrivals[0])
        .as_secs_f64();
    let average = (EXPECTED - 1) as f64 / span;
    eprintln!(
        "1,000 emails at 40/s from 3 workers: {span:.1} s, {average:.1}/s on average, densest \
         5 s {densest} ({:.1}/s)",
        densest as f64 / 5.0
    );
    assert!(
        densest <= 220,
        "a five-second window held {densest} (> 44/s)"
    );
    assert!(average >= 36.0, "{average:.1}/s on average");
}
