//! Unique jobs: a uniqueness key refuses a second job for a window of its own, which outlives
//! the retention trimming of the first job and ends on time; keyless jobs and other keys are
//! untouched, and a batch with a key twice adds one job.

use std::time::Duration;

use orderly_queue::{JobSpec, QueueEngine, Retention};
use redis::AsyncCommands;

use crate::helpers::{TestEngine, engine, engine_with, eventually, job};

const LEASE: Duration = Duration::from_secs(30);

/// A job on queue "q" with `key` held for `window`.
fn keyed(id: &str, key: &str, window: Duration) -> JobSpec {
    job("q", id, 5).unique_for(key, window)
}

/// Claims and acks every ready job of "q".
async fn complete_all(e: &QueueEngine) {
    let claim = e.claim("q", "w", 100, LEASE).await.unwrap();
    let leases: Vec<_> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    assert!(e.ack("q", &leases).await.unwrap().into_iter().all(|ok| ok));
}

/// The uniqueness keys of queue "q" that exist right now.
async fn held_keys(e: &TestEngine) -> Vec<String> {
    let mut conn = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = conn.keys(format!("{}u:*", e.base("q"))).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_unique_window_outlives_retention_trimming() {
    // No completed job is kept: the first job is gone the moment it is acked.
    let e = engine_with(Retention {
        completed_keep: 0,
        completed_max_age: Duration::from_secs(3600),
    })
    .await;
    let window = Duration::from_secs(60);
    assert_eq!(
        e.enqueue(&[keyed("first", "order-7", window)])
            .await
            .unwrap(),
        [true]
    );
    complete_all(&e).await;
    assert!(!e.exists("q", "first").await.unwrap(), "trimmed at once");
    assert_eq!(e.counts("q").await.unwrap().completed, 0);

    // Another job with the key, and the same job pushed again (an outbox re-push): both refused,
    // though neither id exists any more.
    let again = e
        .enqueue(&[
            keyed("second", "order-7", window),
            keyed("first", "order-7", window),
        ])
        .await
        .unwrap();
    assert_eq!(again, [false, false]);
    assert!(!e.exists("q", "second").await.unwrap());
    assert!(!e.exists("q", "first").await.unwrap());

    // The key names the job that took it and expires on its own.
    let mut conn = redis::Client::open(e.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = e.unique_key("q", "order-7");
    let holder: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(holder.as_deref(), Some("first"));
    let ttl_ms: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 60_000, "ttl {ttl_ms} ms");
}

#[tokio::test]
async fn the_key_is_free_again_after_its_window() {
    let e = engine().await;
    let window = Duration::from_millis(200);
    assert_eq!(e.enqueue(&[keyed("a", "k", window)]).await.unwrap(), [true]);
    assert_eq!(
        e.enqueue(&[keyed("b", "k", window)]).await.unwrap(),
        [false]
    );
    // The first job is still waiting: the window ends on time regardless.
    assert!(
        eventually(Duration::from_secs(5), || async {
            e.enqueue(&[keyed("c", "k", window)]).await.unwrap() == [true]
        })
        .await,
        "the key never came free"
    );
    assert_eq!(e.counts("q").await.unwrap().waiting, 2);
    assert!(!e.exists("q", "b").await.unwrap());
}

#[tokio::test]
async fn other_keys_and_keyless_jobs_are_unaffected() {
    let e = engine().await;
    let window = Duration::from_secs(60);
    let added = e
        .enqueue(&[
            keyed("a", "k1", window),
            keyed("b", "k2", window),
            job("q", "c", 5),
            job("q", "d", 5),
            // The same key on another queue is another key.
            job("other", "e", 5).unique_for("k1", window),
        ])
        .await
        .unwrap();
    assert_eq!(added, [true; 5]);
    assert_eq!(e.counts("q").await.unwrap().waiting, 4);
    assert_eq!(e.counts("other").await.unwrap().waiting, 1);
    // Only keyed jobs leave a key behind; keyless ones keep the id guard alone.
    assert_eq!(
        held_keys(&e).await,
        [e.unique_key("q", "k1"), e.unique_key("q", "k2")]
    );
    assert_eq!(
        e.enqueue(&[job("q", "c", 5), job("q", "f", 5)])
            .await
            .unwrap(),
        [false, true]
    );
}

#[tokio::test]
async fn a_batch_with_a_key_twice_adds_one_job() {
    let e = engine().await;
    let window = Duration::from_secs(60);
    let added = e
        .enqueue(&[
            keyed("a", "k", window),
            keyed("b", "k", window),
            keyed("c", "k2", window),
            keyed("d", "k", window),
        ])
        .await
        .unwrap();
    assert_eq!(added, [true, false, true, false]);
    assert_eq!(e.counts("q").await.unwrap().waiting, 2);
}

#[tokio::test]
async fn a_job_refused_for_its_id_takes_no_key() {
    let e = engine().await;
    let window = Duration::from_secs(60);
    e.enqueue(&[job("q", "a", 5)]).await.unwrap();
    assert_eq!(
        e.enqueue(&[keyed("a", "k", window)]).await.unwrap(),
        [false]
    );
    assert!(held_keys(&e).await.is_empty());
    assert_eq!(e.enqueue(&[keyed("b", "k", window)]).await.unwrap(), [true]);
}

#[tokio::test]
async fn the_job_page_shows_the_key() {
    let e = engine().await;
    e.enqueue(&[
        keyed("a", "order-7", Duration::from_secs(60)),
        job("q", "b", 5),
    ])
    .await
    .unwrap();
    let keyed = e.job("q", "a").await.unwrap().unwrap();
    assert_eq!(keyed.unique_key.as_deref(), Some("order-7"));
    let plain = e.job("q", "b").await.unwrap().unwrap();
    assert_eq!(plain.unique_key, None);
}
