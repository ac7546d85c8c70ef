//! Group commit against real PostgreSQL: operations sent while every statement is in flight wait
//! and go together in one transaction, written in the order of their keys; a group that fails
//! tells each of its operations to go again alone; an operation alone gets its own error.

use std::time::Duration;

use futures::future::join_all;
use orderly_queue::{GroupCommit, Grouped, Outbox, Producer, Writes};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{assert_every_connection_comes_back, engine, eventually},
    outbox::spec,
};

/// The writes tests' ledger, with a `blocker` row.
async fn ledger(pool: &PgPool) {
    crate::writes::ledger(pool).await;
    sqlx::query("insert into ledger (tag, amount) values ('blocker', 0)")
        .execute(pool)
        .await
        .unwrap();
}

fn one(tag: String) -> Writes {
    let mut writes = Writes::new();
    writes
        .write(
            "insert into ledger (tag, amount) select tag, 1 from unnest($1::text[]) as tag \
             returning tag",
        )
        .bind(vec![tag])
        .finish();
    writes.stage(spec(1));
    writes
}

/// Its statement waits on the `blocker` row until `holder` ends.
fn blocked() -> Writes {
    let mut writes = Writes::new();
    writes
        .write("update ledger set amount = amount + 1 where tag = any($1::text[]) returning tag")
        .bind(vec!["blocker"])
        .finish();
    writes
}

/// Holds the blocker row, and sends through `group` an operation that waits on it: the group's
/// only statement stays in flight until the holder ends.
async fn hold_the_only_statement(
    pool: &PgPool,
    group: &GroupCommit,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Grouped>,
) {
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select 1 from ledger where tag = 'blocker' for update")
        .execute(&mut *holder)
        .await
        .unwrap();
    let first = tokio::spawn({
        let group = group.clone();
        async move { group.execute(blocked(), Uuid::nil()).await }
    });
    let mut observer = pool.acquire().await.unwrap();
    orderly_queue::testing::until_lock_waiters(&mut observer, "with w0 as (update ledger", 1).await;
    (holder, first)
}

async fn wait_until_waiting(group: &GroupCommit, operations: usize) {
    let waited = eventually(Duration::from_secs(10), async || {
        group.waiting() >= operations
    })
    .await;
    assert!(
        waited,
        "only {} of {operations} operations ever waited",
        group.waiting()
    );
}

fn outbox(pool: &PgPool, engine: &crate::helpers::TestEngine) -> Outbox {
    Outbox::new(pool.clone(), Producer::new(engine.engine.clone()))
}

#[sqlx::test(migrations = "../migrations")]
async fn operations_sent_while_the_statement_is_busy_commit_together_in_key_order(pool: PgPool) {
    ledger(&pool).await;
    let e = engine().await;
    let group = GroupCommit::new(outbox(&pool, &e), 1, 32);
    let (holder, first) = hold_the_only_statement(&pool, &group).await;
    let keys: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let sending: Vec<_> = keys
        .iter()
        .map(|key| {
            let group = group.clone();
            let key = *key;
            tokio::spawn(async move { group.execute(one(key.to_string()), key).await })
        })
        .collect();
    wait_until_waiting(&group, 5).await;
    holder.rollback().await.unwrap();

    assert!(matches!(first.await.unwrap(), Grouped::Committed));
    for outcome in join_all(sending).await {
        assert!(matches!(outcome.unwrap(), Grouped::Committed));
    }
    let written: Vec<(String, String)> =
        sqlx::query_as("select tag, xmin::text from ledger where tag <> 'blocker' order by seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut in_key_order = keys.clone();
    in_key_order.sort();
    let tags: Vec<String> = written.iter().map(|(tag, _)| tag.clone()).collect();
    let expected: Vec<String> = in_key_order.iter().map(Uuid::to_string).collect();
    assert_eq!(tags, expected, "written in the order of their keys");
    assert!(
        written.iter().all(|(_, xmin)| *xmin == written[0].1),
        "one transaction: {written:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_group_sends_each_operation_back_to_go_alone(pool: PgPool) {
    ledger(&pool).await;
    let e = engine().await;
    let group = GroupCommit::new(outbox(&pool, &e), 1, 32);
    sqlx::query("insert into ledger (tag, amount) values ('taken', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let (holder, first) = hold_the_only_statement(&pool, &group).await;
    let tags = ["fine 1", "taken", "fine 2"];
    let sending: Vec<_> = tags
        .into_iter()
        .map(|tag| {
            let group = group.clone();
            tokio::spawn(async move { group.execute(one(tag.to_owned()), Uuid::new_v4()).await })
        })
        .collect();
    wait_until_waiting(&group, 3).await;
    holder.rollback().await.unwrap();
    assert!(matches!(first.await.unwrap(), Grouped::Committed));
    for outcome in join_all(sending).await {
        assert!(
            matches!(outcome.unwrap(), Grouped::SendAlone),
            "every operation of the failed group goes again alone"
        );
    }
    let written: i64 = sqlx::query_scalar("select count(*) from ledger where tag like 'fine%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "nothing of the failed group is written");

    // Alone, each finds its own outcome.
    let mut outcomes = Vec::new();
    for tag in tags {
        outcomes.push(group.execute(one(tag.to_owned()), Uuid::new_v4()).await);
    }
    assert!(matches!(outcomes[0], Grouped::Committed));
    match &outcomes[1] {
        Grouped::Failed(error) => assert!(error.to_string().contains("ledger_tag_key"), "{error}"),
        other => panic!("the taken tag alone fails with its own error, got {other:?}"),
    }
    assert!(matches!(outcomes[2], Grouped::Committed));
}

/// Writes a ledger row tagged `<backend pid>-<n>`: which connection ran the statement.
fn tagged_with_backend(n: usize) -> Writes {
    let mut writes = Writes::new();
    writes
        .write(
            "insert into ledger (tag, amount) \
             select pg_backend_pid()::text || '-' || n, 1 from unnest($1::text[]) as n \
             returning tag",
        )
        .bind(vec![n.to_string()])
        .finish();
    writes
}

#[sqlx::test(migrations = "../migrations")]
async fn statements_one_after_another_share_a_connection_that_goes_back_to_the_pool(pool: PgPool) {
    ledger(&pool).await;
    let e = engine().await;
    let group = GroupCommit::new(outbox(&pool, &e), 1, 32);
    // Four idle connections, which the pool hands out in turn: statements on whichever
    // connection the pool hands out next would run on all of them.
    let held: Vec<_> = join_all((0..4).map(|_| pool.acquire()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(held);
    // Each operation finds the line empty and goes alone; the sender before it stopped and set
    // its connection aside, and the next one takes it.
    for n in 0..10 {
        assert!(matches!(
            group.execute(tagged_with_backend(n), Uuid::nil()).await,
            Grouped::Committed
        ));
    }
    let tags: Vec<String> =
        sqlx::query_scalar("select tag from ledger where tag <> 'blocker' order by seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let backends: std::collections::HashSet<&str> = tags
        .iter()
        .map(|tag| tag.split_once('-').unwrap().0)
        .collect();
    assert_eq!(tags.len(), 10);
    // One, or two if the machine stalled longer than the connection is kept between two of
    // them.
    assert!(backends.len() <= 2, "one connection ran them all: {tags:?}");

    // Once nothing has waited for a while, the pool has it back.
    assert_every_connection_comes_back(&pool).await;
}
