//! A partitioned queue under a real worker (the runner, apalis, the backend's fetcher and
//! acker): an idle worker wakes for a job in any partition (the idle poll is a minute, so only
//! the wake-up can start it in time), and a busy worker's replacement claims rotate over the
//! partitions, so one partition's backlog does not hold back another's job.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use orderly::queue::{Partitions, RetryPolicy, testing::eventually};
use sqlx::PgPool;

use crate::helpers::{options, services, start_worker, test_job};

const QUEUE: &str = "emails";

/// `count` test jobs numbered from `first` whose ids put them in `partition` of 4.
fn jobs_in(partition: &str, first: u64, count: u64) -> Vec<orderly::queue::JobSpec> {
    let partitions = Partitions::new([(QUEUE.to_owned(), 4)]);
    (first..)
        .map(|n| test_job(QUEUE, n, RetryPolicy::default()))
        .filter(|job| partitions.partition_for(QUEUE, &job.id) == partition)
        .take(count as usize)
        .collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_worker_wakes_for_any_partition_and_rotates_its_claims(pool: PgPool) {
    let s = services(pool, &[("QUEUE_PARTITIONS", format!("{QUEUE}=4"))]);
    assert_eq!(s.queue.partitions(QUEUE).len(), 4);
    let done: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut opts = options(QUEUE, 4);
    opts.idle_poll = Duration::from_secs(60);
    let worker = start_worker(&s, opts, {
        let done = done.clone();
        move |job: crate::helpers::TestJob, _ctx, _info| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                done.lock().unwrap().push(job.n);
                Ok(())
            }
        }
    });
    // Let the worker claim nothing and settle into its wait on every partition.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let one = jobs_in("emails~3", 1, 1);
    let one_n = one[0].payload["n"].as_u64().unwrap();
    s.queue.enqueue(&one).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            done.lock().unwrap().contains(&one_n)
        })
        .await,
        "an idle worker woke for partition 3"
    );

    // A backlog in partition 0, then one job in partition 2.
    let backlog = jobs_in("emails", 1000, 300);
    s.queue.enqueue(&backlog).await.unwrap();
    let late = jobs_in("emails~2", 5000, 1);
    let late_n: u64 = late[0].payload["n"].as_u64().unwrap();
    s.queue.enqueue(&late).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            done.lock().unwrap().len() == 302
        })
        .await,
        "every job ran"
    );
    let order = done.lock().unwrap().clone();
    let position = order.iter().position(|n| *n == late_n).unwrap();
    assert!(
        position < 100,
        "partition 2's job ran {position}th, behind partition 0's backlog"
    );
    let mut unique = order.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 302, "each job ran once");
    let counts = s.queue.counts(QUEUE).await.unwrap();
    assert_eq!(
        (counts.completed, counts.waiting, counts.active),
        (302, 0, 0)
    );
    worker.stop().await.unwrap();
}
