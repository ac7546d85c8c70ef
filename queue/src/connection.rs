//! How a process reaches Redis: one server, whichever server a set of Sentinels names as the
//! primary (followed across failovers), or a Redis Cluster.
//!
//! [`RedisConnection`] is what every Redis user in the project holds (the engine, the cache, the
//! rate limiter): a cheap clone of one multiplexed connection that pipelines the commands of many
//! tasks and reconnects by itself after a restart.
//!
//! On one server ([`RedisServers::Single`]) it is redis-rs's `ConnectionManager` and nothing
//! more: no extra allocation or lock on the command path.
//!
//! Behind Sentinels ([`RedisServers::Sentinel`]) it asks them for the primary on first use, and
//! moves when they name another one. It learns of a move two ways:
//! - a command fails the way a lost or demoted primary makes it fail (refused, dropped or
//!   timed-out connections; the `READONLY`, `MASTERDOWN` and `LOADING` answers of a server that
//!   is no longer, or not yet, the primary), which makes it ask again;
//! - a watcher asks one Sentinel every [`WATCH_EVERY`] which server is the primary, and every
//!   connection of the process moves on its next command once the answer changes. Without it, a
//!   primary demoted alive (a planned failover) keeps taking writes for the seconds until the
//!   Sentinels reconfigure it, and loses them when it resyncs from the new primary.
//!
//! The failed command's error still goes to its caller, which retries as after any Redis error
//! (the outbox relay, the workers' claim loop, a 503 to an HTTP client): nothing is re-sent here,
//! because a command whose reply was lost may have run. (The outbox's replicated producer
//! sends each push and its `WAIT` in one pipeline, so a move can never put them on two servers.)
//!
//! Lookups are shared: every connection of a process asks through one [`Sentinel`] client, and a
//! lookup made in the last [`LOOKUP_REUSE`] is reused, so a failover that fails hundreds of
//! commands at once costs the Sentinels a handful of questions.
//!
//! On a Redis Cluster ([`RedisServers::Cluster`]) it is redis-rs's cluster connection: one
//! multiplexed connection per node, each command sent to the node that serves its key's slot,
//! `MOVED` and `ASK` redirections followed (and the slot map refreshed) while slots move, and
//! lost nodes reconnected. Everything the project sends is single-slot by construction: a
//! queue's keys share its `{queue}` hash tag, the schedules share `{schedules}`, the worker
//! registry `{workers}`, a user's session keys `{<user id>}`, and every other command names one
//! key. Commands that are about servers rather than keys go where they mean something: `PING`
//! to every primary (so `/health` sees a lost shard), and a reader that needs every primary (the
//! near cache's tracking connections) asks for them with [`RedisConnection::primaries`].

use std::sync::{
    Arc, RwLock, Weak,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    sentinel::{Sentinel, SentinelNodeConnectionInfo},
};

/// How long a lookup's answer (a primary, or that none is known) stands for the next caller.
pub const LOOKUP_REUSE: Duration = Duration::from_millis(250);

/// Longest a lookup may take: every Sentinel asked, and the named primary's `ROLE` checked.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the watcher asks a Sentinel which server is the primary.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Where the Redis servers are.
#[derive(Clone)]
pub enum RedisServers {
    /// One server (or a proxy in front of several).
    Single(Client),
    /// A primary with replicas, found through Sentinels that watch them under one master name.
    Sentinel(Arc<Sentinels>),
    /// A Redis Cluster, found through any of the seed nodes (the rest are learned from them).
    Cluster(Arc<ClusterSeeds>),
}

/// Where to start looking for a Redis Cluster's nodes.
#[derive(Debug)]
pub struct ClusterSeeds {
    nodes: Vec<ConnectionInfo>,
}

impl std::fmt::Debug for RedisServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(client) => f
                .debug_tuple("Single")
                .field(&client.get_connection_info().addr().to_string())
                .finish(),
            Self::Sentinel(sentinels) => f
                .debug_struct("Sentinel")
                .field("master", &sentinels.master)
                .finish_non_exhaustive(),
            Self::Cluster(seeds) => f.debug_tuple("Cluster").field(&seeds.addresses()).finish(),
        }
    }
}

impl ClusterSeeds {
    fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    /// A cluster connection with `config`'s timeouts and retries; connects on first use.
    fn connect(&self, config: &ConnectionManagerConfig) -> RedisResult<ClusterConnection> {
        let mut builder = ClusterClientBuilder::new(self.nodes.clone())
            .retries(u32::try_from(config.number_of_retries()).unwrap_or(u32::MAX));
        let mut cluster_config = ClusterConfig::new();
        if let Some(timeout) = config.connection_timeout() {
            cluster_config = cluster_config.set_connection_timeout(timeout);
        }
        // Per attempt (the connection's setting) and for the whole call, redirections and
        // retries included (the builder's, which the connection's does not change).
        if let Some(timeout) = config.response_timeout() {
            builder = builder.response_timeout(timeout);
            cluster_config = cluster_config.set_response_timeout(timeout);
        }
        Ok(builder
            .build()?
            .get_pending_async_connection_with_config(cluster_config))
    }

