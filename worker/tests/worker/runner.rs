//! The worker process in-process: apalis workers over the engine process every job once, carry
//! the request id into the handler, apply retry policies (drill 4: a job that always fails is
//! dead after exactly its max attempts, at the backoff times), wake up on new work without
//! polling, shut down gracefully (finish, or release after the grace period), and keep working
//! across a Redis restart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apalis_core::task::data::Data;
use orderly::{
    queue::{JobError, JobInfo, JobState, RetryPolicy},
    testing::{PrivateRedis, eventually},
};
use orderly_worker::{jobs::JobContext, registrar::Registrar, runner::run_with};
use sqlx::PgPool;

use crate::helpers::{TestJob, options, services, start_worker, test_job};

fn once() -> RetryPolicy {
    RetryPolicy::once()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn every_job_is_processed_once_and_acknowledged(pool: PgPool) {
    let s = services(pool, &[]);
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let specs: Vec<_> = (0..500).map(|n| test_job("work", n, once())).collect();
    s.producer.enqueue_many(specs).await.unwrap();
    let recorder = seen.clone();
    let worker = start_worker(
        &s,
        options("work", 16),
        move |job: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let seen = recorder.clone();
            async move {
                *seen.lock().unwrap().entry(job.n).or_default() += 1;
                Ok::<(), JobError>(())
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            let c = s.queue.counts("work").await.unwrap();
            c.completed == 500 && c.active == 0
        })
        .await,
        "not all jobs completed: {:?}",
        s.queue.counts("work").await.unwrap()
    );
    worker.stop().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 500);
    assert!(seen.values().all(|runs| *runs == 1));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_request_id_reaches_the_handler_and_its_task(pool: PgPool) {
    let s = services(pool, &[]);
    let mut spec = test_job("rid", 1, once());
    spec.request_id = Some("req-from-http-42".into());
    s.producer.enqueue(spec).await.unwrap();
    /// What the handler was given, and what its task-local said.
    type Seen = Option<(Option<String>, Option<String>)>;
    let observed: Arc<Mutex<Seen>> = Arc::default();
    let sink = observed.clone();
    let worker = start_worker(
        &s,
        options("rid", 2),
        move |_: TestJob, _: Data<JobContext>, info: Data<JobInfo>| {
            let sink = sink.clone();
            async move {
                // What the handler is told, and what every log line it writes will carry.
                *sink.lock().unwrap() = Some((
                    info.request_id.clone(),
                    orderly::telemetry::current_request_id(),
                ));
                Ok::<(), JobError>(())
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            observed.lock().unwrap().is_some()
        })
        .await
    );
    worker.stop().await.unwrap();
    let (given, task_local) = observed.lock().unwrap().clone().unwrap();
    assert_eq!(given.as_deref(), Some("req-from-http-42"));
    assert_eq!(task_local.as_deref(), Some("req-from-http-42"));
}

