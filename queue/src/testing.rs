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

/// A lazy connection to the one Redis at `url`, with redis-rs's default reconnection settings.
pub fn connection(url: &str) -> crate::RedisConnection {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    crate::RedisConnection::single(client, redis::aio::ConnectionManagerConfig::new())
        .expect("a lazy connection")
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

/// Sessions of the current database waiting on a lock in a statement whose text starts with
/// `statement` (case-insensitive): how a test sees its work held behind a row it locked.
pub async fn lock_waiters<'e>(db: impl sqlx::PgExecutor<'e>, statement: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and wait_event_type = 'Lock' and starts_with(lower(query), lower($1))",
    )
    .bind(statement)
    .fetch_one(db)
    .await
    .expect("pg_stat_activity read")
}

/// Waits until `count` sessions wait on a lock in a statement starting with `statement` (see
/// [`lock_waiters`]), watching on `conn`; panics after 10 s.
pub async fn until_lock_waiters(conn: &mut sqlx::PgConnection, statement: &str, count: i64) {
    let reached = eventually(Duration::from_secs(10), async || {
        lock_waiters(&mut *conn, statement).await >= count
    })
    .await;
    assert!(
        reached,
        "{count} sessions never waited on a lock in `{statement}...`"
    );
}

/// Polls `check` every 10 ms until it returns true or `limit` passes; returns the last answer.
/// `check` may borrow mutably what it reads (a connection) from one poll to the next.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
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
    /// More `redis-server` arguments (a cluster node's settings).
    extra_args: Vec<String>,
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
        Self::launch_with(persistent, free_port(), Vec::new())
    }

    fn launch_with(persistent: bool, port: u16, extra_args: Vec<String>) -> Self {
        // A folder of its own even without persistence: a replica writes the primary's
        // snapshot to its working folder, which must not be the test's.
        let dir = Some(tempfile::tempdir().expect("temp dir"));
        let mut redis = Self {
            port,
            dir,
            persistent,
            extra_args,
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
        self.restart_with(&[]);
    }

    /// Starts the server (again) on the same port as a replica of the server on
    /// `primary_port`, and waits until it answers. This is how a supervisor should bring back a
    /// server that keeps nothing on disk under Sentinel: restarted as a primary it would be an
    /// empty primary for a moment, and a failover in that moment (a loaded machine makes one
    /// likely with a short `down-after-milliseconds`) would promote it and wipe every replica
    /// that syncs from it. Redis's own Sentinel guide warns against exactly that.
    pub fn restart_as_replica_of(&mut self, primary_port: u16) {
        self.restart_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ]);
    }

    fn restart_with(&mut self, more_args: &[String]) {
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
        command.args(&self.extra_args).args(more_args);
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

    /// Stops the process without ending it (SIGSTOP): it neither answers nor replicates until
    /// [`Self::resume`], like a server cut off by the network.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("a running server")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill is installed");
        assert!(status.success(), "kill {signal} {pid}");
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

/// A primary, one replica and three Sentinels watching them as `master`, each a private process
/// on a free port, all killed when dropped. Sentinels decide a server is down after 1 s without
/// an answer and need two of three to agree, as a small production group would (with a shorter
/// timeout, so drills do not wait 30 s).
pub struct SentinelRedis {
    /// The name the Sentinels watch the primary under.
    pub master: String,
    /// The two data servers; either may be the primary after a failover.
    pub servers: [PrivateRedis; 2],
    sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl SentinelRedis {
    /// Starts the group and waits until every Sentinel knows the primary, the replica and the
    /// other two Sentinels (they find each other through the primary, which takes a few seconds).
    pub fn start(master: &str) -> Self {
        let servers = [PrivateRedis::start(), PrivateRedis::start()];
        Self::blocking_command(
            &servers[1].url(),
            &["REPLICAOF", "127.0.0.1", &servers[0].port.to_string()],
        );
        // Sentinels learn of replicas from the primary's INFO, which they read at once and
        // then every 10 s: the link must be up before they start.
        let linked = (0..400).any(|_| {
            let info = Self::try_command(&servers[1].url(), &["INFO", "replication"]);
            let up = info
                .and_then(|info| redis::from_redis_value::<String>(info).ok())
                .is_some_and(|info| info.contains("master_link_status:up"));
            if !up {
                std::thread::sleep(Duration::from_millis(25));
            }
            up
        });
        assert!(linked, "the replica did not link to the primary");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut group = Self {
            master: master.to_owned(),
            servers,
            sentinel_ports: Vec::new(),
            sentinels: Vec::new(),
            _dir: dir,
        };
        for index in 0..3 {
            let port = free_port();
            let config = group._dir.path().join(format!("sentinel-{index}.conf"));
            // Sentinels rewrite their configuration file as they learn, so each has its own.
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                     dir {dir}\n\
                     sentinel monitor {master} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 10000\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir = group._dir.path().display(),
                    primary = group.servers[0].port,
                ),
            )
            .expect("sentinel configuration written");
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            group.sentinels.push(child);
            group.sentinel_ports.push(port);
        }
        let ready = (0..1200).any(|_| {
            let all_ready = group.sentinel_ports.iter().all(|port| {
                let url = format!("redis://127.0.0.1:{port}");
                let replicas = Self::try_command(&url, &["SENTINEL", "REPLICAS", master]);
                let peers = Self::try_command(&url, &["SENTINEL", "SENTINELS", master]);
                matches!(replicas, Some(redis::Value::Array(r)) if r.len() == 1)
                    && matches!(peers, Some(redis::Value::Array(p)) if p.len() == 2)
            });
            if !all_ready {
                std::thread::sleep(Duration::from_millis(50));
            }
            all_ready
        });
        assert!(
            ready,
            "the Sentinels did not find the replica and each other"
        );
        group
    }

    /// The Sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// A handle that asks the Sentinels who the primary is, which can move to another thread.
    pub fn probe(&self) -> SentinelProbe {
        SentinelProbe {
            master: self.master.clone(),
            sentinel_urls: self.sentinel_urls(),
        }
    }

    /// The port of the server the Sentinels name as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.probe().primary_port()
    }

    /// Which of [`Self::servers`] listens on `port`.
    pub fn server_on(&self, port: u16) -> usize {
        self.servers
            .iter()
            .position(|server| server.port == port)
            .expect("one of the group's servers")
    }

    /// Kills the current primary with SIGKILL; returns its index in [`Self::servers`].
    pub fn kill_primary(&mut self) -> usize {
        let port = self.primary_port().expect("the Sentinels name a primary");
        let index = self.server_on(port);
        self.servers[index].kill();
        index
    }

    /// Waits until the Sentinels name a primary other than `old_port` that answers as one;
    /// returns its port, or `None` after `limit`.
    pub fn wait_for_new_primary(&self, old_port: u16, limit: Duration) -> Option<u16> {
        self.probe().wait_for_new_primary(old_port, limit)
    }

    /// Brings a killed server back as a supervisor should: as a replica of the primary the
    /// Sentinels name now (see [`PrivateRedis::restart_as_replica_of`]). The Sentinels then
    /// count it as a replica again, and it takes over the primary's data.
    pub fn restart_as_replica(&mut self, index: usize) {
        let primary = self.primary_port().expect("the Sentinels name a primary");
        assert_ne!(
            primary, self.servers[index].port,
            "the server to restart is not the primary"
        );
        self.servers[index].restart_as_replica_of(primary);
    }

    fn try_command(url: &str, args: &[&str]) -> Option<redis::Value> {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn).ok()
    }

    fn blocking_command(url: &str, args: &[&str]) -> redis::Value {
        Self::try_command(url, args).unwrap_or_else(|| panic!("{args:?} on {url} failed"))
    }
}