    /// A client for the node at `host:port`, with the seeds' credentials.
    fn node_client(&self, host: String, port: u16) -> RedisResult<Client> {
        let seed = self.nodes[0].clone();
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Client::open(seed.set_addr(addr))
    }
}

impl RedisServers {
    /// One server at `url`.
    pub fn single(url: &str) -> RedisResult<Self> {
        Ok(Self::Single(Client::open(url)?))
    }

    /// The primary that the Sentinels at `sentinel_urls` watch as `master`.
    ///
    /// Each URL's credentials are used for its Sentinel; the first URL's user, password and
    /// database are also used for the primary the Sentinels name (Sentinels hold no database).
    pub fn sentinel(sentinel_urls: &[&str], master: &str) -> RedisResult<Self> {
        let mut sentinels: Vec<ConnectionInfo> = Vec::with_capacity(sentinel_urls.len());
        let mut node = None;
        for url in sentinel_urls {
            let info: ConnectionInfo = url.into_connection_info()?;
            let settings = info.redis_settings().clone();
            node.get_or_insert_with(|| settings.clone());
            sentinels.push(info.set_redis_settings(settings.set_db(0)));
        }
        let Some(node) = node else {
            return Err(RedisError::from((
                ErrorKind::EmptySentinelList,
                "no Sentinel address given",
            )));
        };
        Ok(Self::Sentinel(Arc::new(Sentinels {
            lookup: tokio::sync::Mutex::new(Lookup {
                sentinel: Sentinel::build(sentinels.clone())?,
                last: None,
            }),
            sentinels,
            known: RwLock::new(None),
            epoch: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            master: master.to_owned(),
            db: node.db(),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(node),
        })))
    }

    /// The Redis Cluster that the nodes at `seed_urls` belong to (any of its nodes will do; more
    /// than one lets a process start while one of them is down). The first URL's user and
    /// password are used for every node. A cluster has only database 0.
    pub fn cluster(seed_urls: &[&str]) -> RedisResult<Self> {
        let mut nodes: Vec<ConnectionInfo> = Vec::with_capacity(seed_urls.len());
        for url in seed_urls {
            let info: ConnectionInfo = url.into_connection_info()?;
            if info.redis_settings().db() != 0 {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a Redis Cluster has only database 0; drop the database from the node URLs",
                )));
            }
            nodes.push(info);
        }
        if nodes.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no Redis Cluster node given",
            )));
        }
        Ok(Self::Cluster(Arc::new(ClusterSeeds { nodes })))
    }
}

/// The Sentinels of one master name, and the last thing they said.
pub struct Sentinels {
    lookup: tokio::sync::Mutex<Lookup>,
    /// Where the Sentinels are (the watcher asks them one at a time).
    sentinels: Vec<ConnectionInfo>,
    /// The address of the primary the last successful lookup found.
    known: RwLock<Option<String>>,
    /// Bumped each time a lookup finds the primary at another address.
    epoch: AtomicU64,
    watching: AtomicBool,
    master: String,
    /// The database the primary's connections select.
    db: i64,
    node: SentinelNodeConnectionInfo,
}

struct Lookup {
    sentinel: Sentinel,
    last: Option<(Instant, RedisResult<Client>)>,
}

