//! Live workers: each worker process writes a heartbeat (host, pid, queues, concurrency, start
//! time, running jobs) every few seconds and removes it on exit. The dashboard lists them; an
//! entry whose process died without saying goodbye disappears after three missed heartbeats.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::engine::QueueEngine;

/// How often a worker writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// One worker process as it last reported itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique id of this process (`host:pid:random`).
    pub id: String,
    /// The machine's host name, so an operator can find the process.
    pub host: String,
    /// The operating system's process id on `host`.
    pub pid: u32,
    /// Every queue this process claims from, one backend each.
    pub queues: Vec<String>,
    /// Jobs run at once per queue.
    pub concurrency: usize,
    /// Start time, ms since the epoch.
    pub started_at_ms: i64,
    /// Jobs leased right now, across its queues.
    pub running: usize,
    /// Time of this heartbeat, ms since the epoch.
    pub last_heartbeat_ms: i64,
}

impl QueueEngine {
    // Both under the `{workers}` hash tag: the registry's reads and writes pair the two, and on
    // a Redis Cluster one slot holds them all.
    fn workers_key(&self) -> String {
        format!("{}:{{workers}}:all", self.prefix())
    }

    fn worker_key(&self, id: &str) -> String {
        format!("{}:{{workers}}:w:{id}", self.prefix())
    }

    /// Writes a heartbeat.
    pub async fn heartbeat(&self, info: &WorkerInfo) -> redis::RedisResult<()> {
        let json = serde_json::to_string(info).unwrap_or_default();
        let ttl_ms = (HEARTBEAT_EVERY * 3).as_millis() as u64;
        redis::pipe()
            .cmd("SET")
            .arg(self.worker_key(&info.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(self.workers_key(), &info.id, info.last_heartbeat_ms)
            .ignore()
            .query_async::<()>(&mut self.redis())
            .await
    }

    /// Removes a worker's heartbeat (clean exit).
    pub async fn deregister(&self, id: &str) -> redis::RedisResult<()> {
        redis::pipe()
            .del(self.worker_key(id))
            .ignore()
            .zrem(self.workers_key(), id)
            .ignore()
            .query_async::<()>(&mut self.redis())
            .await
    }

    /// Workers whose heartbeat is still fresh, oldest first; stale entries are pruned.
    pub async fn workers(&self) -> redis::RedisResult<Vec<WorkerInfo>> {
        let mut redis = self.redis();
        let cutoff =
            chrono::Utc::now().timestamp_millis() - (HEARTBEAT_EVERY * 3).as_millis() as i64;
        let _: () = redis
            .zrembyscore(self.workers_key(), "-inf", cutoff)
            .await?;
        let ids: Vec<String> = redis.zrange(self.workers_key(), 0, 999).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.worker_key(id)).collect();
        let values: Vec<Option<String>> = redis.mget(keys).await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }
}
