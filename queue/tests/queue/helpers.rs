//! Engine fixtures: a `QueueEngine` under a unique prefix whose keys are deleted on drop, a job
//! spec maker, and a check that a pool has its connections back. Private Redis servers and
//! polling come from `orderly_queue::testing`.

#![allow(dead_code)]

use std::time::Duration;

use orderly_queue::RedisConnection;
pub use orderly_queue::testing::{PrivateRedis, eventually};
use orderly_queue::{
    JobSpec, Priority, QueueEngine, Retention, RetryPolicy,
    testing::{delete_prefix, redis_url, unique_prefix},
};
use redis::{Client, aio::ConnectionManagerConfig};

/// Reconnection with short timeouts and capped backoff, as an application would configure it
/// (the tests restart private Redis servers under a running engine).
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

/// An engine under its own prefix; its keys are deleted when it is dropped.
pub struct TestEngine {
    pub engine: QueueEngine,
    pub prefix: String,
    pub url: String,
}

impl std::ops::Deref for TestEngine {
    type Target = QueueEngine;
    fn deref(&self) -> &QueueEngine {
        &self.engine
    }
}

pub async fn engine() -> TestEngine {
    engine_with(Retention::default()).await
}

pub async fn engine_with(retention: Retention) -> TestEngine {
    engine_at(&redis_url(), retention).await
}

pub async fn engine_at(url: &str, retention: Retention) -> TestEngine {
    let prefix = unique_prefix("qtest");
    let client = Client::open(url).unwrap();
    let redis = RedisConnection::single(client, connection_config()).unwrap();
    TestEngine {
        engine: QueueEngine::new(redis, &prefix, retention),
        prefix,
        url: url.to_owned(),
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// A job on `queue` with the given id and priority, retried twice 50 ms apart.
pub fn job(queue: &str, id: &str, priority: u8) -> JobSpec {
    JobSpec::new(queue, "test.job", serde_json::json!({ "id": id }))
        .with_id(id)
        .with_priority(Priority::new(priority))
        .with_retry(RetryPolicy::schedule(&[
            Duration::from_millis(50),
            Duration::from_millis(50),
        ]))
}

/// Asserts that every connection of `pool` is back in it soon after a pause in the work that
/// held one across gaps ([`orderly_queue::KEEP_CONNECTION_IDLE`]).
pub async fn assert_every_connection_comes_back(pool: &sqlx::PgPool) {
    let returned = eventually(orderly_queue::KEEP_CONNECTION_IDLE * 20, async || {
        pool.num_idle() == pool.size() as usize
    })
    .await;
    assert!(
        returned,
        "{} of {} connections idle",
        pool.num_idle(),
        pool.size()
    );
}
