//! Engine fixtures: a `QueueEngine` under a unique prefix (keys deleted on drop), and a private
//! Redis server for tests that stop and restart Redis.

#![allow(dead_code)]

use std::{process::{Child, Command, Stdio}, time::Duration};

use orderly::queue::{JobSpec, Priority, QueueEngine, Retention, RetryPolicy};
use redis::{Client, aio::ConnectionManager};
use uuid::Uuid;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
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
    let prefix = format!("qtest-{}", Uuid::new_v4().simple());
    let client = Client::open(url).unwrap();
    let manager = ConnectionManager::new_lazy_with_config(client.clone(), orderly::redis::manager_config()).unwrap();
    TestEngine {
        engine: QueueEngine::new(manager, client, &prefix, retention),
        prefix,
        url: url.to_owned(),
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        let Ok(client) = Client::open(self.url.as_str()) else { return };
        let Ok(mut conn) = client.get_connection() else { return };
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// A job on `queue` with payload `{"n": n}`, the given priority and id.
pub fn job(queue: &str, id: &str, priority: u8) -> JobSpec {
    JobSpec::new(queue, "test.job", serde_json::json!({ "id": id }))
        .with_id(id)
        .with_priority(Priority::new(priority))
        .with_retry(RetryPolicy::schedule(&[Duration::from_millis(50), Duration::from_millis(50)]))
}

/// A private redis-server on a free port, killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(client) = Client::open(self.url())
                && let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    /// Kills the server (like a crash: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 10 ms until it returns true or `limit` passes; returns the final result.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
