//! The transactional outbox against real PostgreSQL and Redis: staged jobs follow the
//! transaction (commit → queued, rollback → nothing), the relay delivers what the api never
//! pushed, pushed rows are deleted (on a connection held across short gaps between pushes, and
//! the scans for rows left behind skip them once they have seen them), re-pushes never
//! duplicate (not even once retention has trimmed the job, for the unique window), and rows
//! earlier versions marked dispatched are pruned.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use orderly_queue::{
    JobSpec, Outbox, Producer, QueueEngine, Retention, UnitOfWork, outbox,
    testing::keep_outbox_copies as keep_copies,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    TestEngine, assert_every_connection_comes_back, engine, engine_with, eventually,
};

pub(crate) fn spec(n: u32) -> JobSpec {
    JobSpec::new("outbox-test", "test.outbox", serde_json::json!({ "n": n }))
}

async fn setup(pool: &PgPool) -> (TestEngine, Outbox) {
    let e = engine().await;
    let outbox = Outbox::new(pool.clone(), Producer::new(e.engine.clone()));
    (e, outbox)
}

/// Rows not pushed yet (a pushed row is deleted).
pub(crate) async fn undispatched(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox where dispatched_at is null")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every row, pushed or not.
async fn rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The relay finds the row again: the delete after its push was lost (the process died in
/// between, or PostgreSQL lost the asynchronous commit).
/// Needs [`keep_copies`] from before the row was written.
async fn lose_the_delete(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "insert into outbox select * from outbox_written where id = $1 \
         on conflict (id) do nothing",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// Stages `spec(n)` for each of `numbers` in one transaction, commits it through `outbox` (which
/// pushes after the commit) and waits for the push; returns the rows' ids.
pub(crate) async fn commit_and_push(
    pool: &PgPool,
    outbox: &Outbox,
    numbers: std::ops::Range<u32>,
) -> Vec<Uuid> {
    let mut uow = UnitOfWork::begin(pool).await.unwrap();
    let mut ids = Vec::new();
    for n in numbers {
        ids.push(outbox::stage(&mut uow, spec(n)).await.unwrap());
    }
    outbox.commit(uow).await.unwrap();
    outbox.drain(Duration::from_secs(5)).await;
    ids
}

#[sqlx::test(migrations = "../migrations")]
async fn committed_jobs_are_queued_and_their_rows_deleted(pool: PgPool) {
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
    assert!(eventually(Duration::from_secs(5), || async { rows(&pool).await == 0 }).await);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_relay_and_the_backlog_stop_reading_pushed_rows_once_they_have_passed_them(
    pool: PgPool,
) {
    const PUSHED: i64 = 5_000;
    let e = engine().await;
    // Its own connection, named, so the test knows when it has exited and reported its
    // statistics.
    let scans = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            (*pool.connect_options())
                .clone()
                .application_name("outbox-scans"),
        )
        .await
        .unwrap();
    let outbox = Outbox::new(scans.clone(), Producer::new(e.engine.clone()));
    // Rows written and deleted, as every pushed row is: their index entries stay until a vacuum.
    sqlx::query(
        "insert into outbox (id, queue, kind, spec, created_at) \
         select gen_random_uuid(), 'outbox-test', 'test.outbox', '{}', now() - interval '1 hour' \
         from generate_series(1, $1)",
    )
    .bind(PUSHED)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("delete from outbox")
        .execute(&pool)
        .await
        .unwrap();
    // A scan marks an entry only once its row is dead to every transaction: wait out any that
    // began before the delete (other tests run beside this one).
    let deleted_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            let older: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where pid <> pg_backend_pid() \
                 and (backend_xmin is not null or backend_xid is not null) and xact_start < $1",
            )
            .bind(deleted_at)
            .fetch_one(&pool)
            .await
            .unwrap();
            older == 0
        })
        .await,
        "transactions older than the delete still run"
    );

    // Each worker polls every second, and every scrape of /metrics counts the backlog.
    for _ in 0..3 {
        assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 0);
        assert_eq!(outbox.backlog().await.unwrap().pending, 0);
    }

    // A backend reports its statistics at the latest when it exits.
    drop(outbox);
    scans.close().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            let left: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where application_name = 'outbox-scans'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            left == 0
        })
        .await
    );
    let mut entries_read = 0;
    assert!(
        eventually(Duration::from_secs(30), async || {
            entries_read = sqlx::query_scalar(
                "select idx_tup_read from pg_stat_user_indexes \
                 where indexrelname = 'outbox_pending_idx'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            entries_read >= PUSHED
        })
        .await,
        "the first scan read the pushed rows' entries"
    );
    // The first scan passes every entry (and marks it); the other five skip them. A bitmap scan
    // would read all of them six times.
    assert!(
        entries_read < 2 * PUSHED,
        "six scans read {entries_read} index entries of {PUSHED} pushed rows"
    );
}

