//! An operation's writes sent as one statement, against real PostgreSQL and Redis: they commit
//! together with their jobs or not at all, the first write is written first, a job staged for a
//! write's rows exists only when that write returned some for its operation, carrying them, and
//! the statement of many operations is the statement of one.

use std::time::Duration;

use orderly_queue::{JobSpec, Outbox, Producer, UnitOfWork, WriteRef, Writes};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{engine, eventually},
    outbox::spec,
};

/// A table the writes below insert into, numbering rows in the order they are written.
pub(crate) async fn ledger(pool: &PgPool) {
    sqlx::query(
        "create table ledger (seq bigserial primary key, tag text not null unique, amount int, \
                              operation uuid)",
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

/// A ledger row per operation.
const ADD: &str = "insert into ledger (tag, amount) select * from unnest($1::text[], $2::int[]) \
                   returning tag, amount";

/// The same rows by another write: one the same as a first write would be written with it.
const ADD_AFTER: &str = "insert into ledger (tag, amount) select input.tag, input.amount \
                         from unnest($1::text[], $2::int[]) as input(tag, amount) \
                         returning tag, amount";

fn add(writes: &mut Writes, tag: &'static str, amount: i32) {
    add_by(writes, ADD, tag, amount);
}

fn add_by(writes: &mut Writes, sql: &'static str, tag: &'static str, amount: i32) {
    writes
        .write(sql)
        .bind(vec![tag])
        .bind(vec![amount])
        .finish();
}

/// A job to carry a write's rows (its payload's `rows`, empty when staged).
fn rows_job() -> JobSpec {
    JobSpec::new(
        "outbox-test",
        "test.rows",
        serde_json::json!({ "rows": [] }),
    )
}

/// As [`add`], the rows keyed by a fresh `operation`: a job may be staged for them.
fn add_keyed(writes: &mut Writes, tag: &'static str, amount: i32) -> WriteRef {
    let operation = Uuid::now_v7();
    writes
        .write(
            "insert into ledger (tag, amount, operation) \
             select * from unnest($1::text[], $2::int[], $3::uuid[]) \
             returning tag, amount, operation",
        )
        .bind(vec![tag])
        .bind(vec![amount])
        .bind(vec![operation])
        .finish_keyed("operation", operation)
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

    let mut writes = Writes::new();
    add(&mut writes, "plain", 0);
    let operation = Uuid::now_v7();
    let some = writes
        .write(
            "insert into ledger (tag, amount, operation) \
             select 'row ' || n, n, input.operation \
             from unnest($1::uuid[], $2::int[]) as input(operation, rows), \
                  generate_series(1, input.rows) as n \
             returning tag, amount, operation",
        )
        .bind(vec![operation])
        .bind(vec![2_i32])
        .finish_keyed("operation", operation);
    let none = writes
        .write(
            "insert into ledger (tag, amount, operation) \
             select 'never ' || n, n, input.operation \
             from unnest($1::uuid[], $2::int[]) as input(operation, rows), \
                  generate_series(1, input.rows) as n \
             where false returning tag, amount, operation",
        )
        .bind(vec![operation])
        .bind(vec![2_i32])
        .finish_keyed("operation", operation);
    let carried = writes.stage_for_rows(some, rows_job());
    let never = writes.stage_for_rows(none, rows_job());
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
        if with_rows {
            let rows = add_keyed(&mut writes, second, 2);
            writes.stage_for_rows(rows, rows_job());
        } else {
            add_by(&mut writes, ADD_AFTER, second, 2);
            writes.stage(spec(1));
        }
        writes
    };
    let combined = Writes::combine([
        operation("c first", "c second", false),
        operation("a first", "a second", true),
        operation("b first", "b second", true),
        operation("d first", "d second", false),
    ]);
    let written = combined.execute(&mut conn).await.unwrap();

    let tags = tags_in_written_order(&pool).await;
    assert_eq!(tags.len(), 8);
    assert_eq!(
        tags[..4],
        ["c first", "a first", "b first", "d first"],
        "each operation's first write goes first, in the order given"
    );
    let transactions: i64 = sqlx::query_scalar("select count(distinct xmin::text) from ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(transactions, 1, "one transaction for all of them");
    assert_eq!(written.len(), 4, "every operation's job: {written:?}");
    let mut carried: Vec<_> = written
        .iter()
        .filter(|job| job.spec.kind == "test.rows")
        .map(|job| job.spec.payload["rows"].clone())
        .collect();
    carried.sort_by_key(|rows| rows.to_string());
    assert_eq!(
        carried,
        [
            serde_json::json!([{"tag": "a second", "amount": 2}]),
            serde_json::json!([{"tag": "b second", "amount": 2}]),
        ],
        "a job for rows carries its own operation's rows of the write they share"
    );

    // One failing operation fails them all.
    let mut failing = Writes::new();
    add(&mut failing, "c first", 3);
    let error = Writes::combine([operation("e first", "e second", false), failing])
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("ledger_tag_key"), "{error}");
    assert_eq!(tags_in_written_order(&pool).await.len(), 8);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_statement_of_many_operations_is_the_statement_of_one(pool: PgPool) {
    ledger(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    const FIRST: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
    const SECOND: [&str; 7] = ["a2", "b2", "c2", "d2", "e2", "f2", "g2"];
    let mut sent = 0;
    for size in [1, 2, 4] {
        let operations: Vec<Writes> = (sent..sent + size)
            .map(|n| {
                let mut writes = Writes::new();
                add(&mut writes, FIRST[n], 1);
                let rows = add_keyed(&mut writes, SECOND[n], 2);
                writes.stage_for_rows(rows, rows_job());
                writes.stage(spec(1));
                writes
            })
            .collect();
        sent += size;
        let written = Writes::combine(operations)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(written.len(), 2 * size, "each operation's two jobs");
    }
    assert_eq!(
        tags_in_written_order(&pool).await,
        [
            "a", "a2", "b", "c", "b2", "c2", "d", "e", "f", "g", "d2", "e2", "f2", "g2"
        ],
        "the operations' first writes first, each write's rows in the operations' order"
    );
    // sqlx prepares each text once per connection and keeps it: one text, one prepared
    // statement. (The pattern is split so that this query's own text does not match it.)
    let texts: i64 = sqlx::query_scalar(
        "select count(*) from pg_prepared_statements where statement like '%outbox' || '_rows%'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(texts, 1, "one text for groups of 1, 2 and 4 operations");
}
