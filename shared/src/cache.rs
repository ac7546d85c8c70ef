//! A Redis read-through cache for repositories.
//!
//! Repositories are wrapped (`CachedProductRepository`, `CachedUserRepository`), services never
//! see the cache. Values are JSON with a TTL. A cache that fails (Redis down, bad entry) is
//! treated as a miss and logged, never as an error: the database is the truth and stays reachable.
//!
//! Entries of rows that change often under concurrent readers (a product's stock) are written
//! with a *version* ([`Cache::set_versioned`]): a write lands only if the cached copy is older,
//! so a reader that fetched a row before a change committed cannot overwrite the fresh copy the
//! change stored after its commit.
//!
//! Lists that cannot be invalidated key by key (catalogue pages) use a *generation*: the page key
//! includes a counter that every write bumps, so old pages are never read again and expire alone.
//!
//! In front of Redis sits an optional [near cache](near) of decoded values inside the process,
//! which Redis itself keeps coherent (it pushes an invalidation for every change under the cache
//! prefix). A hot entry then costs no round trip and no decode.

mod near;

use std::{sync::Arc, time::Duration};

use orderly_queue::RedisConnection;
use redis::AsyncCommands;
use serde::{Serialize, de::DeserializeOwned};

use self::near::NearCache;

/// Longest life of a near entry whose Redis key has no TTL (page generations). Invalidations
/// drop it much sooner when it changes; this only bounds what an undetected outage could cost.
const NEAR_MAX_AGE: Duration = Duration::from_secs(60);

/// Sets `KEYS[1]` to `ARGV[2]` for `ARGV[3]` ms unless it holds a JSON object whose `version` is
/// at least `ARGV[1]`. Returns 1 when written.
const SET_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    local held = tonumber(decoded['version'])
    if held and held >= tonumber(ARGV[1]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// A JSON cache in Redis under `<prefix>:cache:`, optionally with a near cache in front.
#[derive(Clone)]
pub struct Cache {
    redis: RedisConnection,
    prefix: String,
    near: Option<Arc<NearCache>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.prefix)
            .field("near", &self.near)
            .finish()
    }
}

