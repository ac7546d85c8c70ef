//! The Redis connection shared by the cache, the rate limiter and the queue engine.
//!
//! One multiplexed [`ConnectionManager`] per process carries all non-blocking traffic (commands
//! from many tasks are pipelined on one socket) and reconnects by itself after Redis restarts.
//! Blocking reads (the queue's idle wait) get their own connection, see `queue::engine`.

use std::time::Duration;

use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use secrecy::ExposeSecret;

use crate::config::RedisConfig;

/// Opens a client for the configured URL (no I/O yet).
pub fn client(config: &RedisConfig) -> redis::RedisResult<Client> {
    Client::open(config.url.expose_secret())
}

/// Settings for the shared connection: short timeouts (a stuck Redis must not hang requests)
/// and reconnection with capped exponential backoff. (The queue crate's tests use the same.)
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

/// A connection manager that connects on first use, so a process can start while Redis is down.
pub fn connect_lazy(config: &RedisConfig) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(client(config)?, manager_config())
}