/// Ten commits one after another, each waiting for its row's delete, as a shop placing orders
/// one at a time; the deletes go through an outbox on a pool of `max_connections` of its own,
/// which counts every connection given back to it (each is checked with a round trip then).
/// Returns that pool, the count, and what keeps the deleter running.
async fn ten_deletes_one_at_a_time(
    pool: &PgPool,
    max_connections: u32,
) -> (PgPool, Arc<AtomicUsize>, TestEngine, Outbox) {
    let e = engine().await;
    let returned = Arc::new(AtomicUsize::new(0));
    let counter = returned.clone();
    let deletes = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .after_release(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let outbox = Outbox::new(deletes.clone(), Producer::new(e.engine.clone()));
    for n in 0..10 {
        commit_and_push(pool, &outbox, n..n + 1).await;
    }
    assert_eq!(rows(pool).await, 0);
    (deletes, returned, e, outbox)
}

#[sqlx::test(migrations = "../migrations")]
async fn the_deleter_keeps_its_connection_between_pushes_that_come_one_at_a_time(pool: PgPool) {
    let (deletes, returned, _engine, _outbox) = ten_deletes_one_at_a_time(&pool, 4).await;
    // Given back once, or a few times if the machine stalled longer than it is held between
    // two of them; every time (ten) if it went back after each delete.
    let returned_meanwhile = returned.load(Ordering::SeqCst);
    assert!(
        returned_meanwhile <= 3,
        "the deleter gave its connection back {returned_meanwhile} times for ten deletes"
    );
    // Once the pushes pause, the pool has it back.
    assert_every_connection_comes_back(&deletes).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_deleter_keeps_no_connection_the_pool_would_have_to_wait_for(pool: PgPool) {
    // The deleter's connection is the pool's only one: held between deletes, anyone else
    // asking for one would wait for it.
    let (_deletes, returned, _engine, _outbox) = ten_deletes_one_at_a_time(&pool, 1).await;
    // Given back after every delete (the last one's return may still be under way).
    assert!(
        eventually(Duration::from_secs(5), async || {
            returned.load(Ordering::SeqCst) == 10
        })
        .await,
        "given back {} times for ten deletes",
        returned.load(Ordering::SeqCst)
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
    keep_copies(&pool).await.unwrap();
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
    assert_eq!(rows(&pool).await, 0);
    for id in &ids {
        assert!(e.exists("outbox-test", &id.to_string()).await.unwrap());
    }
    assert_eq!(e.counts("outbox-test").await.unwrap().waiting, 25);

    // The deletes are lost (e.g. the relay died after pushing): a second relay pushes again and
    // the engine keeps one job per outbox id.
    for id in &ids {
        lose_the_delete(&pool, *id).await;
    }
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
async fn rows_an_earlier_version_marked_dispatched_are_pruned_after_the_retention(pool: PgPool) {
    let (_e, outbox) = setup(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    for n in 0..4 {
        outbox::stage(&mut uow, spec(n)).await.unwrap();
    }
    uow.commit().await.unwrap();
    // Earlier versions marked a pushed row instead of deleting it: two marked long ago, one
    // recently, one never pushed.
    sqlx::query(
        "update outbox set dispatched_at = now() - interval '2 days' \
         where id in (select id from outbox order by id limit 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "update outbox set dispatched_at = now() \
         where id = (select id from outbox where dispatched_at is null order by id limit 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(outbox.prune(Duration::from_secs(86_400)).await.unwrap(), 2);
    assert_eq!(rows(&pool).await, 2);
    // The one never pushed is still the relay's.
    assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(undispatched(&pool).await, 0);
}

/// An outbox over an engine that keeps no completed job, with `window` as its unique window.
async fn setup_trimming(pool: &PgPool, window: Duration) -> (TestEngine, Outbox) {
    let e = engine_with(Retention {
        completed_keep: 0,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    let outbox =
        Outbox::new(pool.clone(), Producer::new(e.engine.clone())).with_unique_window(window);
    (e, outbox)
}

/// Runs every waiting job of the outbox test queue to completion (and so out of Redis).
async fn complete_all(e: &QueueEngine) -> usize {
    let claim = e
        .claim("outbox-test", "w", 100, Duration::from_secs(30))
        .await
        .unwrap();
    let leases: Vec<_> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    e.ack("outbox-test", &leases).await.unwrap();
    leases.len()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_relayed_row_makes_no_second_job_after_retention_trimmed_the_first(pool: PgPool) {
    let (e, outbox) = setup_trimming(&pool, Duration::from_secs(60)).await;
    keep_copies(&pool).await.unwrap();
    // One row pushed right after its commit, one the api never pushed (the relay's first push).
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let pushed = outbox::stage(&mut uow, spec(1)).await.unwrap();
    outbox.commit(uow).await.unwrap();
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let relayed = outbox::stage(&mut uow, spec(2)).await.unwrap();
    uow.commit().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { rows(&pool).await == 1 }).await);
    assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 1);

    // Both run and are trimmed at once: the guard by id is gone.
    assert_eq!(complete_all(&e).await, 2);
    for id in [pushed, relayed] {
        assert!(!e.exists("outbox-test", &id.to_string()).await.unwrap());
    }

    // Both deletes are lost and the relay pushes the rows again: no job comes back.
    for id in [pushed, relayed] {
        lose_the_delete(&pool, id).await;
    }
    assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 2);
    assert_eq!(rows(&pool).await, 0);
    let counts = e.counts("outbox-test").await.unwrap();
    assert_eq!((counts.waiting, counts.scheduled), (0, 0));
    for id in [pushed, relayed] {
        assert!(!e.exists("outbox-test", &id.to_string()).await.unwrap());
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn past_the_unique_window_a_trimmed_row_relayed_again_is_queued_again(pool: PgPool) {
    // What the window bounds: once it is over (and the job trimmed) nothing remembers the row.
    let (e, outbox) = setup_trimming(&pool, Duration::from_millis(200)).await;
    keep_copies(&pool).await.unwrap();
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let id = outbox::stage(&mut uow, spec(1)).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(outbox.relay_once(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(complete_all(&e).await, 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            lose_the_delete(&pool, id).await;
            outbox.relay_once(Duration::ZERO).await.unwrap();
            e.exists("outbox-test", &id.to_string()).await.unwrap()
        })
        .await
    );
}

/// A Redis primary with one replica, both private to the test.
struct ReplicatedRedis {
    primary: orderly_queue::testing::PrivateRedis,
    replica: orderly_queue::testing::PrivateRedis,
}

impl ReplicatedRedis {
    async fn start() -> Self {
        let primary = orderly_queue::testing::PrivateRedis::start();
        let replica = orderly_queue::testing::PrivateRedis::start();
        let redis = Self { primary, replica };
        redis.follow().await;
        redis
    }

    async fn command(url: &str, args: &[&str]) -> String {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        format!("{value:?}")
    }

    /// Makes the replica follow the primary and waits until the link is up.
    async fn follow(&self) {
        let port = self.primary.port.to_string();
        Self::command(&self.replica.url(), &["REPLICAOF", "127.0.0.1", &port]).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                Self::command(&self.replica.url(), &["INFO", "replication"])
                    .await
                    .contains("master_link_status:up")
            })
            .await,
            "the replica follows the primary"
        );
    }
}

/// Redis replicates asynchronously: a job the primary acknowledged can be missing after a
/// failover. With replica acknowledgements, a pushed row is deleted only once a replica holds
/// its job; rows pushed while the replica did not confirm stay, and after
/// the replica is promoted the relay pushes them to it: no job lost, none twice.
#[sqlx::test(migrations = "../migrations")]
async fn with_replica_acks_a_failover_loses_no_job(pool: PgPool) {
    let redis = ReplicatedRedis::start().await;
    let prefix = orderly_queue::testing::unique_prefix("replicas");
    let engine_on = |url: String| {
        QueueEngine::new(
            orderly_queue::testing::connection(&url),
            &prefix,
            Retention::default(),
        )
    };
    let acks = orderly_queue::ReplicaAcks {
        replicas: 1,
        timeout: Duration::from_millis(300),
    };
    let outbox = Outbox::new(
        pool.clone(),
        Producer::replicated(engine_on(redis.primary.url()), acks),
    );

    // Replicated: pushed and deleted.
    let ids = commit_and_push(&pool, &outbox, 0..10).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            undispatched(&pool).await == 0
        })
        .await,
        "replicated pushes are deleted"
    );

    // The replica stops following (a partition): pushes reach the primary only, and their
    // rows stay.
    ReplicatedRedis::command(&redis.replica.url(), &["REPLICAOF", "NO", "ONE"]).await;
    let unconfirmed = commit_and_push(&pool, &outbox, 10..20).await;
    let primary = engine_on(redis.primary.url());
    for id in &unconfirmed {
        assert!(
            primary
                .exists("outbox-test", &id.to_string())
                .await
                .unwrap()
        );
    }
    assert_eq!(
        undispatched(&pool).await,
        10,
        "unconfirmed pushes are not deleted"
    );

    // Failover: the old primary dies with the writes only it had; the replica is promoted.
    drop(redis.primary);
    let promoted = engine_on(redis.replica.url());
    for id in &unconfirmed {
        assert!(
            !promoted
                .exists("outbox-test", &id.to_string())
                .await
                .unwrap(),
            "the promoted replica never got these jobs"
        );
    }
    // The relay, now on the promoted server (which has no replica of its own yet, so its
    // pushes are not confirmed either), re-pushes the rows; a plain producer deletes them.
    let relay = Outbox::new(pool.clone(), Producer::new(promoted.clone()));
    assert_eq!(relay.relay_once(Duration::ZERO).await.unwrap(), 10);
    for id in ids.iter().chain(&unconfirmed) {
        assert!(
            promoted
                .exists("outbox-test", &id.to_string())
                .await
                .unwrap(),
            "job {id} exists after the failover"
        );
    }
    let counts = promoted.counts("outbox-test").await.unwrap();
    assert_eq!(counts.waiting, 20, "every job once");
    assert_eq!(undispatched(&pool).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expanded_job_is_pushed_as_the_jobs_it_makes_and_its_row_deleted(pool: PgPool) {
    let e = engine().await;
    let outbox = Outbox::new(pool.clone(), Producer::new(e.engine.clone())).with_expansion(
        "test.fan_out",
        |spec: &JobSpec| {
            let ids: Vec<Uuid> = serde_json::from_value(spec.payload["ids"].clone()).ok()?;
            Some(
                ids.into_iter()
                    .map(|id| orderly_queue::StagedJob {
                        id,
                        spec: JobSpec::new("outbox-test", "test.made", serde_json::json!({})),
                    })
                    .collect(),
            )
        },
    );
    let made = [Uuid::now_v7(), Uuid::now_v7()];
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    let fan_out = outbox::stage(
        &mut uow,
        JobSpec::new(
            "outbox-test",
            "test.fan_out",
            serde_json::json!({ "ids": made }),
        ),
    )
    .await
    .unwrap();
    outbox.commit(uow).await.unwrap();
    outbox.drain(Duration::from_secs(5)).await;
    for id in made {
        assert!(e.exists("outbox-test", &id.to_string()).await.unwrap());
    }
    assert!(
        !e.exists("outbox-test", &fan_out.to_string()).await.unwrap(),
        "pushed in place of the staged job"
    );
    assert!(eventually(Duration::from_secs(5), || async { rows(&pool).await == 0 }).await);
}
