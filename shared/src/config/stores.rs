//! Where state lives: PostgreSQL (`DatabaseConfig`), Redis (`RedisConfig`) and the read-through
//! cache kept in it (`CacheConfig`).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

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
    /// Orders for one product an api process sends to PostgreSQL at once, each in a statement
    /// of its own (orders of several products, or every order when
    /// `order_statements_in_flight` is `0`); the others wait in line in the api
    /// (`ORDERS_IN_FLIGHT_PER_PRODUCT`, `0` for no line; see `products::stock_queue`).
    pub orders_in_flight_per_product: usize,
    /// Statements placing orders an api process has in flight at once; orders placed while all
    /// are busy wait and go together in the next (`ORDER_STATEMENTS_IN_FLIGHT`, `0` to send
    /// every order in a statement of its own; see `queue::group_commit`). One by default, which
    /// makes the largest groups; docs/performance.md compares it with more.
    pub order_statements_in_flight: usize,
    /// Most orders one such statement carries (`ORDERS_PER_STATEMENT`, 128). The statement's
    /// text is the same however many it carries (`queue::Writes::combine`), so one plan serves
    /// every size, and a burst of orders goes in one statement instead of waiting for several
    /// in turn; the cap only bounds how much one statement writes (docs/performance.md).
    pub orders_per_statement: usize,
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
        // It turned sqlx's statement cache off, believing that made sqlx stop naming its
        // prepared statements. It does not (sqlx 0.8 names every statement and, with the cache
        // off, never closes them), and a transaction-mode PgBouncer then fails at random under
        // load with "prepared statement sqlx_s_1 already exists" (seen through Debian's 1.18).
        env.retired(
            "DATABASE_PGBOUNCER",
            "remove it; behind a PgBouncer in transaction mode use PgBouncer 1.21 or later with \
             max_prepared_statements set (e.g. 200), which carries sqlx's named prepared \
             statements across server connections, or use session mode",
        )?;
        Ok(Self {
            url,
            max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", 20)?,
            min_connections: env.parse_or("DATABASE_MIN_CONNECTIONS", 0)?,
            acquire_timeout: millis(env.parse_or("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?),
            orders_in_flight_per_product: env.parse_or("ORDERS_IN_FLIGHT_PER_PRODUCT", 4)?,
            order_statements_in_flight: env.parse_or("ORDER_STATEMENTS_IN_FLIGHT", 1)?,
            orders_per_statement: env.parse_or("ORDERS_PER_STATEMENT", 128)?,
        })
    }
}

/// How the Redis servers are laid out (`REDIS_MODE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server at `REDIS_URL` (`single`, the default).
    Single,
    /// A primary and its replicas watched by Sentinels (`sentinel`): `REDIS_URL` lists the
    /// Sentinels, comma-separated, and every process follows the primary they name as
    /// `master` (`REDIS_SENTINEL_MASTER`) across failovers.
    Sentinel {
        /// The name the Sentinels watch the primary under.
        master: String,
    },
    /// A Redis Cluster (`cluster`): `REDIS_URL` lists seed nodes, comma-separated (any of them
    /// will do; the others are learned from the cluster).
    Cluster,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Connection URL (`REDIS_URL`, required); in sentinel mode the Sentinels' URLs, in cluster
    /// mode the seed nodes' URLs, separated by commas.
    pub url: SecretString,
    /// One server, Sentinels or a cluster (`REDIS_MODE`).
    pub mode: RedisMode,
    /// Prefix of every key Orderly writes (`REDIS_PREFIX`), so several deployments or tests can
    /// share one Redis without seeing each other.
    pub prefix: String,
    /// Replicas that must hold an outbox push before its row counts as dispatched
    /// (`REDIS_WAIT_REPLICAS`, default 0: the primary's word is enough). With 1 or more, a
    /// failover that loses writes the old primary acknowledged loses no job: the rows of pushes
    /// not yet replicated stay undispatched and the relay pushes them again.
    pub wait_replicas: u32,
    /// How long a push waits for those replicas (`REDIS_WAIT_TIMEOUT_MS`, default 500, at most
    /// 4000, under the connection's 5 s response timeout).
    pub wait_timeout: Duration,
}

impl RedisConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let mode = match env
            .raw("REDIS_MODE")
            .map(|mode| mode.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("single") => RedisMode::Single,
            Some("sentinel") => RedisMode::Sentinel {
                master: env.required(
                    "REDIS_SENTINEL_MASTER",
                    "the master name the Sentinels watch (their `sentinel monitor <name> ...`)",
                )?,
            },
            Some("cluster") => RedisMode::Cluster,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "REDIS_MODE",
                    reason: format!("expected single, sentinel or cluster, got {other:?}"),
                });
            }
        };
        let url = match &mode {
            RedisMode::Single => url_with_scheme(
                "REDIS_URL",
                env.required("REDIS_URL", "a redis:// URL, e.g. redis://127.0.0.1:6379")?,
                &["redis", "rediss", "redis+unix", "unix"],
            )?,
            RedisMode::Sentinel { .. } => redis_urls(
                env,
                "the Sentinels' redis:// URLs separated by commas, e.g. \
                 redis://10.0.0.1:26379,redis://10.0.0.2:26379,redis://10.0.0.3:26379",
                |_| Ok(()),
            )?,
            RedisMode::Cluster => redis_urls(
                env,
                "cluster nodes' redis:// URLs separated by commas, e.g. \
                 redis://10.0.0.1:6379,redis://10.0.0.2:6379,redis://10.0.0.3:6379",
                |url| {
                    use redis::IntoConnectionInfo;
                    let database = url
                        .into_connection_info()
                        .map(|info| info.redis_settings().db());
                    match database {
                        Ok(0) => Ok(()),
                        Ok(_) => Err(ConfigError::Invalid {
                            name: "REDIS_URL",
                            reason: "a Redis Cluster has only database 0; drop the database \
                                     from the node URLs"
                                .into(),
                        }),
                        // No URL text in the reason: it may hold a password.
                        Err(_) => Err(ConfigError::Invalid {
                            name: "REDIS_URL",
                            reason: "a node URL is not a valid redis:// URL".into(),
                        }),
                    }
                },
            )?,
        };
        let wait_timeout = millis(env.parse_or("REDIS_WAIT_TIMEOUT_MS", 500)?);
        if wait_timeout.is_zero() || wait_timeout > Duration::from_secs(4) {
            return Err(ConfigError::Invalid {
                name: "REDIS_WAIT_TIMEOUT_MS",
                reason: "must be between 1 and 4000 (ms)".into(),
            });
        }
        let wait_replicas = env.parse_or("REDIS_WAIT_REPLICAS", 0)?;
        Ok(Self {
            url,
            mode,
            prefix: env.raw("REDIS_PREFIX").unwrap_or_else(|| "orderly".into()),
            wait_replicas,
            wait_timeout,
        })
    }
}

/// `REDIS_URL` as a comma-separated list of redis:// or rediss:// URLs, each also passing
/// `check`.
fn redis_urls(
    env: &Source<'_>,
    hint: &'static str,
    check: impl Fn(&str) -> Result<(), ConfigError>,
) -> Result<SecretString, ConfigError> {
    let urls = env.required("REDIS_URL", hint)?;
    for url in urls.split(',') {
        let url = url_with_scheme("REDIS_URL", url.trim().to_owned(), &["redis", "rediss"])?;
        check(url.expose_secret())?;
    }
    Ok(SecretString::from(urls))
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