/// Asks a [`SentinelRedis`] group's Sentinels who the primary is (blocking calls: from async
/// code, move it into `spawn_blocking`).
#[derive(Debug, Clone)]
pub struct SentinelProbe {
    master: String,
    sentinel_urls: Vec<String>,
}

impl SentinelProbe {
    /// The port of the server the Sentinels name as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinel_urls.iter().find_map(|url| {
            let answer = SentinelRedis::try_command(
                url,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master.as_str()],
            )?;
            let (_, port): (String, String) = redis::from_redis_value(answer).ok()?;
            port.parse().ok()
        })
    }

    /// Waits until the Sentinels name a primary other than `old_port` that answers as one;
    /// returns its port, or `None` after `limit`.
    pub fn wait_for_new_primary(&self, old_port: u16, limit: Duration) -> Option<u16> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(port) = self.primary_port().filter(|port| *port != old_port)
                && let Some(redis::Value::Array(role)) =
                    SentinelRedis::try_command(&format!("redis://127.0.0.1:{port}"), &["ROLE"])
                && matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            {
                return Some(port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for SentinelRedis {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of private servers, each a primary with its slots (no replicas), on free
/// ports with their cluster bus on other free ports; killed when dropped. Nodes decide a peer
/// is down after `cluster-node-timeout` (5 s here), so a node restarted within that is never
/// failed, as after a quick crash-and-restart in production. Its [`ClusterAdmin`] (what
/// `Deref` reaches) reads and moves slots.
pub struct ClusterRedis {
    /// The nodes, in the order they were created (node 0 took the lowest slots).
    pub nodes: Vec<PrivateRedis>,
    admin: ClusterAdmin,
}

impl std::ops::Deref for ClusterRedis {
    type Target = ClusterAdmin;
    fn deref(&self) -> &ClusterAdmin {
        &self.admin
    }
}

impl ClusterRedis {
    /// `primaries` nodes (at least 3, as `redis-cli --cluster create` requires), nothing on
    /// disk; waits until every node serves every slot.
    pub fn start(primaries: usize) -> Self {
        Self::launch(primaries, false, false)
    }

    /// As [`Self::start`], each node keeping an append-only file (fsync on every write), so a
    /// node killed and restarted comes back with its keys.
    pub fn start_persistent(primaries: usize) -> Self {
        Self::launch(primaries, true, false)
    }

    /// As [`Self::start`], with one replica per primary: nodes `0..primaries` are the
    /// primaries, the rest their replicas (see [`ClusterAdmin::replica_of`]); waits until every
    /// replica is in sync.
    pub fn start_with_replicas(primaries: usize) -> Self {
        Self::launch(primaries, false, true)
    }

    fn launch(primaries: usize, persistent: bool, replicas: bool) -> Self {
        let count = if replicas { primaries * 2 } else { primaries };
        let nodes: Vec<PrivateRedis> = (0..count)
            .map(|_| {
                let port = free_port();
                let bus = free_port();
                PrivateRedis::launch_with(
                    persistent,
                    port,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-node-timeout",
                        "5000",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
            })
            .collect();
        let admin = ClusterAdmin {
            ports: nodes.iter().map(|node| node.port).collect(),
        };
        let cluster = Self { nodes, admin };
        let nodes: Vec<String> = cluster
            .admin
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        redis_cli_cluster("create", |command| {
            command
                .args(&nodes)
                .args(["--cluster-replicas", if replicas { "1" } else { "0" }])
                .arg("--cluster-yes");
        });
        cluster.wait_until_stable(Duration::from_secs(30));
        if replicas {
            let synced = (0..600).any(|_| {
                let all = (primaries..count).all(|index| {
                    command(&cluster.admin.url(index), &["INFO", "replication"])
                        .and_then(|info| redis::from_redis_value::<String>(info).ok())
                        .is_some_and(|info| info.contains("master_link_status:up"))
                });
                if !all {
                    std::thread::sleep(Duration::from_millis(50));
                }
                all
            });
            assert!(synced, "the replicas did not sync with their primaries");
        }
        cluster
    }

    /// A handle that reads and moves slots, which can move to another thread.
    pub fn admin(&self) -> ClusterAdmin {
        self.admin.clone()
    }

    /// Kills node `index` with SIGKILL (a crash).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts node `index` again on its port, with its cluster configuration and (if
    /// persistent) its data, and waits until the cluster serves every slot again.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_until_stable(Duration::from_secs(30));
    }
}

/// The nodes of a [`ClusterRedis`], by port: what its slots are and who serves them, and the
/// moves an operator makes (blocking calls: from async code, use `spawn_blocking`).
#[derive(Debug, Clone)]
pub struct ClusterAdmin {
    ports: Vec<u16>,
}

impl ClusterAdmin {
    /// The nodes' URLs, comma-separated (what `REDIS_URL` holds in cluster mode).
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[index])
    }

    /// The port of node `index`.
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// A connection to the cluster through all its nodes, with the timeouts the project's
    /// processes use.
    pub fn connection(&self) -> crate::RedisConnection {
        let urls = self.urls();
        let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
        let servers = crate::RedisServers::cluster(&seeds).expect("valid seed URLs");
        crate::RedisConnection::lazy(
            &servers,
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5))),
        )
        .expect("a lazy cluster connection")
    }

    /// The node that replicates primary `index` (a cluster started with replicas).
    pub fn replica_of(&self, index: usize) -> usize {
        let primary_port = i64::from(self.ports[index]);
        (0..self.ports.len())
            .find(|&candidate| {
                let role: Option<Vec<redis::Value>> = command(&self.url(candidate), &["ROLE"])
                    .and_then(|role| redis::from_redis_value(role).ok());
                role.is_some_and(|role| {
                    matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"slave")
                        && role
                            .get(2)
                            .and_then(|port| redis::from_redis_value_ref::<i64>(port).ok())
                            == Some(primary_port)
                })
            })
            .unwrap_or_else(|| panic!("no replica of node {index}"))
    }

    /// `args` as one command on node `index`, over a connection of its own; `None` if it
    /// failed.
    pub fn on_node(&self, index: usize, args: &[&str]) -> Option<redis::Value> {
        command(&self.url(index), args)
    }

    /// Node `index`'s cluster id.
    pub fn node_id(&self, index: usize) -> String {
        let id = self
            .on_node(index, &["CLUSTER", "MYID"])
            .unwrap_or_else(|| panic!("CLUSTER MYID on node {index}"));
        redis::from_redis_value(id).expect("a node id")
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> i64 {
        command(&self.url(0), &["CLUSTER", "KEYSLOT", key])
            .and_then(|slot| redis::from_redis_value(slot).ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// The node serving `key`'s slot, as node 0 sees it.
    pub fn node_of(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        let port = self
            .slot_owners()
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("every slot is served");
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("one of the cluster's nodes")
    }

    /// The lowest slot node `index` serves.
    pub fn first_slot(&self, index: usize) -> i64 {
        let port = self.ports[index];
        self.slot_owners()
            .into_iter()
            .filter(|(_, _, owner)| *owner == port)
            .map(|(first, _, _)| first)
            .min()
            .expect("the node serves slots")
    }

    /// `(first slot, last slot, port of the primary)` per slot range, as node 0 sees them.
    fn slot_owners(&self) -> Vec<(i64, i64, u16)> {
        let slots = command(&self.url(0), &["CLUSTER", "SLOTS"]).expect("CLUSTER SLOTS");
        let ranges: Vec<redis::Value> = redis::from_redis_value(slots).expect("slot ranges");
        ranges
            .into_iter()
            .filter_map(|range| {
                let fields: Vec<redis::Value> = redis::from_redis_value(range).ok()?;
                let first: i64 = redis::from_redis_value_ref(fields.first()?).ok()?;
                let last: i64 = redis::from_redis_value_ref(fields.get(1)?).ok()?;
                let primary: Vec<redis::Value> =
                    redis::from_redis_value_ref(fields.get(2)?).ok()?;
                let port: u16 = redis::from_redis_value_ref(primary.get(1)?).ok()?;
                Some((first, last, port))
            })
            .collect()
    }

    /// Moves the slot of `key` from the node serving it to node `to`, keys and all, the way
    /// `redis-cli --cluster reshard` does (`SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` in
    /// batches of `batch` keys, `SETSLOT NODE` everywhere), so a test controls which slot
    /// moves and how many keys each `MIGRATE` takes. Returns how many keys moved.
    pub fn move_slot_of(&self, key: &str, to: usize, batch: usize) -> usize {
        let from = self.node_of(key);
        assert_ne!(from, to, "the slot is already on node {to}");
        let (source, target) = (self.url(from), self.url(to));
        let slot = self.slot_of(key).to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let ok = |url: &str, args: &[&str]| {
            command(url, args).unwrap_or_else(|| panic!("{args:?} on {url} failed"));
        };
        ok(
            &target,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        );
        ok(&source, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let to_port = self.ports[to].to_string();
        let mut moved = 0;
        loop {
            let keys: Vec<String> = command(
                &source,
                &["CLUSTER", "GETKEYSINSLOT", &slot, &batch.to_string()],
            )
            .and_then(|keys| redis::from_redis_value(keys).ok())
            .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "10000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            ok(&source, &migrate);
            moved += keys.len();
            // Commands get in between batches, as they do during a reshard of a big slot.
            std::thread::sleep(Duration::from_millis(5));
        }
        ok(&target, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        ok(&source, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        for index in 0..self.ports.len() {
            if index != from && index != to {
                ok(
                    &self.url(index),
                    &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id],
                );
            }
        }
        moved
    }

    /// Runs `redis-cli --cluster reshard`: `slots` of node `from`'s slots (its lowest first)
    /// to node `to`, `pipeline` keys per `MIGRATE`.
    pub fn reshard(&self, from: usize, to: usize, slots: usize, pipeline: usize) {
        redis_cli_cluster("reshard", |command| {
            command
                .arg(format!("127.0.0.1:{}", self.ports[0]))
                .args(["--cluster-from", &self.node_id(from)])
                .args(["--cluster-to", &self.node_id(to)])
                .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
                .args(["--cluster-pipeline", &pipeline.to_string()]);
        });
    }

    /// Waits until every node says the cluster is ok and serves every slot.
    pub fn wait_until_stable(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let ok = (0..self.ports.len()).all(|index| {
                command(&self.url(index), &["CLUSTER", "INFO"])
                    .and_then(|info| redis::from_redis_value::<String>(info).ok())
                    .is_some_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_ok:16384")
                            && info.contains(&format!("cluster_known_nodes:{}", self.ports.len()))
                    })
            });
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not settle within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `redis-cli --cluster <action>` with the arguments `args` adds, and fails the test with
/// its output unless it succeeds.
fn redis_cli_cluster(action: &str, args: impl FnOnce(&mut Command)) {
    let mut command = Command::new("redis-cli");
    command.args(["--cluster", action]);
    args(&mut command);
    let output = command.output().expect("redis-cli is installed");
    assert!(
        output.status.success(),
        "redis-cli --cluster {action} failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// One command on the server at `url` over a short-lived connection; `None` if it failed.
fn command(url: &str, args: &[&str]) -> Option<redis::Value> {
    SentinelRedis::try_command(url, args)
}

/// Keeps a copy of every outbox row written from now on in `outbox_written`, a table of the
/// same shape, for tests that assert on what a transaction staged: the outbox deletes a row as
/// soon as its job is pushed, so the row itself may be gone by the time the test looks. Safe to
/// call more than once on one database (several api instances over one test database).
pub async fn keep_outbox_copies(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    // One transaction, so two instances starting together do not race on the definitions.
    let mut tx = pool.begin().await?;
    for statement in [
        "select pg_advisory_xact_lock(hashtextextended('outbox_written', 0))",
        "create table if not exists outbox_written (like outbox)",
        "create or replace function copy_written_outbox_row() returns trigger language plpgsql \
         as $$ begin insert into outbox_written select new.*; return null; end $$",
        "create or replace trigger copy_written_outbox_rows after insert on outbox \
         for each row execute function copy_written_outbox_row()",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}
