//! Test support for the queue engine and for applications built on it (the `test-support`
//! feature, never in release builds): the Redis the tests use, unique key prefixes and their
//! cleanup, bounded polling, free ports, and a private redis-server for tests that stop and
//! restart Redis.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The Redis the tests use (`REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test uses.
pub fn unique_prefix(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// Deletes every key under `prefix` on the Redis at `url` (synchronous, so it can run in `Drop`).
pub fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Polls `check` every 10 ms until it returns true or `limit` passes; returns the last answer.
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

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private redis-server on a free port, killed when dropped. With `persistent`, it keeps an
/// append-only file (fsync on every write) in a temporary folder, like a production Redis that
/// must not lose queued jobs across a restart.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    dir: Option<tempfile::TempDir>,
    persistent: bool,
    child: Option<Child>,
}

impl PrivateRedis {
    /// A server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A server with an append-only file.
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Self {
        // A folder of its own even without persistence: a replica writes the primary's
        // snapshot to its working folder, which must not be the test's.
        let dir = Some(tempfile::tempdir().expect("temp dir"));
        let persistent_dir = persistent;
        let mut redis = Self {
            port: free_port(),
            dir,
            persistent: persistent_dir,
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
        if let Some(dir) = &self.dir {
            command.arg("--dir").arg(dir.path());
        }
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..400 {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    /// Kills the server at once (SIGKILL: no goodbye, like a crash).
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
