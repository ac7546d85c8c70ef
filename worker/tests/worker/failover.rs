//! The failover drill: the shop on a Redis primary with one replica and three Sentinels
//! (`REDIS_MODE=sentinel`, `REDIS_WAIT_REPLICAS=1`), orders placed continuously over HTTP, two
//! real `orderly-worker` processes sending confirmations to a real SMTP server and order webhooks
//! to a real receiver, and the primary killed with SIGKILL mid-run. The Sentinels promote the
//! replica, the api and the workers follow it, the killed server comes back as a replica (as a
//! supervisor would restart it), and every order placed gets exactly one confirmation email and
//! its webhook, within a bound the test prints.

use std::time::{Duration, Instant};

use orderly::{queue::testing::SentinelRedis, testing::unique_prefix};
use sqlx::PgPool;

use crate::order_stream::OrderDrill;

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_primary_killed_mid_run_loses_no_email_and_no_webhook(pool: PgPool) {
    let mut group = SentinelRedis::start("orderly");
    let mut drill = OrderDrill::start(
        &pool,
        &unique_prefix("failover"),
        &[
            ("REDIS_MODE", "sentinel".to_owned()),
            ("REDIS_URL", group.sentinel_urls().join(",")),
            ("REDIS_SENTINEL_MASTER", group.master.clone()),
            ("REDIS_WAIT_REPLICAS", "1".to_owned()),
            ("REDIS_WAIT_TIMEOUT_MS", "500".to_owned()),
        ],
    )
    .await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let old_primary = group.primary_port().expect("a primary");
    let killed_at = Instant::now();
    let killed = group.kill_primary();
    let probe = group.probe();
    let new_primary = tokio::task::spawn_blocking(move || {
        probe.wait_for_new_primary(old_primary, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .expect("the Sentinels promote the replica");
    let promoted_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A supervisor restarts the killed server as a replica of the new primary, so pushes are
    // confirmed by a replica again.
    group.restart_as_replica(killed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let placed = drill.stop_ordering().await;
    let before_kill = placed.iter().filter(|p| p.at < killed_at).count();
    assert!(before_kill > 0, "orders were placed before the kill");
    assert!(
        placed.iter().any(|p| p.at > killed_at + promoted_after),
        "orders were placed after the promotion"
    );

    // Every order: exactly one confirmation, and its webhook.
    let report = drill
        .every_order_delivered(&placed, Duration::from_secs(120))
        .await;
    // Delivery never waited longer than the failover, a replica-ack timeout and the relay's
    // grace and interval, with room for a loaded machine.
    let bound = Duration::from_secs(30);
    assert!(
        report.email_latency < bound && report.webhook_latency < bound,
        "a delivery took too long: {report}"
    );
    eprintln!(
        "failover drill: {} orders ({before_kill} before the kill), {} refused attempts; \
         primary {old_primary} killed, {new_primary} promoted after {promoted_after:?}; {report}",
        placed.len(),
        drill.refused(),
    );
    drill.finish().await;
}
