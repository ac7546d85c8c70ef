//! The transactional outbox against real PostgreSQL and Redis: staged jobs follow the
//! transaction (commit → queued, rollback → nothing), the relay delivers what the api never
//! pushed, re-pushes never duplicate, and dispatched rows are pruned.

use std::time::Duration;

use orderly_queue::{JobSpec, Outbox, Producer, UnitOfWork, outbox};
use sqlx::PgPool;

use crate::helpers::{TestEngine, engine, eventually};

fn spec(n: u32) -> JobSpec {
    JobSpec::new("outbox-test", "test.outbox", serde_json::json!({ "n": n }))
}

async fn setup(pool: &PgPool) -> (TestEngine, Outbox) {
    let e = engine().await;
    let outbox = Outbox::new(pool.clone(), Producer::new(e.engine.clone()));
    (e, outbox)
}

async fn undispatched(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox where dispatched_at is null")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn committed_jobs_are_queued_and_marked_dispatched(pool: PgPool) {
    let (e, outbox) = setup(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let id = outbox::stage(&mut uow, spec(1)).await.unwrap();
    outbox.commit(uow).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            e.exists("outbox-test", &id.to_string()).await.unwrap()
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            undispatched(&pool).await == 0
        })
        .await
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn rolled_back_jobs_never_exist(pool: PgPool) {
    let (e, _outbox) = setup(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let id = outbox::stage(&mut uow, spec(1)).await.unwrap();
    drop(uow); // rollback
    let rows: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(!e.exists("outbox-test", &id.to_string()).await.unwrap());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_relay_delivers_jobs_the_api_never_pushed_exactly_once(pool: PgPool) {
    let (e, outbox) = setup(&pool).await;
    // The api commits and dies before pushing: commit the unit of work without dispatching.
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(outbox::stage(&mut uow, spec(n)).await.unwrap());
    }
    uow.commit().await.unwrap();
    assert_eq!(undispatched(&pool).await, 25);

    // Two relays (two worker processes) race for the rows; SKIP LOCKED shares them out.
    let (a, b) = tokio::join!(
        outbox.relay_once(Duration::ZERO),
        outbox.relay_once(Duration::ZERO)
    );
    let relayed = a.unwrap() + b.unwrap();
    assert_eq!(relayed, 25);
    assert_eq!(undispatched(&pool).await, 0);
    for id in &ids {
        assert!(e.exists("outbox-test", &id.to_string()).await.unwrap());
    }
    assert_eq!(e.counts("outbox-test").await.unwrap().waiting, 25);

    // The "dispatched" mark is lost (e.g. the relay died after pushing): a second relay pushes
    // again and the engine keeps one job per outbox id.
    sqlx::query("update outbox set dispatched_at = null")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 25);
    assert_eq!(e.counts("outbox-test").await.unwrap().waiting, 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_relay_leaves_fresh_rows_to_the_api(pool: PgPool) {
    let (_e, outbox) = setup(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    outbox::stage(&mut uow, spec(1)).await.unwrap();
    uow.commit().await.unwrap();
    // Younger than the grace period: the api that staged it is still expected to push it.
    assert_eq!(outbox.relay_once(Duration::from_secs(60)).await.unwrap(), 0);
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn dispatched_rows_are_pruned_after_the_retention(pool: PgPool) {
    let (_e, outbox) = setup(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    for n in 0..3 {
        outbox::stage(&mut uow, spec(n)).await.unwrap();
    }
    uow.commit().await.unwrap();
    outbox.relay_once(Duration::ZERO).await.unwrap();
    sqlx::query("update outbox set dispatched_at = now() - interval '2 days' where id in (select id from outbox limit 2)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(outbox.prune(Duration::from_secs(86_400)).await.unwrap(), 2);
    let left: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
}