impl Sentinels {
    /// The current primary, asked of the Sentinels unless a lookup in the last [`LOOKUP_REUSE`]
    /// answered already (or `fresh` is set).
    async fn primary(self: &Arc<Self>, fresh: bool) -> RedisResult<Client> {
        self.watch();
        let mut lookup = self.lookup.lock().await;
        if let Some((at, answer)) = &lookup.last
            && at.elapsed() < LOOKUP_REUSE
            && !fresh
        {
            return answer.clone();
        }
        let Lookup { sentinel, .. } = &mut *lookup;
        let answer = match tokio::time::timeout(
            LOOKUP_TIMEOUT,
            sentinel.async_master_for(&self.master, Some(&self.node)),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "the Sentinels did not name a primary in time",
            ))),
        };
        match &answer {
            Ok(client) => {
                let address = client.get_connection_info().addr().to_string();
                let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
                if known.as_deref() != Some(address.as_str()) {
                    *known = Some(address);
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(error) => {
                tracing::warn!(master = %self.master, %error, "no Redis primary known to the Sentinels");
            }
        }
        lookup.last = Some((Instant::now(), answer.clone()));
        answer
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Starts the watcher once per process (it stops when the last connection is dropped).
    fn watch(self: &Arc<Self>) {
        if !self.watching.swap(true, Ordering::AcqRel) {
            tokio::spawn(watch(Arc::downgrade(self)));
        }
    }
}

/// Asks a Sentinel every [`WATCH_EVERY`] where the primary is (`SENTINEL
/// GET-MASTER-ADDR-BY-NAME`, one small command on a kept connection) and, when the answer differs
/// from the last lookup's, makes a full lookup, which moves every connection on its next command.
async fn watch(sentinels: Weak<Sentinels>) {
    let mut asking: Option<redis::aio::MultiplexedConnection> = None;
    let mut next = 0;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(group) = sentinels.upgrade() else {
            return;
        };
        if asking.is_none() {
            let info = group.sentinels[next % group.sentinels.len()].clone();
            next += 1;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            if let Ok(client) = Client::open(info)
                && let Ok(connection) = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            {
                asking = Some(connection);
            }
        }
        let Some(connection) = asking.as_mut() else {
            continue;
        };
        let named: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&group.master)
            .query_async(connection)
            .await;
        match named {
            Ok(Some((host, port))) => {
                let named = format!("{host}:{port}");
                let moved = group
                    .known
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_deref()
                    .is_some_and(|known| known != named);
                if moved {
                    let _ = group.primary(true).await;
                }
            }
            Ok(None) => {}
            // Ask the next Sentinel next time.
            Err(_) => asking = None,
        }
    }
}

/// A connection to the Redis primary; clones share it.
#[derive(Clone)]
pub struct RedisConnection(Link);

#[derive(Clone)]
enum Link {
    Single {
        manager: ConnectionManager,
        /// Shared, so that cloning a connection (once per engine call) allocates nothing.
        client: Arc<Client>,
    },
    Sentinel(Arc<Following>),
    Cluster {
        connection: ClusterConnection,
        seeds: Arc<ClusterSeeds>,
    },
}

/// A connection that follows the primary the Sentinels name.
struct Following {
    sentinels: Arc<Sentinels>,
    config: ConnectionManagerConfig,
    primary: RwLock<Option<Primary>>,
}

#[derive(Clone)]
struct Primary {
    /// Shared, so that taking the primary for a command (a clone) allocates nothing.
    address: Arc<str>,
    manager: ConnectionManager,
    /// The Sentinels' epoch this primary was found in.
    epoch: u64,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Link::Single { client, .. } => f
                .debug_tuple("RedisConnection")
                .field(&client.get_connection_info().addr().to_string())
                .finish(),
            Link::Sentinel(following) => f
                .debug_struct("RedisConnection")
                .field("master", &following.sentinels.master)
                .field("primary", &following.address())
                .finish(),
            Link::Cluster { seeds, .. } => f
                .debug_struct("RedisConnection")
                .field("cluster", &seeds.addresses())
                .finish(),
        }
    }
}

impl RedisConnection {
    /// A connection to `servers` that connects on first use, so a process can start while Redis
    /// is down.
    pub fn lazy(servers: &RedisServers, config: ConnectionManagerConfig) -> RedisResult<Self> {
        Ok(Self(match servers {
            RedisServers::Single(client) => Link::Single {
                manager: ConnectionManager::new_lazy_with_config(client.clone(), config)?,
                client: Arc::new(client.clone()),
            },
            RedisServers::Sentinel(sentinels) => Link::Sentinel(Arc::new(Following {
                sentinels: Arc::clone(sentinels),
                config,
                primary: RwLock::new(None),
            })),
            RedisServers::Cluster(seeds) => Link::Cluster {
                connection: seeds.connect(&config)?,
                seeds: Arc::clone(seeds),
            },
        }))
    }

    /// A lazy connection to the one server `client` names.
    pub fn single(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        Self::lazy(&RedisServers::Single(client), config)
    }

    /// Another connection to the same servers, opened now, with its own settings: for commands
    /// that must not share a socket with everything else (a blocking read, a `WAIT`).
    pub async fn dedicated(&self, config: ConnectionManagerConfig) -> RedisResult<Self> {
        match &self.0 {
            Link::Single { client, .. } => Ok(Self(Link::Single {
                manager: ConnectionManager::new_with_config(Client::clone(client), config).await?,
                client: Arc::clone(client),
            })),
            Link::Sentinel(following) => {
                let dedicated = Arc::new(Following {
                    sentinels: Arc::clone(&following.sentinels),
                    config,
                    primary: RwLock::new(None),
                });
                dedicated.locate().await?;
                Ok(Self(Link::Sentinel(dedicated)))
            }
            Link::Cluster { seeds, .. } => Ok(Self(Link::Cluster {
                connection: seeds.connect(&config)?,
                seeds: Arc::clone(seeds),
            })),
        }
    }

