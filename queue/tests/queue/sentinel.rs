//! The engine behind Redis Sentinels: a connection follows the primary they name, whether the
//! old primary was demoted alive (`SENTINEL FAILOVER`: the connection moves on the Sentinels'
//! word, before the old primary starts refusing writes) or killed with SIGKILL (refused
//! connections), and the blocking connection the workers wait on follows it too. A write counts
//! once a replica confirms it. Real servers: a primary, a replica and three Sentinels.

use std::time::{Duration, Instant};

use orderly_queue::{
    JobSpec, QueueEngine, RedisConnection, RedisServers, ReplicaAcks, Retention,
    testing::{SentinelRedis, eventually, unique_prefix},
};
use redis::aio::ConnectionManagerConfig;

use crate::helpers::job;

/// An engine on the group's primary, as an application configures it in sentinel mode.
fn engine_behind(group: &SentinelRedis) -> QueueEngine {
    let urls = group.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let servers = RedisServers::sentinel(&urls, &group.master).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    let connection = RedisConnection::lazy(&servers, config).unwrap();
    QueueEngine::new(connection, &unique_prefix("sentinel"), Retention::default())
}

/// Enqueues `id` until a primary accepts it; returns how long that took and how many attempts
/// failed (each one a command the old primary could not take).
async fn enqueue_until_accepted(engine: &QueueEngine, id: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut failed = 0;
    loop {
        match engine.enqueue(&[job("q", id, 5)]).await {
            Ok(_) => return (started.elapsed(), failed),
            Err(_) => {
                failed += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no primary accepted {id} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits for a replica to confirm pushes: at most 500 ms per attempt, as the outbox's producer
/// is configured.
const ONE_REPLICA: ReplicaAcks = ReplicaAcks {
    replicas: 1,
    timeout: Duration::from_millis(500),
};

/// Enqueues `id` until a replica confirms it, as the outbox's replicated producer does: a write
/// only the old primary took in the moment before it was demoted is lost when it resyncs from
/// the new one, so an unconfirmed push is pushed again (the job id makes the repeat harmless).
async fn enqueue_until_replicated(engine: &QueueEngine, id: &str) -> Duration {
    let started = Instant::now();
    loop {
        if engine
            .enqueue_confirmed(&[job("q", id, 5)], ONE_REPLICA)
            .await
            .is_ok()
        {
            return started.elapsed();
        }
        // The Sentinels read a server's role every 10 s, so a demoted or restarted server
        // becomes a syncing replica 10-20 s after the event.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no replica confirmed {id} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a replica confirms `jobs` within `limit` (pushed again, which adds nothing: a replica
/// that just started needs a moment to sync).
async fn replicated_within(engine: &QueueEngine, jobs: &[JobSpec], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if engine.enqueue_confirmed(jobs, ONE_REPLICA).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A connection of its own to the one server at `url`, past the engine and the Sentinels.
async fn direct(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// Whether `key` exists on the server at `port` (asked directly, not through the engine).
async fn exists_on(port: u16, key: &str) -> bool {
    let Ok(mut connection) = direct(&format!("redis://127.0.0.1:{port}")).await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut connection)
        .await
        .unwrap_or(false)
}

async fn ready(engine: &QueueEngine) -> u64 {
    engine.counts("q").await.unwrap().waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_follows_the_primary_through_a_demotion_and_a_crash() {
    let mut group = SentinelRedis::start("orderly-test");
    let engine = engine_behind(&group);
    let first_primary = group.primary_port().unwrap();

    let first: Vec<JobSpec> = (0..10).map(|i| job("q", &format!("a{i}"), 5)).collect();
    for one in &first {
        engine.enqueue(std::slice::from_ref(one)).await.unwrap();
    }
    assert!(
        replicated_within(&engine, &first, Duration::from_secs(10)).await,
        "the replica holds the first ten jobs"
    );
    let mut blocking = engine.blocking_connection().await.unwrap();

    // 1. A demotion: the old primary stays up as a replica and refuses writes with READONLY.
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(&group.master)
        .query_async(&mut direct(&group.sentinel_urls()[0]).await.unwrap())
        .await
        .unwrap();
    let second_primary = group
        .wait_for_new_primary(first_primary, Duration::from_secs(30))
        .expect("the Sentinels promote the replica");
    // The connection moves on the Sentinels' word, without waiting for the old primary to
    // refuse a write (it takes writes until the Sentinels reconfigure it, seconds later).
    let promoted_at = Instant::now();
    let b0 = engine.job_key("q", "b0");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let _ = engine.enqueue(&[job("q", "b0", 5)]).await;
            exists_on(second_primary, &b0).await
        })
        .await,
        "pushes reach the promoted server"
    );
    eprintln!(
        "demotion: pushes reach the new primary {:?} after its promotion",
        promoted_at.elapsed()
    );
    let took = enqueue_until_replicated(&engine, "b0").await;
    eprintln!("demotion: a push confirmed by a replica {took:?} later");
    assert_eq!(
        ready(&engine).await,
        11,
        "the ten replicated jobs and the new one"
    );
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(
            &mut direct(&format!("redis://127.0.0.1:{second_primary}"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(role[0].clone()).unwrap(),
        "master",
        "the write went to the promoted server"
    );

    // 2. A crash: the new primary is killed; the Sentinels promote the demoted one back.
    let killed = group.kill_primary();
    assert_eq!(group.servers[killed].port, second_primary);
    let third_primary = group
        .wait_for_new_primary(second_primary, Duration::from_secs(30))
        .expect("the Sentinels promote the surviving server");
    assert_eq!(third_primary, first_primary);
    let (took, failed) = enqueue_until_accepted(&engine, "c0").await;
    eprintln!("crash: the first accepted write after promotion took {took:?} ({failed} failed)");
    assert_eq!(
        ready(&engine).await,
        12,
        "nothing confirmed before the crash was lost"
    );

    // The workers' blocking wait follows too: it may fail once on the dead server, then a
    // fresh one (as the fetcher makes) is woken by new work on the new primary.
    let _ = engine
        .wait_for_work(&mut blocking, "q", Duration::from_millis(100))
        .await;
    let mut blocking = engine.blocking_connection().await.unwrap();
    let waiting = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .wait_for_work(&mut blocking, "q", Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    engine.enqueue(&[job("q", "d0", 5)]).await.unwrap();
    assert!(
        waiting.await.unwrap().unwrap(),
        "the wait on the new primary is woken by the enqueue"
    );

    // The crashed server comes back as a replica of the new primary (as a supervisor restarts
    // it) and the Sentinels count it again; the engine stays where it is.
    group.restart_as_replica(killed);
    let took = enqueue_until_replicated(&engine, "e0").await;
    eprintln!("restart: a push confirmed by the restarted server after {took:?}");
    assert_eq!(ready(&engine).await, 14);
}
