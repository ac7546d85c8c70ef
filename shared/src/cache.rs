//! A Redis read-through cache for repositories.
//!
//! Repositories are wrapped (`CachedProductRepository`, `CachedUserRepository`), services never
//! see the cache. Values are JSON with a TTL. A cache that fails (Redis down, bad entry) is
//! treated as a miss and logged, never as an error: the database is the truth and stays reachable.
//!
//! Lists that cannot be invalidated key by key (catalogue pages) use a *generation*: the page key
//! includes a counter that every write bumps, so old pages are never read again and expire alone.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};

/// A JSON cache in Redis under `<prefix>:cache:`.
#[derive(Clone)]
pub struct Cache {
    redis: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Cache {
    /// A cache whose keys start with `<prefix>:cache:`.
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:cache:"),
        }
    }

    /// The full Redis key for a cache key (tests look entries up with it).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Reads an entry; a miss, a Redis error or an undecodable entry all return `None`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let mut redis = self.redis.clone();
        let raw: Option<Vec<u8>> = match redis.get(self.key(key)).await {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed; reading the database instead");
                return None;
            }
        };
        match serde_json::from_slice(&raw?) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(%error, key, "cache entry undecodable; ignoring it");
                None
            }
        }
    }

    /// Stores an entry for `ttl`. Failures are logged and ignored.
    pub async fn set<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let mut redis = self.redis.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut redis)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, key, "cache write failed");
        }
    }

    /// Removes entries. Failures are logged: the TTL bounds how long a stale entry can live.
    pub async fn invalidate(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut redis = self.redis.clone();
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        if let Err(error) = redis.del::<_, ()>(full).await {
            tracing::warn!(%error, ?keys, "cache invalidation failed; entries expire by TTL");
        }
    }

    /// The current generation of a group of entries (0 when unknown or unreachable).
    pub async fn generation(&self, group: &str) -> u64 {
        let mut redis = self.redis.clone();
        redis
            .get::<_, Option<u64>>(self.key(&format!("gen:{group}")))
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Moves a group to a new generation, so every entry keyed with the old one is never read again.
    pub async fn bump_generation(&self, group: &str) {
        let mut redis = self.redis.clone();
        if let Err(error) = redis
            .incr::<_, _, u64>(self.key(&format!("gen:{group}")), 1)
            .await
        {
            tracing::warn!(%error, group, "cache generation bump failed; pages expire by TTL");
        }
    }
}
