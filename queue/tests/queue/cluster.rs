//! The engine on a Redis Cluster (three primaries, private servers): every operation works with
//! queues spread over all the nodes; slots moved while jobs run (`redis-cli --cluster reshard`,
//! and one queue's slot moved a few keys at a time) lose no job and run none on half a queue;
//! and a node killed with SIGKILL and restarted (append-only file on) loses none either. With a
//! replica per primary, a push is confirmed by the replica of the node that took it, and a
//! failover that drops the pushes only the old primary had loses no job: their outbox rows stay
//! undispatched and the relay pushes them to the promoted replica. A partitioned queue spreads
//! over all the nodes, and one enqueue, listing, lookup and wake-up cover its partitions.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use orderly_queue::{
    CancelOutcome, JobGroup, JobState, Partitions, QueueEngine, ReplicaAcks, Retention, WorkerInfo,
    schedule::{Missed, Recurrence, ScheduleDef, Schedules},
    testing::{ClusterRedis, eventually, unique_prefix},
};
use tokio_util::sync::CancellationToken;

use crate::helpers::job;

/// Keeps every completed job, so a test can count them all.
const KEEP_ALL: Retention = Retention {
    completed_keep: 1_000_000,
    completed_max_age: Duration::from_secs(3600),
};

fn engine_on(cluster: &ClusterRedis) -> QueueEngine {
    QueueEngine::new(cluster.connection(), &unique_prefix("cluster"), KEEP_ALL)
}

/// Another process's engine: its own connection to the cluster, the same keys.
fn another_process(cluster: &ClusterRedis, engine: &QueueEngine) -> QueueEngine {
    QueueEngine::new(cluster.connection(), engine.prefix(), KEEP_ALL)
}

/// Queue names whose slots are on node `node` and, with `below`, among the node's first slots
/// (a reshard moves a node's slots lowest first).
fn queues_on(
    cluster: &ClusterRedis,
    engine: &QueueEngine,
    node: usize,
    below: Option<i64>,
    count: usize,
) -> Vec<String> {
    let first_slot = cluster.first_slot(node);
    let found: Vec<String> = (0..10_000)
        .map(|n| format!("q{n}"))
        .filter(|queue| {
            let key = engine.state_key(queue, JobState::Ready);
            cluster.node_of(&key) == node
                && below.is_none_or(|below| cluster.slot_of(&key) < first_slot + below)
        })
        .take(count)
        .collect();
    assert_eq!(found.len(), count, "queue names on node {node}");
    found
}

/// A queue name on each of the cluster's three primaries, in node order.
fn one_queue_per_node(cluster: &ClusterRedis, engine: &QueueEngine) -> Vec<String> {
    (0..3)
        .flat_map(|node| queues_on(cluster, engine, node, None, 1))
        .collect()
}