impl Cache {
    /// A cache whose keys start with `<prefix>:cache:`, Redis only.
    pub fn new(redis: RedisConnection, prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:cache:"),
            near: None,
        }
    }

    /// A cache with a near cache of at most about `near_max_bytes` in front of Redis, whose
    /// changes Redis reports on a connection of its own to the same primary. Starts a background
    /// task, so it must run inside a tokio runtime. Until that connection is up, reads go to
    /// Redis.
    pub fn with_near(redis: RedisConnection, prefix: &str, near_max_bytes: usize) -> Self {
        let mut cache = Self::new(redis.clone(), prefix);
        if near_max_bytes > 0 {
            let near = Arc::new(NearCache::new(near_max_bytes));
            near::spawn_tracking(&near, redis, cache.prefix.clone());
            cache.near = Some(near);
        }
        cache
    }

    /// Whether the near cache is serving entries (its change feed from Redis is up); `false`
    /// when there is no near cache. For tests and diagnostics.
    pub fn near_is_live(&self) -> bool {
        self.near.as_ref().is_some_and(|near| near.is_live())
    }

    /// Whether the near cache holds `key` (a cache key, without the prefix). For tests.
    pub fn near_holds(&self, key: &str) -> bool {
        self.near
            .as_ref()
            .is_some_and(|near| near.contains(&self.key(key)))
    }

    /// Redis client id of the connection that carries the near cache's change feed, if it is up.
    /// Operators find it in `CLIENT LIST`; tests kill it to simulate an outage.
    pub fn near_tracking_client_id(&self) -> Option<i64> {
        self.near
            .as_ref()
            .and_then(|near| near.tracking_client_id())
    }

    /// The full Redis key for a cache key (tests look entries up with it).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Reads an entry, from the near cache when it holds it, else from Redis (and then keeps it
    /// near until it changes or expires in Redis); a miss, a Redis error or an undecodable entry
    /// all return `None`.
    pub async fn get<T>(&self, key: &str) -> Option<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let full_key = self.key(key);
        let ticket = match &self.near {
            Some(near) => {
                if let Some(value) = near.get::<T>(&full_key) {
                    metrics::counter!("orderly_cache_reads_total", "tier" => "near").increment(1);
                    return Some(value);
                }
                near.ticket(&full_key)
            }
            None => None,
        };
        let mut redis = self.redis.clone();
        // With a ticket, the entry's remaining life comes in the same round trip, so the near
        // copy never outlives the Redis one.
        let read: redis::RedisResult<(Option<Vec<u8>>, i64)> = if ticket.is_some() {
            redis::pipe()
                .get(&full_key)
                .pttl(&full_key)
                .query_async(&mut redis)
                .await
        } else {
            redis.get(&full_key).await.map(|raw| (raw, -2))
        };
        let (raw, ttl_ms) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed; reading the database instead");
                return None;
            }
        };
        let Some(raw) = raw else {
            metrics::counter!("orderly_cache_reads_total", "tier" => "miss").increment(1);
            return None;
        };
        let value: T = match serde_json::from_slice(&raw) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, key, "cache entry undecodable; ignoring it");
                return None;
            }
        };
        metrics::counter!("orderly_cache_reads_total", "tier" => "redis").increment(1);
        if let (Some(near), Some(ticket)) = (&self.near, ticket) {
            // -1: no TTL in Redis; -2: the key vanished between GET and PTTL.
            let ttl = match ttl_ms {
                -1 => Some(NEAR_MAX_AGE),
                ms if ms > 0 => Some(Duration::from_millis(ms as u64).min(NEAR_MAX_AGE)),
                _ => None,
            };
            if let Some(ttl) = ttl {
                near.fill(ticket, &full_key, value.clone(), raw.len(), ttl);
            }
        }
        Some(value)
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

    /// Stores `value`, whose JSON has a `version` field equal to `version`, for `ttl`, unless the
    /// cache holds that version or a newer one. This process's near copy goes at once (it reads
    /// its own writes); other processes drop theirs when Redis reports the change. Failures are
    /// logged and ignored.
    pub async fn set_versioned<T: Serialize>(
        &self,
        key: &str,
        version: i64,
        value: &T,
        ttl: Duration,
    ) {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(SET_IF_NEWER));
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let full_key = self.key(key);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result: redis::RedisResult<i64> = SCRIPT
            .key(&full_key)
            .arg(version)
            .arg(bytes)
            .arg(ttl_ms)
            .invoke_async(&mut self.redis.clone())
            .await;
        match result {
            Ok(_) => {
                if let Some(near) = &self.near {
                    near.evict(&full_key);
                }
            }
            Err(error) => tracing::warn!(%error, key, "cache write failed"),
        }
    }

    /// Removes entries. Failures are logged: the TTL bounds how long a stale entry can live.
    /// This process's near copies go at once (it reads its own writes); other processes drop
    /// theirs when Redis reports the `DEL`.
    pub async fn invalidate(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut redis = self.redis.clone();
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        if let Err(error) = redis.del::<_, ()>(&full).await {
            tracing::warn!(%error, ?keys, "cache invalidation failed; entries expire by TTL");
        }
        // After the DEL, not before: a copy another task read from Redis before the DEL and is
        // about to keep is refused too, without waiting for Redis's own notice to arrive.
        if let Some(near) = &self.near {
            for key in &full {
                near.evict(key);
            }
        }
    }

    /// The current generation of a group of entries (0 when unknown or unreachable). Kept near
    /// like any entry (the counter is a JSON number), so a cached page costs no Redis read.
    pub async fn generation(&self, group: &str) -> u64 {
        self.get::<u64>(&format!("gen:{group}")).await.unwrap_or(0)
    }

    /// Moves a group to a new generation, so every entry keyed with the old one is never read again.
    pub async fn bump_generation(&self, group: &str) {
        let key = self.key(&format!("gen:{group}"));
        let mut redis = self.redis.clone();
        let bumped = redis.incr::<_, _, u64>(&key, 1).await;
        // After the INCR, for the same reason as in `invalidate`.
        if let Some(near) = &self.near {
            near.evict(&key);
        }
        if let Err(error) = bumped {
            tracing::warn!(%error, group, "cache generation bump failed; pages expire by TTL");
        }
    }
}