    /// Whether this is a connection to a Redis Cluster (where a command about servers, not
    /// keys, has no one server to go to).
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Link::Cluster { .. })
    }

    /// A client for every primary: the one server, the primary the Sentinels name now, or each
    /// primary of the cluster's slot map as one of its nodes describes it now (for connections
    /// this type cannot carry, like the near cache's RESP3 tracking connections). A cluster
    /// node whose slot map lists a primary without an address (a node being removed) is skipped.
    pub async fn primaries(&self) -> RedisResult<Vec<Client>> {
        let (connection, seeds) = match &self.0 {
            Link::Single { client, .. } => return Ok(vec![Client::clone(client)]),
            // Asked of the Sentinels (or a lookup of the last [`LOOKUP_REUSE`]), so a caller
            // that reconnects after a failure lands on the primary of the moment.
            Link::Sentinel(following) => {
                return Ok(vec![following.sentinels.primary(false).await?]);
            }
            Link::Cluster { connection, seeds } => (connection, seeds),
        };
        let slots = connection
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let mut addresses: Vec<(String, u16)> = Vec::new();
        let Value::Array(ranges) = slots else {
            return Err(RedisError::from((
                ErrorKind::Parse,
                "CLUSTER SLOTS did not answer with a list",
            )));
        };
        for range in ranges {
            // [first slot, last slot, [host, port, id, ...], replicas...]
            let Value::Array(fields) = range else {
                continue;
            };
            let Some(Value::Array(primary)) = fields.get(2) else {
                continue;
            };
            let host: Option<String> = primary
                .first()
                .and_then(|host| redis::from_redis_value_ref(host).ok());
            let port: Option<u16> = primary
                .get(1)
                .and_then(|port| redis::from_redis_value_ref(port).ok());
            if let (Some(host), Some(port)) = (host, port)
                && !host.is_empty()
                && !addresses.contains(&(host.clone(), port))
            {
                addresses.push((host, port));
            }
        }
        addresses.sort();
        addresses
            .into_iter()
            .map(|(host, port)| seeds.node_client(host, port))
            .collect()
    }

    async fn with_primary<T>(
        following: &Following,
        run: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut manager = following.primary().await?.manager;
        let result = run(&mut manager).await;
        if let Err(error) = &result
            && lost_primary(error)
        {
            // The caller gets the error either way; a failed lookup only means the next
            // command asks again.
            let _ = following.locate().await;
        }
        result
    }
}

impl Following {
    /// The primary to send to: the one this connection has, unless the Sentinels have named
    /// another since it was found.
    async fn primary(&self) -> RedisResult<Primary> {
        let current = self
            .primary
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        match current {
            Some(primary) if primary.epoch == self.sentinels.epoch() => Ok(primary),
            _ => self.locate().await,
        }
    }

    fn address(&self) -> Option<String> {
        let primary = self
            .primary
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        primary.as_ref().map(|primary| primary.address.to_string())
    }

    /// Asks who the primary is and moves there if it is not where this connection points.
    async fn locate(&self) -> RedisResult<Primary> {
        let client = self.sentinels.primary(false).await?;
        let epoch = self.sentinels.epoch();
        let address = client.get_connection_info().addr().to_string();
        let mut primary = self
            .primary
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(current) = primary.as_mut()
            && *current.address == *address
        {
            current.epoch = epoch;
            return Ok(current.clone());
        }
        let manager = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        match primary.as_ref() {
            Some(old) => tracing::warn!(
                master = %self.sentinels.master,
                from = %old.address,
                to = %address,
                "the Redis primary moved; following it"
            ),
            None => tracing::info!(
                master = %self.sentinels.master,
                primary = %address,
                "Redis primary found through the Sentinels"
            ),
        }
        let found = Primary {
            address: address.into(),
            manager,
            epoch,
        };
        *primary = Some(found.clone());
        Ok(found)
    }
}

/// Whether `error` is how a command fails on a primary that is gone or no longer the primary.
fn lost_primary(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Single { manager, .. } => manager.req_packed_command(cmd),
            Link::Cluster { connection, .. } => connection.req_packed_command(cmd),
            Link::Sentinel(following) => Box::pin(async move {
                Self::with_primary(following, async |manager| {
                    manager.req_packed_command(cmd).await
                })
                .await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Single { manager, .. } => manager.req_packed_commands(pipeline, offset, count),
            Link::Cluster { connection, .. } => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Link::Sentinel(following) => Box::pin(async move {
                Self::with_primary(following, async |manager| {
                    manager.req_packed_commands(pipeline, offset, count).await
                })
                .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Single { manager, .. } => manager.get_db(),
            Link::Sentinel(following) => following.sentinels.db,
            Link::Cluster { .. } => 0,
        }
    }
}
