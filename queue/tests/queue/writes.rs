//! An operation's writes sent as one statement, against real PostgreSQL and Redis: they commit
//! together with their jobs or not at all, the first write is written first, and a job staged
//! for a write's rows exists only when that write returned some, carrying them.

use std::time::Duration;

use orderly_queue::{JobSpec, Outbox, Producer, UnitOfWork, Writes};
use sqlx::PgPool;

use crate::{
    helpers::{engine, eventually},
    outbox::spec,
};

/// A table the writes below insert into, numbering rows in the order they are written.
pub(crate) async fn ledger(pool: &PgPool) {
    sqlx::query(
        "create table ledger (seq bigserial primary key, tag text not null unique, amount int)",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn tags_in_written_order(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select tag from ledger order by seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn add(writes: &mut Writes, tag: &'static str, amount: i32) -> orderly_queue::WriteRef {
    writes
        .write("insert into ledger (tag, amount) values ($1, $2) returning tag, amount")
        .bind(tag)
        .bind(amount)
        .finish()
}

#[sqlx::test(migrations = "../migrations")]
async fn writes_and_jobs_commit_together_in_one_statement(pool: PgPool) {
    ledger(&pool).await;
    let e = engine().await;
    let outbox = Outbox::new(pool.clone(), Producer::new(e.engine.clone()));
    let mut writes = Writes::new();
    add(&mut writes, "a", 1);
    add(&mut writes, "b", 2);
    let id = writes.stage(spec(1));
    let mut conn = pool.acquire().await.unwrap();
    outbox.execute(&mut conn, writes).await.unwrap();
    assert_eq!(tags_in_written_order(&pool).await, ["a", "b"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            e.exists("outbox-test", &id.to_string()).await.unwrap()
        })
        .await,
        "the staged job is pushed after the statement"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_write_leaves_nothing_written_and_nothing_queued(pool: PgPool) {
    ledger(&pool).await;
    let e = engine().await;
    let outbox = Outbox::new(pool.clone(), Producer::new(e.engine.clone()));
    let mut first = Writes::new();
    add(&mut first, "taken", 1);
    let mut conn = pool.acquire().await.unwrap();
    outbox.execute(&mut conn, first).await.unwrap();

    let mut writes = Writes::new();
    add(&mut writes, "new", 1);
    add(&mut writes, "taken", 2);
    let id = writes.stage(spec(1));
    let error = outbox.execute(&mut conn, writes).await.unwrap_err();
    assert!(error.to_string().contains("ledger_tag_key"), "{error}");
    assert_eq!(tags_in_written_order(&pool).await, ["taken"]);
    let outbox_rows: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox_rows, 0);
    outbox.drain(Duration::from_secs(5)).await;
    assert!(!e.exists("outbox-test", &id.to_string()).await.unwrap());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_first_write_is_written_first(pool: PgPool) {
    ledger(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    // Without the statement reading it first, PostgreSQL would write the last of these first.
    for with_a_job in [false, true] {
        sqlx::query("truncate ledger").execute(&pool).await.unwrap();
        let mut writes = Writes::new();
        add(&mut writes, "first", 1);
        add(&mut writes, "second", 2);
        add(&mut writes, "third", 3);
        if with_a_job {
            writes.stage(spec(1));
        }
        writes.execute(&mut conn).await.unwrap();
        let tags = tags_in_written_order(&pool).await;
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[0], "first", "with a job: {with_a_job}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_job_for_rows_carries_them_and_exists_only_with_them(pool: PgPool) {
    ledger(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    let fan_out = || {
        JobSpec::new(
            "outbox-test",
            "test.rows",
            serde_json::json!({ "rows": [] }),
        )
    };

    let mut writes = Writes::new();
    add(&mut writes, "plain", 0);
    let some = writes
        .write(
            "insert into ledger (tag, amount) select 'row ' || n, n from generate_series(1, $1) as n \
             returning tag, amount",
        )
        .bind(2_i32)
        .finish();
    let none = writes
        .write(
            "insert into ledger (tag, amount) select 'never ' || n, n \
             from generate_series(1, $1) as n where false returning tag, amount",
        )
        .bind(2_i32)
        .finish();
    let carried = writes.stage_for_rows(some, fan_out());
    let never = writes.stage_for_rows(none, fan_out());
    let written = writes.execute(&mut conn).await.unwrap();

    let ids: Vec<_> = written.iter().map(|job| job.id).collect();
    assert_eq!(ids, [carried], "only the job whose write returned rows");
    let mut rows = written[0].spec.payload["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|row| row["amount"].as_i64());
    assert_eq!(
        rows,
        [
            serde_json::json!({"tag": "row 1", "amount": 1}),
            serde_json::json!({"tag": "row 2", "amount": 2}),
        ]
    );
    let stored: Vec<(uuid::Uuid, serde_json::Value)> =
        sqlx::query_as("select id, spec from outbox order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, carried);
    assert_eq!(stored[0].1["payload"]["rows"].as_array().unwrap().len(), 2);
    assert_ne!(carried, never);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_unit_of_work_sends_its_writes_before_its_commit(pool: PgPool) {
    ledger(&pool).await;
    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    add(
        orderly_queue::Staging::writes(&mut uow),
        "in a transaction",
        1,
    );
    drop(uow); // rollback: nothing was sent
    assert!(tags_in_written_order(&pool).await.is_empty());

    let mut uow = UnitOfWork::begin(&pool).await.unwrap();
    add(
        orderly_queue::Staging::writes(&mut uow),
        "in a transaction",
        1,
    );
    uow.commit().await.unwrap();
    assert_eq!(tags_in_written_order(&pool).await, ["in a transaction"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn combined_operations_commit_as_one_with_each_first_write_first_in_order(pool: PgPool) {
    ledger(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    let operation = |first: &'static str, second: &'static str, with_rows: bool| {
        let mut writes = Writes::new();
        add(&mut writes, first, 1);
        let rows = add(&mut writes, second, 2);
        if with_rows {
            writes.stage_for_rows(
                rows,
                JobSpec::new(
                    "outbox-test",
                    "test.rows",
                    serde_json::json!({ "rows": [] }),
                ),
            );
        } else {
            writes.stage(spec(1));
        }
        writes
    };
    let combined = Writes::combine([
        operation("c first", "c second", false),
        operation("a first", "a second", true),
        operation("b first", "b second", false),
    ]);
    let written = combined.execute(&mut conn).await.unwrap();

    let tags = tags_in_written_order(&pool).await;
    assert_eq!(tags.len(), 6);
    assert_eq!(
        tags[..3],
        ["c first", "a first", "b first"],
        "each operation's first write goes first, in the order given"
    );
    let transactions: i64 = sqlx::query_scalar("select count(distinct xmin::text) from ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(transactions, 1, "one transaction for all of them");
    assert_eq!(written.len(), 3, "every operation's job: {written:?}");
    let rows_job = written
        .iter()
        .find(|job| job.spec.kind == "test.rows")
        .unwrap();
    assert_eq!(
        rows_job.spec.payload["rows"],
        serde_json::json!([{"tag": "a second", "amount": 2}]),
        "a job for rows carries its own operation's write"
    );

    // One failing operation fails them all.
    let mut failing = Writes::new();
    add(&mut failing, "c first", 3);
    let error = Writes::combine([operation("d first", "d second", false), failing])
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("ledger_tag_key"), "{error}");
    assert_eq!(tags_in_written_order(&pool).await.len(), 6);
}
