//! The near cache: decoded cache entries kept inside the process, in front of Redis.
//!
//! A read served from Redis costs a round trip over TCP, Redis's own CPU and a JSON decode; on a
//! two-core machine that was most of what a cached product read cost (see docs/performance.md).
//! The near cache keeps the decoded value in memory, so a hot product or catalogue page is
//! answered without leaving the process.
//!
//! Staleness is the hard part of any per-process cache: an admin edit on one api instance must
//! not leave the others serving the old product. Redis solves it for us with server-assisted
//! client-side caching: a dedicated RESP3 connection runs `CLIENT TRACKING ON BCAST PREFIX
//! <prefix>:cache:`, and from then on *any* change to a key under the cache prefix (a `DEL` by an
//! invalidation on any instance, a refill, an `INCR` of a page generation, an expiry, an eviction,
//! an operator's `redis-cli`) pushes an `invalidate` message naming the key, and the entry is
//! dropped here. No instance has to remember to publish anything.
//!
//! Three rules keep it correct:
//! - **Served only while tracked.** Entries are used only while the tracking connection is up.
//!   When it drops (or a ping fails), every entry is discarded at once and reads go to Redis
//!   until a new connection tracks again: messages sent while it was down are lost, so nothing
//!   kept from before can be trusted.
//! - **No fill after an invalidation.** A reader takes a [`FillTicket`] (the key's shard epoch)
//!   before it asks Redis; an invalidation bumps the epoch, and a fill with an older ticket is
//!   refused. Otherwise a value read just before an edit could be stored just after the edit's
//!   invalidation arrived, and live on.
//! - **Never older than Redis.** An entry expires here when it would expire in Redis (its `PTTL`,
//!   read in the same round trip), so the documented bound on staleness (the cache TTL) holds.
//!
//! Cross-instance edits become visible after the invalidation message arrives (one Redis push,
//! well under a millisecond on a local network), not at the instant the edit commits; a process
//! that edits evicts its own entry synchronously, so it always reads its own writes.
//!
//! Memory is bounded by `CACHE_NEAR_MAX_BYTES` (the encoded size of the entries), split across
//! shards; a full shard drops its expired entries, then those closest to expiry.

use std::{
    any::Any,
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use orderly_queue::RedisConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::Notify;

/// Shards of the entry map: readers of different keys rarely wait on each other.
const SHARDS: usize = 32;
/// How often the tracking connection is pinged; a dead link that sends no error is noticed
/// within this plus [`TRACKING_TIMEOUT`], and the cache goes dark until it is back.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Connect and response timeout of the tracking connection.
const TRACKING_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts after a connection failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Wait before asking again a server that refused tracking.
const REFUSED_BACKOFF: Duration = Duration::from_secs(60);
/// Bookkeeping per entry beyond its encoded size (map slot, key, `Arc`, expiry).
const ENTRY_OVERHEAD: usize = 96;

/// Decoded entries of one process, kept while Redis tracks the cache prefix for it.
pub(crate) struct NearCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_bytes_per_shard: usize,
    /// Redis client id of the (first primary's) tracking connection while tracking is up, 0 when
    /// it is not (Redis numbers clients from 1). Entries are served and filled only while it is
    /// set.
    tracking_client_id: AtomicI64,
    /// Wakes the tracking task when the connection reports it is gone.
    lost: Arc<Notify>,
    /// Number of times tracking connections were opened (one per primary each time); the
    /// pushes of each time's connections carry its number.
    connections_opened: AtomicU64,
    /// Number of the tracking connections that made the cache live; a late disconnection notice
    /// from an older connection is ignored.
    current_connection: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Bumped by every invalidation of a key in this shard and every change of tracking state.
    epoch: u64,
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    expires_at: Instant,
    weight: usize,
}

/// Permission to fill one key, taken before the value is read from Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillTicket {
    shard: usize,
    epoch: u64,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("live", &self.is_live())
            .field("max_bytes", &(self.max_bytes_per_shard * SHARDS))
            .finish()
    }
}

