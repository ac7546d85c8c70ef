//! Per-client rate limiting with GCRA (the generic cell rate algorithm), behind one trait with
//! two stores: process memory (one api instance) and Redis (one budget shared by all instances,
//! updated by an atomic Lua script).
//!
//! GCRA keeps one number per client, the "theoretical arrival time" (TAT): each request pushes it
//! forward by one emission interval (`60 s / per_minute`); a request is refused while the TAT is
//! more than `burst` intervals ahead of now. This allows `burst` requests at once and
//! `per_minute` sustained, with no counters to reset and exact `Retry-After` values.
//!
//! [`AttemptLimiter`] is the other kind of budget: a fixed number of attempts per key and window,
//! in Redis, spent before costly work and given back on success (failed logins per account).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use orderly_queue::RedisConnection;
use redis::Script;

/// A budget: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Quota {
    fn interval_ms(&self) -> i64 {
        (60_000 / i64::from(self.per_minute.max(1))).max(1)
    }

    fn tolerance_ms(&self) -> i64 {
        self.interval_ms() * i64::from(self.burst.max(1))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u32,
    /// Until the budget is fully restored.
    pub reset_after: Duration,
    /// When refused: how long until a request would be accepted.
    pub retry_after: Duration,
}

fn decide(tat: Option<i64>, now: i64, quota: &Quota) -> (Decision, Option<i64>) {
    let interval = quota.interval_ms();
    let tolerance = quota.tolerance_ms();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat - tolerance;
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset_after: ms(tat - now),
            retry_after: ms(allow_at - now),
        };
        return (decision, None);
    }
    let decision = Decision {
        allowed: true,
        remaining: u32::try_from((tolerance - (new_tat - now)) / interval).unwrap_or(0),
        reset_after: ms(new_tat - now),
        retry_after: Duration::ZERO,
    };
    (decision, Some(new_tat))
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// Where budgets are kept.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Spends one request of `key`'s budget, if there is one left.
    async fn check(&self, key: &str, quota: &Quota) -> Decision;
}

/// Budgets in process memory. Entries whose TAT has passed are swept as the map grows.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    state: Mutex<HashMap<String, i64>>,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn now_ms(&self) -> i64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        i64::try_from(epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Decision {
        let now = self.now_ms();
        let Ok(mut state) = self.state.lock() else {
            return Decision {
                allowed: true,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        if state.len() > 100_000 {
            state.retain(|_, tat| *tat > now);
        }
        let (decision, new_tat) = decide(state.get(key).copied(), now, quota);
        if let Some(tat) = new_tat {
            state.insert(key.to_owned(), tat);
        }
        decision
    }
}

/// Budgets in Redis, shared by every api instance.
#[derive(Clone)]
pub struct RedisRateLimiter {
    redis: RedisConnection,
    prefix: String,
    script: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .finish()
    }
}

const GCRA_LUA: &str = r"
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(new_tat - now, 1))
return {1, math.floor((tolerance - (new_tat - now)) / interval), new_tat - now, 0}
";

impl RedisRateLimiter {
    /// A limiter storing budgets under `<prefix>:rl:`.
    pub fn new(redis: RedisConnection, prefix: &str) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:rl:"),
            script: std::sync::Arc::new(Script::new(GCRA_LUA)),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: &Quota) -> Decision {
        let result: redis::RedisResult<(i64, i64, i64, i64)> = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(quota.interval_ms())
            .arg(quota.tolerance_ms())
            .invoke_async(&mut self.redis.clone())
            .await;
        match result {
            Ok((allowed, remaining, reset, retry)) => Decision {
                allowed: allowed == 1,
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset_after: ms(reset),
                retry_after: ms(retry),
            },
            Err(error) => {
                // Failing open: an unreachable Redis must not take the whole API down.
                tracing::warn!(%error, "rate limiter unavailable; allowing the request");
                Decision {
                    allowed: true,
                    remaining: 0,
                    reset_after: Duration::ZERO,
                    retry_after: Duration::ZERO,
                }
            }
        }
    }
}

/// A budget of attempts per key and window, shared by every process through Redis: each
/// attempt spends one before the work it guards starts, [`AttemptLimiter::clear`] gives the whole
/// budget back (after a success), and the budget refills when the window that began with the
/// first spent attempt ends. Spending first, in one atomic script, means concurrent attempts
/// cannot all slip through a check made before any of them was counted.
///
/// For guarding costly work that should only rarely fail (a password check): unlike the GCRA
/// budgets above, it refills all at once, not one request at a time.
#[derive(Clone)]
pub struct AttemptLimiter {
    redis: RedisConnection,
    prefix: String,
    max: u32,
    window: Duration,
    script: std::sync::Arc<Script>,
}

impl std::fmt::Debug for AttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("prefix", &self.prefix)
            .field("max", &self.max)
            .field("window", &self.window)
            .finish()
    }
}

/// Returns 0 when an attempt was spent, else the milliseconds until the budget refills.
const ATTEMPT_LUA: &str = r"
local max, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= max then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl <= 0 then
    redis.call('PEXPIRE', KEYS[1], window)
    ttl = window
  end
  return ttl
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
";

impl AttemptLimiter {
    /// `max` attempts per key and `window`, stored under `<prefix>:attempts:`.
    pub fn new(redis: RedisConnection, prefix: &str, max: u32, window: Duration) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:attempts:"),
            max,
            window,
            script: std::sync::Arc::new(Script::new(ATTEMPT_LUA)),
        }
    }

    /// Spends one attempt of `key`'s budget; `Err(retry_after)` when none is left.
    pub async fn attempt(&self, key: &str) -> Result<(), Duration> {
        let window_ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let result: redis::RedisResult<i64> = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(self.max)
            .arg(window_ms)
            .invoke_async(&mut self.redis.clone())
            .await;
        match result {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(ms(wait_ms)),
            Err(error) => {
                // Failing open, as the request limiter does: an unreachable Redis must not lock
                // everyone out. The work the budget guards is still bounded by its own limits.
                tracing::warn!(%error, "attempt limiter unavailable; allowing the attempt");
                Ok(())
            }
        }
    }

    /// Gives `key` its whole budget back.
    pub async fn clear(&self, key: &str) {
        let result: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "attempt limiter unavailable; budget not cleared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_recover() {
        let quota = Quota {
            per_minute: 60,
            burst: 3,
        };
        let mut tat = None;
        let mut now = 0;
        for expected_remaining in [2, 1, 0] {
            let (d, new) = decide(tat, now, &quota);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = new;
        }
        let (d, new) = decide(tat, now, &quota);
        assert!(!d.allowed);
        assert_eq!(new, None);
        assert_eq!(d.retry_after, Duration::from_secs(1));
        now += 1000;
        let (d, _) = decide(tat, now, &quota);
        assert!(d.allowed);
    }

    #[tokio::test]
    async fn memory_store_limits_per_key() {
        let limiter = MemoryRateLimiter::new();
        let quota = Quota {
            per_minute: 60,
            burst: 2,
        };
        assert!(limiter.check("a", &quota).await.allowed);
        assert!(limiter.check("a", &quota).await.allowed);
        assert!(!limiter.check("a", &quota).await.allowed);
        assert!(limiter.check("b", &quota).await.allowed);
    }
}