/// Drill 4: a job that always fails ends dead after exactly its max attempts, at the backoff times.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_always_failing_job_dies_after_exactly_its_attempts_at_the_backoff_times(pool: PgPool) {
    let s = services(pool, &[]);
    let schedule = [Duration::from_millis(300), Duration::from_millis(600)];
    let spec = test_job("fail", 7, RetryPolicy::schedule(&schedule));
    let id = spec.id.clone();
    s.producer.enqueue(spec).await.unwrap();
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let log = attempts.clone();
    let worker = start_worker(
        &s,
        options("fail", 4),
        move |_: TestJob, _: Data<JobContext>, info: Data<JobInfo>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((info.attempt, Instant::now()));
                Err::<(), JobError>(JobError::retry(format!(
                    "downstream unavailable (attempt {})",
                    info.attempt
                )))
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            s.queue.counts("fail").await.unwrap().dead == 1
        })
        .await
    );
    // Nothing runs after death.
    tokio::time::sleep(Duration::from_millis(700)).await;
    worker.stop().await.unwrap();
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        attempts[1].1 - attempts[0].1 >= schedule[0],
        "first retry too early"
    );
    assert!(
        attempts[2].1 - attempts[1].1 >= schedule[1],
        "second retry too early"
    );
    let detail = s.queue.job("fail", &id).await.unwrap().unwrap();
    assert_eq!(detail.state, "dead");
    assert_eq!(detail.attempts, 3);
    assert_eq!(detail.errors.len(), 3);
    assert_eq!(
        detail.last_error.as_deref(),
        Some("downstream unavailable (attempt 3)")
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_permanent_error_is_dead_on_the_first_attempt(pool: PgPool) {
    let s = services(pool, &[]);
    let spec = test_job(
        "perm",
        1,
        RetryPolicy::exponential(5, Duration::from_millis(10), Duration::from_secs(1)),
    );
    s.producer.enqueue(spec).await.unwrap();
    let runs = Arc::new(Mutex::new(0));
    let counter = runs.clone();
    let worker = start_worker(
        &s,
        options("perm", 2),
        move |_: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                Err::<(), JobError>(JobError::permanent("550 mailbox does not exist"))
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.queue.counts("perm").await.unwrap().dead == 1
        })
        .await
    );
    worker.stop().await.unwrap();
    assert_eq!(*runs.lock().unwrap(), 1);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_panicking_handler_is_retried_and_the_worker_survives(pool: PgPool) {
    let s = services(pool, &[]);
    s.producer
        .enqueue(test_job(
            "panic",
            1,
            RetryPolicy::schedule(&[Duration::from_millis(10)]),
        ))
        .await
        .unwrap();
    let worker = start_worker(
        &s,
        options("panic", 2),
        move |_: TestJob, _: Data<JobContext>, info: Data<JobInfo>| async move {
            if info.attempt == 1 {
                panic!("bug in a handler");
            }
            Ok::<(), JobError>(())
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.queue.counts("panic").await.unwrap().completed == 1
        })
        .await
    );
    worker.stop().await.unwrap();
}

/// An idle worker blocks on the queue's wake-up list: with its fallback poll set to a minute,
/// a job pushed while it idles still starts at once.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_idle_worker_wakes_up_on_new_work_without_polling(pool: PgPool) {
    let s = services(pool, &[]);
    let mut opts = options("idle", 2);
    opts.idle_poll = Duration::from_secs(60);
    let done = Arc::new(Mutex::new(false));
    let flag = done.clone();
    let worker = start_worker(
        &s,
        opts,
        move |_: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let flag = flag.clone();
            async move {
                *flag.lock().unwrap() = true;
                Ok::<(), JobError>(())
            }
        },
    );
    // Let it go idle (its first claim finds nothing and it blocks).
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.producer
        .enqueue(test_job("idle", 1, once()))
        .await
        .unwrap();
    // Far less than the one-minute fallback poll.
    assert!(eventually(Duration::from_secs(10), || async { *done.lock().unwrap() }).await);
    worker.stop().await.unwrap();
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn shutdown_stops_claiming_and_lets_running_jobs_finish(pool: PgPool) {
    let s = services(pool, &[]);
    let specs: Vec<_> = (0..12).map(|n| test_job("drain", n, once())).collect();
    s.producer.enqueue_many(specs).await.unwrap();
    let started = Arc::new(Mutex::new(0));
    let counter = started.clone();
    let worker = start_worker(
        &s,
        options("drain", 4),
        move |_: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok::<(), JobError>(())
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            *started.lock().unwrap() == 4
        })
        .await
    );
    assert_eq!(
        s.queue.workers().await.unwrap().len(),
        1,
        "the worker registered itself"
    );
    worker.stop().await.unwrap();
    // The four running jobs finished; nothing else was claimed; the heartbeat is gone.
    assert_eq!(*started.lock().unwrap(), 4);
    let counts = s.queue.counts("drain").await.unwrap();
    assert_eq!((counts.completed, counts.active, counts.waiting), (4, 0, 8));
    assert!(s.queue.workers().await.unwrap().is_empty());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn jobs_still_running_after_the_grace_period_are_released_with_their_attempt_refunded(
    pool: PgPool,
) {
    let s = services(pool, &[]);
    let specs: Vec<_> = (0..2)
        .map(|n| {
            test_job(
                "slow",
                n,
                RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(1)),
            )
        })
        .collect();
    s.producer.enqueue_many(specs).await.unwrap();
    let mut opts = options("slow", 2);
    opts.shutdown_grace = Duration::from_millis(300);
    let started = Arc::new(Mutex::new(0));
    let counter = started.clone();
    let worker = start_worker(
        &s,
        opts,
        move |_: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), JobError>(())
            }
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            *started.lock().unwrap() == 2
        })
        .await
    );
    worker.stop().await.unwrap();
    let counts = s.queue.counts("slow").await.unwrap();
    assert_eq!((counts.waiting, counts.active), (2, 0));
    let ready = s.queue.list("slow", JobState::Ready, 0, 10).await.unwrap();
    assert!(
        ready.jobs.iter().all(|j| j.attempts == 0),
        "attempts were refunded: {:?}",
        ready.jobs
    );
}