impl NearCache {
    /// An empty, dark cache holding at most about `max_bytes` of entries.
    pub(crate) fn new(max_bytes: usize) -> Self {
        metrics::gauge!("orderly_cache_near_live").set(0.0);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_bytes_per_shard: (max_bytes / SHARDS).max(1),
            tracking_client_id: AtomicI64::new(0),
            lost: Arc::new(Notify::new()),
            connections_opened: AtomicU64::new(0),
            current_connection: AtomicU64::new(0),
        }
    }

    /// Whether entries are being served (the tracking connection is up).
    pub(crate) fn is_live(&self) -> bool {
        self.tracking_client_id.load(Ordering::Acquire) != 0
    }

    /// Redis client id of the tracking connection, when there is one.
    pub(crate) fn tracking_client_id(&self) -> Option<i64> {
        Some(self.tracking_client_id.load(Ordering::Acquire)).filter(|id| *id != 0)
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock leaves a consistent map (every mutation is one step),
        // so a poisoned lock is still usable.
        self.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry under the full Redis `key`, if live, present, unexpired and of type `T`.
    pub(crate) fn get<T: Clone + 'static>(&self, key: &str) -> Option<T> {
        if !self.is_live() {
            return None;
        }
        let shard = self.shard_of(key);
        let value = {
            let mut guard = self.lock(shard);
            let entry = guard.entries.get(key)?;
            if entry.expires_at <= Instant::now() {
                guard.remove(key);
                return None;
            }
            Arc::clone(&entry.value)
        };
        value.downcast_ref::<T>().cloned()
    }

    /// Whether `key` is held (tests and diagnostics; ignores expiry and liveness).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lock(self.shard_of(key)).entries.contains_key(key)
    }

    /// A ticket to fill `key` later; `None` while dark (nothing may be filled then).
    pub(crate) fn ticket(&self, key: &str) -> Option<FillTicket> {
        if !self.is_live() {
            return None;
        }
        let shard = self.shard_of(key);
        let epoch = self.lock(shard).epoch;
        Some(FillTicket { shard, epoch })
    }

    /// Stores `value` under `key` for `ttl`, unless the key was invalidated (or tracking changed)
    /// since `ticket` was taken. `encoded_len` is the entry's size in Redis, its weight here.
    pub(crate) fn fill<T: Send + Sync + 'static>(
        &self,
        ticket: FillTicket,
        key: &str,
        value: T,
        encoded_len: usize,
        ttl: Duration,
    ) {
        let weight = encoded_len + key.len() + ENTRY_OVERHEAD;
        if weight > self.max_bytes_per_shard || ttl.is_zero() || !self.is_live() {
            return;
        }
        let now = Instant::now();
        let mut guard = self.lock(ticket.shard);
        if guard.epoch != ticket.epoch {
            return;
        }
        guard.remove(key);
        guard.entries.insert(
            key.to_owned(),
            Entry {
                value: Arc::new(value),
                expires_at: now + ttl,
                weight,
            },
        );
        guard.bytes += weight;
        if guard.bytes > self.max_bytes_per_shard {
            guard.shrink(now, self.max_bytes_per_shard / 4 * 3);
        }
    }

    /// Drops `key` and refuses fills whose ticket predates this call.
    pub(crate) fn evict(&self, key: &str) {
        let mut guard = self.lock(self.shard_of(key));
        guard.epoch += 1;
        guard.remove(key);
    }

    /// Drops every entry and refuses every outstanding ticket.
    fn clear(&self) {
        for shard in 0..SHARDS {
            let mut guard = self.lock(shard);
            guard.epoch += 1;
            guard.entries.clear();
            guard.bytes = 0;
        }
    }

    /// Tracking is lost: stop serving and forget everything. Returns whether it was live.
    fn go_dark(&self) -> bool {
        let was_live = self.tracking_client_id.swap(0, Ordering::AcqRel) != 0;
        self.clear();
        metrics::gauge!("orderly_cache_near_live").set(0.0);
        if was_live {
            tracing::warn!("near cache: Redis tracking lost; serving from Redis until it is back");
        }
        was_live
    }

    /// Tracking (re)started on `connection`: invalidations from now on reach us, so entries may
    /// be served.
    fn go_live(&self, connection: u64, client_id: i64) {
        self.current_connection.store(connection, Ordering::Release);
        self.clear();
        debug_assert!(client_id != 0, "Redis client ids start at 1");
        self.tracking_client_id.store(client_id, Ordering::Release);
        metrics::gauge!("orderly_cache_near_live").set(1.0);
    }

    /// Handles a push from tracking connection number `connection`.
    fn on_push(&self, connection: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => {
                for value in push.data {
                    match value {
                        Value::Array(keys) => {
                            for key in keys {
                                if let Value::BulkString(bytes) = key {
                                    self.evict(&String::from_utf8_lossy(&bytes));
                                }
                            }
                        }
                        // A null key list means the whole keyspace was flushed.
                        Value::Nil => self.clear(),
                        _ => {}
                    }
                }
            }
            PushKind::Disconnection
                if self.current_connection.load(Ordering::Acquire) == connection =>
            {
                // Wake the tracking task only for a live connection: a notice that arrives after
                // the task gave the connection up itself must not leave a wake-up behind for the
                // next one.
                let was_live = self.go_dark();
                if was_live {
                    self.lost.notify_one();
                }
            }
            _ => {}
        }
    }
}

