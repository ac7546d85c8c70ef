//! The Redis connection shared by the cache, the rate limiter and the queue engine.
//!
//! One multiplexed connection per process carries all non-blocking traffic (commands from many
//! tasks are pipelined on one socket) and reconnects by itself after Redis restarts; in sentinel
//! mode it follows the primary across failovers, and on a Redis Cluster it sends each command
//! to the node that serves its key (see `orderly_queue::connection`). Blocking
//! reads (the queue's idle wait) and replica waits get connections of their own to the same
//! servers.

use std::time::Duration;

use orderly_queue::{RedisConnection, RedisServers};
use redis::aio::ConnectionManagerConfig;
use secrecy::ExposeSecret;

use crate::config::{RedisConfig, RedisMode};

/// Where the configured servers are (no I/O yet).
pub fn servers(config: &RedisConfig) -> redis::RedisResult<RedisServers> {
    let url = config.url.expose_secret();
    match &config.mode {
        RedisMode::Single => RedisServers::single(url),
        RedisMode::Sentinel { master } => {
            let sentinels: Vec<&str> = url.split(',').map(str::trim).collect();
            RedisServers::sentinel(&sentinels, master)
        }
        RedisMode::Cluster => {
            let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
            RedisServers::cluster(&nodes)
        }
    }
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

/// A connection that connects on first use, so a process can start while Redis is down.
pub fn connect_lazy(config: &RedisConfig) -> redis::RedisResult<RedisConnection> {
    RedisConnection::lazy(&servers(config)?, manager_config())
}