/// Claims and acknowledges jobs of `queues` until `stop`, as a worker does (errors, expected
/// while slots move or a node restarts, are retried after a pause); records every job it ran
/// and how often. (Not what it acknowledged: an ack whose reply was lost with a node may still
/// have completed the job.)
fn spawn_worker(
    engine: QueueEngine,
    queues: Vec<String>,
    name: &str,
    ran: Arc<Mutex<HashMap<String, u32>>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut errors = 0;
        let mut held: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        while !stop.is_cancelled() {
            let mut idle = true;
            for queue in &queues {
                let leases = held.remove(queue).unwrap_or_default();
                match engine
                    .ack_and_claim(queue, &leases, &name, 20, Duration::from_secs(5))
                    .await
                {
                    Ok((_, claim)) => {
                        // A claimed job runs (here it does nothing): count the run.
                        let mut ran = ran.lock().unwrap();
                        for job in &claim.jobs {
                            *ran.entry(job.id.clone()).or_default() += 1;
                        }
                        idle &= claim.jobs.is_empty();
                        held.insert(
                            queue.clone(),
                            claim.jobs.into_iter().map(|j| (j.id, j.lease)).collect(),
                        );
                    }
                    Err(_) => {
                        // The leases stay held: acknowledged with the next call, or, if their
                        // lease ran out meanwhile, claimed again (at least once).
                        held.insert(queue.clone(), leases);
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            if idle {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        errors
    })
}

/// Enqueues jobs `range` of every queue (ids `<queue>-<n>`), `batch` per queue and call,
/// retrying a call that failed.
async fn enqueue_range(
    engine: &QueueEngine,
    queues: &[String],
    range: std::ops::Range<usize>,
    batch: usize,
) {
    for start in range.clone().step_by(batch) {
        let jobs: Vec<_> = queues
            .iter()
            .flat_map(|queue| {
                (start..(start + batch).min(range.end))
                    .map(move |n| job(queue, &format!("{queue}-{n}"), 5))
            })
            .collect();
        let started = Instant::now();
        while engine.enqueue(&jobs).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a batch was refused for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until the `count` jobs of each of `queues` are completed in Redis (none waiting,
/// scheduled, running or dead), then checks each id: no job lost, and every one was run by a
/// worker.
async fn assert_all_completed(
    cluster: &ClusterRedis,
    engine: &QueueEngine,
    queues: &[String],
    count: usize,
    ran: &Mutex<HashMap<String, u32>>,
) {
    let settled = eventually(Duration::from_secs(60), || async {
        let mut all = true;
        for queue in queues {
            all &= engine
                .counts(queue)
                .await
                .is_ok_and(|c| c.waiting + c.scheduled + c.active == 0);
        }
        all
    })
    .await;
    for queue in queues {
        let counts = engine.counts(queue).await.unwrap();
        assert!(settled, "queue {queue} did not drain: {counts:?}");
        assert_eq!(
            (counts.completed, counts.dead, counts.cancelled),
            (count as u64, 0, 0),
            "queue {queue}: {counts:?}"
        );
        let mut redis = cluster.connection();
        let completed: HashSet<String> = redis::cmd("ZRANGE")
            .arg(engine.state_key(queue, JobState::Completed))
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(&mut redis)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let ran = ran.lock().unwrap();
        for n in 0..count {
            let id = format!("{queue}-{n}");
            assert!(completed.contains(&id), "{id} is not completed");
            assert!(ran.contains_key(&id), "{id} never ran");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_with_queues_on_every_node() {
    let cluster = ClusterRedis::start(3);
    let engine = engine_on(&cluster);
    let queues = one_queue_per_node(&cluster, &engine);
    assert_eq!(queues.len(), 3);

    // One batch spanning every node; per queue: a plain job, a delayed one, a grouped one, a
    // unique one (and its duplicate, refused), one with an event stream.
    let mut jobs = Vec::new();
    for queue in &queues {
        jobs.push(job(queue, &format!("{queue}-plain"), 5));
        jobs.push(job(queue, &format!("{queue}-later"), 5).delay(Duration::from_secs(3600)));
        jobs.push(job(queue, &format!("{queue}-grouped"), 5).in_group(JobGroup::new("tenant-1")));
        jobs.push(
            job(queue, &format!("{queue}-unique"), 5).unique_for("k", Duration::from_secs(60)),
        );
        jobs.push(job(queue, &format!("{queue}-dup"), 5).unique_for("k", Duration::from_secs(60)));
        jobs.push(job(queue, &format!("{queue}-events"), 5).with_events());
    }
    let added = engine.enqueue(&jobs).await.unwrap();
    assert_eq!(
        added.iter().filter(|added| **added).count(),
        queues.len() * 5,
        "the unique key refused exactly the duplicates"
    );

    for queue in &queues {
        let counts = engine.counts(queue).await.unwrap();
        assert_eq!((counts.waiting, counts.scheduled), (4, 1), "{queue}");
        assert_eq!(counts.waiting_in_groups, 1);
        let groups = engine.groups(queue, 10).await.unwrap();
        assert_eq!(groups.groups_with_backlog, 1, "{queue}: {groups:?}");

        // Claim everything waiting: the grouped job comes with the others.
        let claim = engine
            .claim(queue, "w1", 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claim.jobs.len(), 4, "{queue}");
        let by_id: HashMap<String, u64> =
            claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();

        // Fail one for good, cancel nothing running, complete the rest.
        let failing = claim
            .jobs
            .iter()
            .find(|j| j.id.ends_with("-plain"))
            .unwrap();
        assert!(engine.fail(failing, "boom", None).await.unwrap());
        let rest: Vec<(String, u64)> = by_id
            .iter()
            .filter(|(id, _)| !id.ends_with("-plain"))
            .map(|(id, lease)| (id.clone(), *lease))
            .collect();
        assert!(engine.ack(queue, &rest).await.unwrap().iter().all(|ok| *ok));

        // The dashboard's reads.
        let detail = engine
            .job(queue, &format!("{queue}-plain"))
            .await
            .unwrap()
            .expect("the dead job");
        assert_eq!(detail.state, "dead");
        let events = engine
            .job_events(queue, &format!("{queue}-events"), None, 10)
            .await
            .unwrap();
        assert!(
            events.last().is_some_and(|event| event.kind == "completed"),
            "{events:?}"
        );
        assert_eq!(
            engine
                .cancel(queue, &format!("{queue}-later"), "not needed")
                .await
                .unwrap(),
            CancelOutcome::Cancelled
        );
        assert!(
            engine
                .retry_dead(queue, &format!("{queue}-plain"))
                .await
                .unwrap()
        );
        engine.pause(queue).await.unwrap();
        assert!(engine.counts(queue).await.unwrap().paused);
        engine.resume(queue).await.unwrap();
        let counts = engine.counts(queue).await.unwrap();
        assert_eq!(
            (
                counts.waiting,
                counts.completed,
                counts.dead,
                counts.cancelled
            ),
            (1, 3, 0, 1),
            "{queue}: {counts:?}"
        );
    }

    // The worker registry and the overview across all queues.
    let worker = WorkerInfo {
        id: "host:1:abc".into(),
        host: "host".into(),
        pid: 1,
        queues: queues.clone(),
        concurrency: 4,
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        running: 0,
        last_heartbeat_ms: chrono::Utc::now().timestamp_millis(),
    };
    engine.heartbeat(&worker).await.unwrap();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let (summaries, workers) = engine.summaries(&names, 5).await.unwrap();
    assert_eq!(summaries.len(), 3);
    assert_eq!(workers, vec![worker.clone()]);
    engine.deregister(&worker.id).await.unwrap();
    assert!(engine.workers().await.unwrap().is_empty());

    // Schedules (their own slot) enqueue into a queue on another node.
    let schedules = Schedules::new(engine.clone());
    schedules
        .define(&ScheduleDef {
            name: "nightly".into(),
            recurrence: Recurrence::every(Duration::from_secs(3600)),
            job: orderly_queue::JobSpec::new(&queues[2], "tick.run", serde_json::json!({})),
            missed: Missed::RunOnce,
        })
        .await
        .unwrap();
    let id = schedules.run_now("nightly").await.unwrap();
    assert!(engine.exists(&queues[2], &id).await.unwrap());
    assert_eq!(schedules.list().await.unwrap().len(), 1);

    // A server-wide command reaches every primary: PING answers only when all of them do.
    let pong: String = redis::cmd("PING")
        .query_async(&mut cluster.connection())
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(cluster.connection().primaries().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moved_while_jobs_run_lose_no_job() {
    let cluster = ClusterRedis::start(3);
    let engine = engine_on(&cluster);
    // Two queues among node 0's first 300 slots (the reshard below moves those) and one on
    // node 1 whose slot is moved on its own, ten keys per MIGRATE.
    let mut queues = queues_on(&cluster, &engine, 0, Some(300), 2);
    let lone = queues_on(&cluster, &engine, 1, None, 1).remove(0);
    queues.push(lone.clone());
    let first_batch = 500;
    enqueue_range(&engine, &queues, 0..first_batch, 100).await;

    let ran = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            spawn_worker(
                another_process(&cluster, &engine),
                queues.clone(),
                &format!("w{w}"),
                Arc::clone(&ran),
                stop.clone(),
            )
        })
        .collect();

    // Move the slots while the workers run and more jobs keep coming.
    let resharded = tokio::task::spawn_blocking({
        let admin = cluster.admin();
        let lone_key = engine.state_key(&lone, JobState::Ready);
        move || {
            admin.reshard(0, 2, 300, 10);
            admin.move_slot_of(&lone_key, 2, 10)
        }
    });
    let mut enqueued = first_batch;
    while !resharded.is_finished() {
        enqueue_range(&engine, &queues, enqueued..enqueued + 20, 20).await;
        enqueued += 20;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved_keys = resharded.await.unwrap();
    assert!(
        moved_keys > 10,
        "the lone queue's slot held {moved_keys} keys"
    );
    for queue in &queues {
        let key = engine.state_key(queue, JobState::Ready);
        assert_eq!(cluster.node_of(&key), 2, "{queue} moved to node 2");
    }

    assert_all_completed(&cluster, &engine, &queues, enqueued, &ran).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_loses_no_job() {
    let mut cluster = ClusterRedis::start_persistent(3);
    let engine = engine_on(&cluster);
    let queues = one_queue_per_node(&cluster, &engine);
    let per_queue = 600;
    enqueue_range(&engine, &queues, 0..per_queue, 100).await;

    let ran = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let worker = spawn_worker(
        engine.clone(),
        queues.clone(),
        "w",
        Arc::clone(&ran),
        stop.clone(),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            ran.lock().unwrap().len() >= 100
        })
        .await
    );
    let victim = cluster.node_of(&engine.state_key(&queues[1], JobState::Ready));
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = ran.lock().unwrap().len();
    tokio::task::block_in_place(|| cluster.restart(victim));

    assert_all_completed(&cluster, &engine, &queues, per_queue, &ran).await;
    stop.cancel();
    worker.await.unwrap();
    assert!(
        during < queues.len() * per_queue,
        "everything finished before the node went down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_confirmed_by_the_replica_of_its_own_node() {
    let cluster = ClusterRedis::start_with_replicas(3);
    let engine = engine_on(&cluster);
    let queues = one_queue_per_node(&cluster, &engine);
    let acks = ReplicaAcks {
        replicas: 1,
        timeout: Duration::from_millis(300),
    };
    for queue in &queues {
        let added = engine
            .enqueue_confirmed(&[job(queue, &format!("{queue}-a"), 5)], acks)
            .await
            .unwrap();
        assert_eq!(added, vec![true], "{queue}: confirmed by its replica");
    }

    // Node 1's replica stops answering: a push to node 1's queue reaches its primary but is
    // not confirmed; pushes to the other nodes' queues still are (the WAIT asks the node that
    // took the push, not every primary).
    let replica = cluster.replica_of(1);
    cluster.nodes[replica].pause();
    let unconfirmed = job(&queues[1], "unconfirmed", 5);
    let refused = engine
        .enqueue_confirmed(std::slice::from_ref(&unconfirmed), acks)
        .await
        .expect_err("a push no replica holds is not confirmed");
    assert!(refused.to_string().contains("not confirmed"), "{refused}");
    assert!(engine.exists(&queues[1], "unconfirmed").await.unwrap());
    for queue in [&queues[0], &queues[2]] {
        engine
            .enqueue_confirmed(&[job(queue, &format!("{queue}-b"), 5)], acks)
            .await
            .expect("another node's replica confirms");
    }

    // Back: pushing the same job again (what the outbox relay does with an undispatched row)
    // adds nothing and is confirmed now.
    cluster.nodes[replica].resume();
    let again = engine
        .enqueue_confirmed(std::slice::from_ref(&unconfirmed), acks)
        .await
        .expect("confirmed once the replica is back");
    assert_eq!(again, vec![false], "the job was there already");
}

#[sqlx::test(migrations = "../migrations")]
async fn with_replica_acks_a_cluster_failover_loses_no_job(pool: sqlx::PgPool) {
    use orderly_queue::{Outbox, Producer};

    use crate::outbox::{commit_and_push, undispatched};
    let cluster = tokio::task::spawn_blocking(|| ClusterRedis::start_with_replicas(3))
        .await
        .unwrap();
    let engine = engine_on(&cluster);
    let queue = crate::outbox::spec(0).queue;
    let queue = queue.as_str();
    let outbox = Outbox::new(
        pool.clone(),
        Producer::replicated(
            another_process(&cluster, &engine),
            ReplicaAcks {
                replicas: 1,
                timeout: Duration::from_millis(300),
            },
        ),
    );

    // Confirmed by the replica of the queue's node: pushed and deleted.
    let confirmed = commit_and_push(&pool, &outbox, 0..10).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            undispatched(&pool).await == 0
        })
        .await,
        "confirmed pushes are deleted"
    );

    // The replica is cut off (stopped, and its link dropped by the primary, so nothing more
    // reaches it): pushes reach the primary only, and their rows stay undispatched.
    let primary = cluster.node_of(&engine.state_key(queue, JobState::Ready));
    let replica = cluster.replica_of(primary);
    cluster.nodes[replica].pause();
    cluster
        .on_node(primary, &["CLIENT", "KILL", "TYPE", "replica"])
        .expect("the primary drops its replica's link");
    let unconfirmed = commit_and_push(&pool, &outbox, 10..20).await;
    for id in &unconfirmed {
        assert!(engine.exists(queue, &id.to_string()).await.unwrap());
    }
    assert_eq!(
        undispatched(&pool).await,
        10,
        "unconfirmed pushes are not deleted"
    );

    // Failover: the primary dies with the writes only it had; the cluster promotes the replica
    // once the other primaries agree it is gone (the 5 s node timeout).
    let mut cluster = cluster;
    cluster.kill(primary);
    cluster.nodes[replica].resume();
    let promoted = eventually(Duration::from_secs(30), || async {
        matches!(
            cluster.on_node(replica, &["ROLE"]),
            Some(redis::Value::Array(role)) if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
        ) && engine.exists(queue, "anything").await.is_ok()
    })
    .await;
    assert!(promoted, "the replica was promoted and serves the queue");
    for id in &unconfirmed {
        assert!(
            !engine.exists(queue, &id.to_string()).await.unwrap(),
            "the promoted replica never got {id}"
        );
    }

    // The relay re-pushes the undispatched rows to the new primary (which has no replica of its
    // own now, so a plain producer deletes them).
    let relay = Outbox::new(pool.clone(), Producer::new(engine.clone()));
    assert_eq!(relay.relay_once(Duration::ZERO).await.unwrap(), 10);
    for id in confirmed.iter().chain(&unconfirmed) {
        assert!(
            engine.exists(queue, &id.to_string()).await.unwrap(),
            "job {id} exists after the failover"
        );
    }
    assert_eq!(
        engine.counts(queue).await.unwrap().waiting,
        20,
        "every job once"
    );
    assert_eq!(undispatched(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_over_every_node() {
    let cluster = ClusterRedis::start(3);
    let plain = engine_on(&cluster);
    // A queue name whose six partitions cover the three nodes.
    let hot = (0..10_000)
        .map(|n| format!("hot{n}"))
        .find(|queue| {
            let engine = plain
                .clone()
                .with_partitions(Partitions::new([(queue.clone(), 6)]));
            let nodes: HashSet<usize> = engine
                .partitions(queue)
                .iter()
                .map(|p| cluster.node_of(&engine.state_key(p, JobState::Ready)))
                .collect();
            nodes.len() == 3
        })
        .unwrap();
    let partitions = Partitions::new([(hot.clone(), 6)]);
    let engine = plain.clone().with_partitions(partitions.clone());
    let names = engine.partitions(&hot);

    // An idle worker waiting on a partition of another node than partition 0's is woken by a
    // push to it.
    let far = names
        .iter()
        .find(|p| {
            cluster.node_of(&engine.state_key(p, JobState::Ready))
                != cluster.node_of(&engine.state_key(&hot, JobState::Ready))
        })
        .unwrap()
        .clone();
    let first = (0..)
        .map(|n| job(&hot, &format!("{hot}-wake-{n}"), 5))
        .find(|job| partitions.partition_for(&hot, &job.id) == far)
        .unwrap();
    let mut waiting = engine.blocking_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{}marker", engine.base(&far)))
        .query_async(&mut cluster.connection())
        .await
        .unwrap();
    let (woken, _) = tokio::join!(
        engine.wait_for_work(&mut waiting, &far, Duration::from_secs(5)),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            engine.enqueue(std::slice::from_ref(&first)).await.unwrap();
        }
    );
    assert!(woken.unwrap(), "woken by the push to {far}");
    engine.delete(&hot, &first.id).await.unwrap();

    // One call enqueues a batch that lands on every node.
    let queue = vec![hot.clone()];
    enqueue_range(&engine, &queue, 0..600, 200).await;
    let per_partition = engine.partition_counts(&hot).await.unwrap();
    assert!(
        per_partition.iter().all(|p| p.waiting >= 50),
        "{per_partition:?}"
    );
    let detail = engine
        .job(&hot, &format!("{hot}-7"))
        .await
        .unwrap()
        .unwrap();
    assert!(detail.partition.is_some());
    let page = engine.list(&hot, JobState::Ready, 100, 100).await.unwrap();
    assert_eq!((page.total, page.jobs.len()), (600, 100));

    // Two workers claiming from every partition run them all.
    let ran = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            spawn_worker(
                another_process(&cluster, &engine).with_partitions(partitions.clone()),
                names.clone(),
                &format!("w{w}"),
                Arc::clone(&ran),
                stop.clone(),
            )
        })
        .collect();
    let drained = eventually(Duration::from_secs(30), || async {
        engine
            .counts(&hot)
            .await
            .is_ok_and(|c| c.completed == 600 && c.waiting + c.active == 0)
    })
    .await;
    assert!(drained, "{:?}", engine.counts(&hot).await);
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let ran = ran.lock().unwrap();
    assert!((0..600).all(|n| ran.contains_key(&format!("{hot}-{n}"))));
}