impl Shard {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.weight;
        }
    }

    /// Drops expired entries, then the ones closest to expiry, until at most `target` bytes.
    fn shrink(&mut self, now: Instant, target: usize) {
        self.entries.retain(|_, e| e.expires_at > now);
        self.bytes = self.entries.values().map(|e| e.weight).sum();
        if self.bytes <= target {
            return;
        }
        let mut by_expiry: Vec<(Instant, String)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.expires_at, k.clone()))
            .collect();
        by_expiry.sort_unstable();
        for (_, key) in by_expiry {
            if self.bytes <= target {
                break;
            }
            self.remove(&key);
        }
    }
}

/// Starts the task that keeps tracking connections for `near` open: it connects with RESP3 to
/// every primary `redis` reaches (one server, the primary the Sentinels name, or each primary
/// of a Redis Cluster; asked again on every reconnection, so it follows failovers), asks each to
/// track every key under `key_prefix`, pings, and reconnects with backoff. On a cluster it also
/// re-reads the slot map every [`TOPOLOGY_EVERY`] and starts over when the set of primaries
/// changed (a replica promoted, a shard added), since a primary nobody tracks would change
/// keys unseen. Resharding between primaries that are all tracked needs nothing: the node that
/// takes a slot over broadcasts its keys' changes like the one that gave it up. The task ends
/// when the cache is dropped. Must run inside a tokio runtime.
pub(crate) fn spawn_tracking(near: &Arc<NearCache>, redis: RedisConnection, key_prefix: String) {
    let weak = Arc::downgrade(near);
    let lost = Arc::clone(&near.lost);
    tokio::spawn(track(weak, lost, redis, key_prefix));
}

/// How often the tracking task compares a Redis Cluster's primaries with the ones it tracks:
/// the longest a newly promoted primary's changes can go unseen (within the cache TTL).
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);

/// RESP3 clients for every primary `redis` reaches now.
async fn tracking_clients(redis: &RedisConnection) -> redis::RedisResult<Vec<Client>> {
    redis
        .primaries()
        .await?
        .into_iter()
        .map(|client| {
            let info = client.get_connection_info().clone();
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            Client::open(info.set_redis_settings(resp3))
        })
        .collect()
}

fn addresses(clients: &[Client]) -> Vec<String> {
    let mut addresses: Vec<String> = clients
        .iter()
        .map(|client| client.get_connection_info().addr().to_string())
        .collect();
    addresses.sort();
    addresses
}

