//! Where state lives: PostgreSQL (`DatabaseConfig`), Redis (`RedisConfig`) and the read-through
//! cache kept in it (`CacheConfig`).

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Source, millis, secs, url_with_scheme};

/// PostgreSQL pool settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection URL (`DATABASE_URL`, required).
    pub url: SecretString,
    /// Pool ceiling (`DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Connections kept open when idle (`DATABASE_MIN_CONNECTIONS`).
    pub min_connections: u32,
    /// Longest wait for a free connection (`DATABASE_ACQUIRE_TIMEOUT_MS`).
    pub acquire_timeout: Duration,
    /// PgBouncer transaction pooling: no named prepared statements (`DATABASE_PGBOUNCER`).
    pub pgbouncer: bool,
}

impl DatabaseConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let url = url_with_scheme(
            "DATABASE_URL",
            env.required(
                "DATABASE_URL",
                "a postgres:// URL, e.g. postgres://postgres@127.0.0.1:5432/orderly",
            )?,
            &["postgres", "postgresql"],
        )?;
        Ok(Self {
            url,
            max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", 20)?,
            min_connections: env.parse_or("DATABASE_MIN_CONNECTIONS", 0)?,
            acquire_timeout: millis(env.parse_or("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?),
            pgbouncer: env.bool_or("DATABASE_PGBOUNCER", false)?,
        })
    }
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Connection URL (`REDIS_URL`, required).
    pub url: SecretString,
    /// Prefix of every key Orderly writes (`REDIS_PREFIX`), so several deployments or tests can
    /// share one Redis without seeing each other.
    pub prefix: String,
}

impl RedisConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let url = url_with_scheme(
            "REDIS_URL",
            env.required("REDIS_URL", "a redis:// URL, e.g. redis://127.0.0.1:6379")?,
            &["redis", "rediss", "redis+unix", "unix"],
        )?;
        Ok(Self {
            url,
            prefix: env.raw("REDIS_PREFIX").unwrap_or_else(|| "orderly".into()),
        })
    }
}

/// Redis read-through cache lifetimes.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Lifetime of entries that carry prices and stock (`CACHE_TTL_SECS`, default 60).
    pub ttl: Duration,
    /// Lifetime of static configuration entries (`CACHE_STATIC_TTL_SECS`, default 24 h).
    pub static_ttl: Duration,
    /// Budget of the in-process near cache in front of Redis, in bytes of encoded entries
    /// (`CACHE_NEAR_MAX_BYTES`, default 16 MiB; 0 turns it off).
    pub near_max_bytes: usize,
}

impl CacheConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: secs(env.parse_or("CACHE_TTL_SECS", 60)?),
            static_ttl: secs(env.parse_or("CACHE_STATIC_TTL_SECS", 86_400)?),
            near_max_bytes: env.parse_or("CACHE_NEAR_MAX_BYTES", 16 * 1024 * 1024)?,
        })
    }
}