/// Redis goes away while the worker idles and comes back empty (no persistence); the worker
/// process does not exit and runs jobs pushed after the restart.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_worker_survives_a_redis_restart(pool: PgPool) {
    let mut redis = PrivateRedis::start();
    let s = services(pool, &[("REDIS_URL", redis.url())]);
    let done = Arc::new(Mutex::new(Vec::new()));
    let sink = done.clone();
    let worker = start_worker(
        &s,
        options("restart", 2),
        move |job: TestJob, _: Data<JobContext>, _: Data<JobInfo>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(job.n);
                Ok::<(), JobError>(())
            }
        },
    );
    s.producer
        .enqueue(test_job("restart", 1, once()))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            done.lock().unwrap().len() == 1
        })
        .await
    );

    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();

    // Pushing may fail until the shared connection has reconnected.
    assert!(
        eventually(Duration::from_secs(20), || async {
            s.producer
                .enqueue(test_job("restart", 2, once()))
                .await
                .is_ok()
        })
        .await,
        "could not enqueue after the restart"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            done.lock().unwrap().contains(&2)
        })
        .await,
        "the worker did not pick up work after the restart"
    );
    worker.stop().await.unwrap();
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_worker_refuses_to_start_with_a_served_queue_nobody_handles(pool: PgPool) {
    let s = services(pool, &[]);
    let mut opts = options("emails", 2);
    opts.queues = orderly::jobs::QUEUE_NAMES.map(str::to_owned).to_vec();
    // Every shop handler but the upload one.
    let missing_one = |workers: Registrar| {
        workers
            .handle(orderly_worker::jobs::email::handle)
            .handle(orderly_worker::jobs::webhook::handle)
            .handle(orderly_worker::jobs::report::handle)
    };
    let error = run_with(
        s.services.clone(),
        opts.clone(),
        std::future::ready(()),
        missing_one,
    )
    .await
    .expect_err("a served queue without a handler must stop the worker");
    assert!(
        error
            .to_string()
            .contains("\"uploads\" is served but has no handler"),
        "{error}"
    );

    let twice = |workers: Registrar| {
        orderly_worker::jobs::register_all(workers).handle(orderly_worker::jobs::email::handle)
    };
    let error = run_with(
        s.services.clone(),
        opts.clone(),
        std::future::ready(()),
        twice,
    )
    .await
    .expect_err("two handlers for one queue must stop the worker");
    assert!(
        error.to_string().contains("\"emails\" has two handlers"),
        "{error}"
    );

    // The shop's own registration covers every queue: the worker starts and stops cleanly.
    run_with(
        s.services.clone(),
        opts,
        std::future::ready(()),
        orderly_worker::jobs::register_all,
    )
    .await
    .expect("every shop queue has its handler");
}