async fn track(
    near: Weak<NearCache>,
    lost: Arc<Notify>,
    redis: RedisConnection,
    key_prefix: String,
) {
    let mut backoff = Duration::from_millis(100);
    let check_every = if redis.is_cluster() {
        TOPOLOGY_EVERY
    } else {
        PING_EVERY
    };
    loop {
        let (tracked, connected) = match tracking_clients(&redis).await {
            Ok(clients) => (
                addresses(&clients),
                connect(&near, &clients, &key_prefix).await,
            ),
            Err(error) => (Vec::new(), Err(error)),
        };
        match connected {
            Ok(Some(mut connections)) => {
                backoff = Duration::from_millis(100);
                let mut last_ping = Instant::now();
                'tracking: loop {
                    tokio::select! {
                        () = tokio::time::sleep(check_every) => {}
                        () = lost.notified() => break,
                    }
                    if near.strong_count() == 0 {
                        return;
                    }
                    if last_ping.elapsed() >= PING_EVERY {
                        last_ping = Instant::now();
                        for connection in &mut connections {
                            let pong: redis::RedisResult<String> =
                                redis::cmd("PING").query_async(connection).await;
                            if let Err(error) = pong {
                                tracing::warn!(%error, "near cache: tracking connection ping failed");
                                break 'tracking;
                            }
                        }
                    }
                    if redis.is_cluster() {
                        match redis.primaries().await.map(|now| addresses(&now)) {
                            Ok(now) if now != tracked => {
                                tracing::warn!(
                                    before = ?tracked,
                                    ?now,
                                    "near cache: the Redis Cluster's primaries changed; tracking them anew"
                                );
                                break;
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "near cache: cannot read the cluster's primaries");
                                break;
                            }
                        }
                    }
                }
                if let Some(near) = near.upgrade() {
                    let _ = near.go_dark();
                }
            }
            // The cache was dropped.
            Ok(None) => return,
            Err(error) => {
                // A server that answers but refuses (no RESP3, tracking not supported, an ACL
                // without `CLIENT`) will refuse again: ask rarely instead of every few seconds.
                let refused = !(error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped());
                let wait = if refused { REFUSED_BACKOFF } else { backoff };
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64,
                    "near cache: cannot track the cache keys; serving from Redis");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens a tracking connection to each of `clients` and marks the cache live once all of them
/// track; `None` when the cache is gone. The connections share one number, which their pushes
/// carry: a disconnection of any of them darkens the cache.
async fn connect(
    near: &Weak<NearCache>,
    clients: &[Client],
    key_prefix: &str,
) -> redis::RedisResult<Option<Vec<redis::aio::MultiplexedConnection>>> {
    let Some(connection_number) = near
        .upgrade()
        .map(|near| near.connections_opened.fetch_add(1, Ordering::AcqRel) + 1)
    else {
        return Ok(None);
    };
    let mut connections = Vec::with_capacity(clients.len());
    let mut first_client_id = None;
    for client in clients {
        let pushes = near.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TRACKING_TIMEOUT))
            .set_response_timeout(Some(TRACKING_TIMEOUT))
            .set_push_sender(move |push: PushInfo| {
                if let Some(near) = pushes.upgrade() {
                    near.on_push(connection_number, push);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut connection)
            .await?;
        let () = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(key_prefix)
            .query_async(&mut connection)
            .await?;
        first_client_id.get_or_insert(client_id);
        connections.push(connection);
    }
    let (Some(near), Some(client_id)) = (near.upgrade(), first_client_id) else {
        return Ok(None);
    };
    near.go_live(connection_number, client_id);
    tracing::debug!(
        client_id,
        key_prefix,
        primaries = clients.len(),
        "near cache: tracking"
    );
    Ok(Some(connections))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(max_bytes: usize) -> NearCache {
        let near = NearCache::new(max_bytes);
        near.go_live(1, 1);
        near
    }

    fn put(near: &NearCache, key: &str, value: &str) {
        let ticket = near.ticket(key).expect("live");
        near.fill(
            ticket,
            key,
            value.to_owned(),
            value.len(),
            Duration::from_secs(60),
        );
    }

    #[test]
    fn serves_what_was_filled_with_its_type() {
        let near = live(1 << 20);
        put(&near, "k", "v");
        assert_eq!(near.get::<String>("k").as_deref(), Some("v"));
        assert_eq!(near.get::<u64>("k"), None, "another type is a miss");
        assert_eq!(near.get::<String>("other"), None);
    }

    #[test]
    fn a_dark_cache_serves_and_fills_nothing_and_forgets_what_it_had() {
        let near = live(1 << 20);
        put(&near, "k", "v");
        assert!(near.go_dark());
        assert!(!near.go_dark(), "dark twice");
        assert_eq!(near.get::<String>("k"), None);
        assert!(near.ticket("k").is_none());
        near.go_live(2, 2);
        assert!(
            !near.contains("k"),
            "entries from before the outage survived it"
        );
    }

    #[test]
    fn a_fill_after_an_invalidation_of_its_key_is_refused() {
        let near = live(1 << 20);
        let ticket = near.ticket("k").unwrap();
        near.evict("k");
        near.fill(ticket, "k", "stale".to_owned(), 5, Duration::from_secs(60));
        assert!(!near.contains("k"), "a value read before the edit was kept");

        let ticket = near.ticket("k").unwrap();
        let _ = near.go_dark();
        near.go_live(2, 2);
        near.fill(ticket, "k", "stale".to_owned(), 5, Duration::from_secs(60));
        assert!(
            !near.contains("k"),
            "a ticket from before an outage was honoured"
        );
    }

    #[test]
    fn entries_expire() {
        let near = live(1 << 20);
        let ticket = near.ticket("k").unwrap();
        near.fill(ticket, "k", 1_u64, 1, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(near.get::<u64>("k"), None);
        assert!(!near.contains("k"), "an expired entry was read but kept");
    }

    #[test]
    fn invalidation_pushes_evict_keys_and_a_flush_clears_everything() {
        let near = live(1 << 20);
        put(&near, "a", "1");
        put(&near, "b", "2");
        near.on_push(
            1,
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(vec![Value::BulkString(b"a".to_vec())])],
            },
        );
        assert!(!near.contains("a"));
        assert!(near.contains("b"));
        near.on_push(
            1,
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
        );
        assert!(!near.contains("b"));
        assert!(near.is_live(), "a flush is not an outage");
        near.on_push(
            0,
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        );
        assert!(
            near.is_live(),
            "an older connection's disconnection ended tracking"
        );
        near.on_push(
            1,
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        );
        assert!(!near.is_live());
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let budget = 64 * 1024;
        let near = live(budget);
        let value = "x".repeat(500);
        for i in 0..1_000 {
            put(&near, &format!("key:{i}"), &value);
        }
        let held: usize = (0..SHARDS).map(|s| near.lock(s).bytes).sum();
        assert!(held <= budget, "{held} bytes held for a budget of {budget}");
        assert!(held > budget / 4, "the budget was barely used: {held}");
        let oversized = "y".repeat(budget);
        put(&near, "big", &oversized);
        assert!(
            !near.contains("big"),
            "an entry larger than a shard was kept"
        );
    }
}
