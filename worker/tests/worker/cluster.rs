//! The shop on a Redis Cluster (`REDIS_MODE=cluster`, three primaries keeping append-only
//! files): orders placed continuously over HTTP, two real `orderly-worker` processes sending
//! confirmations to a real SMTP server and webhooks to a real receiver, while the email and
//! webhook queues' slots move to other nodes a few keys at a time and the node then serving
//! the email queue is killed with SIGKILL and restarted. Every order placed gets exactly one
//! confirmation and its webhook.

use std::time::{Duration, Instant};

use orderly::{
    queue::testing::{ClusterRedis, eventually},
    testing::unique_prefix,
};
use sqlx::PgPool;

use crate::order_stream::OrderDrill;

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn orders_survive_slots_moving_and_a_node_restarting(pool: PgPool) {
    let mut cluster = ClusterRedis::start_persistent(3);
    let prefix = unique_prefix("cluster");
    let mut drill = OrderDrill::start(
        &pool,
        &prefix,
        &[
            ("REDIS_MODE", "cluster".to_owned()),
            ("REDIS_URL", cluster.seeds()),
            ("RATE_LIMIT_STORE", "redis".to_owned()),
        ],
    )
    .await;
    let health: serde_json::Value = reqwest::get(format!("{}/health", drill.api()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["redis"]["status"], "up", "{health}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Move both queues' slots to other nodes while orders flow.
    let emails = format!("{prefix}:{{emails}}:ready");
    let webhooks = format!("{prefix}:{{webhooks}}:ready");
    let admin = cluster.admin();
    let moved_at = Instant::now();
    let moved_keys = tokio::task::spawn_blocking({
        let (emails, webhooks) = (emails.clone(), webhooks.clone());
        move || {
            let mut moved = 0;
            for key in [&emails, &webhooks] {
                let to = (admin.node_of(key) + 1) % 3;
                moved += admin.move_slot_of(key, to, 10);
            }
            moved
        }
    })
    .await
    .unwrap();
    let move_took = moved_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Kill the node now serving the email queue; a supervisor restarts it a second later.
    let victim = cluster.node_of(&emails);
    let killed_at = Instant::now();
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[victim].restart();
    let admin = cluster.admin();
    tokio::task::spawn_blocking(move || admin.wait_until_stable(Duration::from_secs(30)))
        .await
        .unwrap();
    let back_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let placed = drill.stop_ordering().await;
    assert!(
        placed.iter().any(|p| p.at < moved_at) && placed.iter().any(|p| p.at > killed_at),
        "orders were placed before the moves and after the kill"
    );
    let report = drill
        .every_order_delivered(&placed, Duration::from_secs(120))
        .await;
    let cache = drill.services.cache.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            cache.near_tracking_client_id().is_some()
        })
        .await,
        "the near cache tracks the cluster's primaries again"
    );
    eprintln!(
        "cluster drill: {} orders, {} refused attempts; {moved_keys} keys moved in {move_took:?}; \
         node {victim} killed, cluster whole again after {back_after:?}; {report}",
        placed.len(),
        drill.refused(),
    );
    drill.finish().await;
}
