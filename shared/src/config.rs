//! Typed configuration, read once from the environment (and `.env` in development).
//!
//! Every setting the api and the workers use is a field here, parsed and checked at start-up.
//! A missing or malformed variable stops the process before it binds a port or claims a job,
//! with one line that names the variable and says what is wrong ([`ConfigError`]).
//! `.env.example` at the repository root documents every variable with its default.
//!
//! Secrets (`DATABASE_URL`, `REDIS_URL`, `JWT_SECRET`, `SMTP_URL`) are [`SecretString`]s, so a
//! `{:?}` of the config, or a log line that prints it, shows `[REDACTED]` instead.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// A configuration problem, named after the variable that caused it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The environment variable.
        name: &'static str,
        /// What the variable should hold.
        hint: &'static str,
    },
    /// A variable is set but its value cannot be used.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        name: &'static str,
        /// Why the value was refused (never the value itself when it may be a secret).
        reason: String,
    },
}

/// Where the log lines go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production default: log shippers parse it).
    Json,
    /// Human-readable coloured text for a terminal.
    Pretty,
}

/// Which store keeps the rate-limit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitStore {
    /// Process memory: exact and fastest, but each api instance has its own budget.
    Memory,
    /// Redis: every api instance shares one budget per client.
    Redis,
}

/// The whole configuration of an Orderly process.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server settings (api only).
    pub http: HttpConfig,
    /// PostgreSQL pool settings.
    pub database: DatabaseConfig,
    /// Redis connection settings.
    pub redis: RedisConfig,
    /// Token signing and lifetimes.
    pub auth: AuthConfig,
    /// Log level and format.
    pub log: LogConfig,
    /// Redis read-through cache lifetimes.
    pub cache: CacheConfig,
    /// Per-client request budgets.
    pub rate_limit: RateLimitConfig,
    /// Queue engine and worker process settings.
    pub worker: WorkerConfig,
    /// Outgoing email.
    pub mail: MailConfig,
    /// Outgoing webhooks.
    pub webhooks: WebhookConfig,
    /// Where report files and uploads are kept.
    pub storage: StorageConfig,
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to bind (`HOST`, default `0.0.0.0`).
    pub host: IpAddr,
    /// Port to bind (`PORT`, default 8080; 0 picks a free port, as tests do).
    pub port: u16,
    /// Longest a request may take before it is cancelled (`HTTP_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Largest request body accepted, except uploads (`HTTP_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Origins allowed by CORS (`CORS_ALLOWED_ORIGINS`, comma-separated; `*` for any; empty for none).
    pub cors_allowed_origins: Vec<String>,
    /// How long in-flight requests may run after SIGTERM (`SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Longest a client may take to send a request's head, counted from the connection's accept
    /// for its first request and from the head's first byte for later ones
    /// (`HTTP_HEADER_READ_TIMEOUT_MS`, default 10 s): a client trickling header bytes cannot
    /// hold a connection.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a whole request body, counted from the end of its head
    /// (`HTTP_BODY_READ_TIMEOUT_MS`, default 20 s, under the request timeout so a slow body is a
    /// 408 rather than a 503). The upload route has its own.
    pub body_read_timeout: Duration,
    /// [`Self::body_read_timeout`] of the upload route, whose files are large
    /// (`HTTP_UPLOAD_BODY_READ_TIMEOUT_MS`, default 5 min).
    pub upload_body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request
    /// (`HTTP_KEEPALIVE_IDLE_SECS`, default 75; 0 closes every connection after one response).
    /// Longer than the idle timeout of a load balancer in front, so the balancer never sends a
    /// request on a connection the api is closing.
    pub keepalive_idle: Duration,
    /// Connections served at once (`HTTP_MAX_CONNECTIONS`, default 1024); past it, new
    /// connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// The proxies in front of the api (`TRUSTED_PROXIES`, comma-separated CIDRs; empty: none,
    /// the client is the connection's peer). Only when the peer is one of them is
    /// `X-Forwarded-For` read, from the right, and the client is the first address that is not
    /// one of them (left of it, anything could have been written by the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

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
    /// PgBouncer transaction pooling: no named prepared statements (`DATABASE_PGBOUNCER`).
    pub pgbouncer: bool,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Connection URL (`REDIS_URL`, required).
    pub url: SecretString,
    /// Prefix of every key Orderly writes (`REDIS_PREFIX`), so several deployments or tests can
    /// share one Redis without seeing each other.
    pub prefix: String,
}

/// Token signing and lifetimes.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 signing secret (`JWT_SECRET`, required), checked by [`check_secret`].
    pub jwt_secret: SecretString,
    /// `iss` claim written and required (`JWT_ISSUER`).
    pub jwt_issuer: String,
    /// `aud` claim written and required (`JWT_AUDIENCE`).
    pub jwt_audience: String,
    /// Access-token lifetime (`JWT_TTL_SECS`, at most [`MAX_ACCESS_TOKEN_TTL`]).
    pub jwt_ttl: Duration,
    /// Refresh-token lifetime (`JWT_REFRESH_TTL_SECS`): how long a client may stay logged in
    /// without presenting its password again, as long as it keeps rotating its refresh token.
    pub refresh_ttl: Duration,
}

/// Log level and format.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `RUST_LOG` filter directives (default `info`).
    pub filter: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub format: LogFormat,
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

/// Per-client request budgets (GCRA).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `RATE_LIMIT_STORE`: `memory` (default) or `redis`.
    pub store: RateLimitStore,
    /// Sustained requests per minute per client (`RATE_LIMIT_PER_MINUTE`; 0 disables limiting).
    pub per_minute: u32,
    /// Requests a client may send at once above the sustained rate (`RATE_LIMIT_BURST`).
    pub burst: u32,
    /// Login attempts per account and window, from any address, before logins of that account
    /// are refused until the window ends (`LOGIN_MAX_FAILURES`, default 5; 0 disables). A
    /// successful login gives them back.
    pub login_max_failures: u32,
    /// The window of `login_max_failures`, counted from the first failure
    /// (`LOGIN_FAILURE_WINDOW_SECS`, default 900).
    pub login_failure_window: Duration,
}

/// Queue engine and worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues this worker process serves, as listed in `WORKER_QUEUES` (comma-separated; empty:
    /// every queue). Configuration does not know which queues exist: the worker checks the
    /// names against the shop's job declarations (`jobs::queues_to_serve`) before it starts.
    pub queues: Vec<String>,
    /// Jobs run at once per queue in one process (`WORKER_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claimed job stays leased without renewal (`JOB_LEASE_MS`).
    pub lease: Duration,
    /// How long running jobs may finish after SIGTERM before they are put back (`WORKER_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Port of the worker's `/metrics` endpoint (`WORKER_METRICS_PORT`; unset disables it).
    pub metrics_port: Option<u16>,
    /// Completed jobs kept per queue for the dashboard (`QUEUE_COMPLETED_KEEP`).
    pub completed_keep: u64,
    /// Longest a completed job is kept (`QUEUE_COMPLETED_MAX_AGE_SECS`).
    pub completed_max_age: Duration,
    /// Dispatched outbox rows older than this are deleted (`OUTBOX_RETENTION_SECS`).
    pub outbox_retention: Duration,
}

/// Outgoing email.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// SMTP server in lettre's URL form (`SMTP_URL`, e.g. `smtp://127.0.0.1:2525`); unset writes `.eml` files.
    pub smtp_url: Option<SecretString>,
    /// Folder of `.eml` files when no SMTP server is configured (`MAIL_DIR`).
    pub mail_dir: PathBuf,
    /// Sender address (`MAIL_FROM`).
    pub from: String,
    /// Public base URL of the api, for links in emails (`PUBLIC_BASE_URL`).
    pub public_base_url: String,
    /// Delay before the first retry of a failed email (`EMAIL_RETRY_BASE_MS`); doubles per attempt.
    pub retry_base: Duration,
}

/// Outgoing webhooks.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Networks deliveries may reach even though they are private (`WEBHOOK_ALLOWLIST`,
    /// comma-separated CIDRs such as `127.0.0.0/8`; a bare address means just that address).
    /// Empty in production: only public addresses are reached.
    pub allowlist: Vec<ipnet::IpNet>,
    /// Longest a delivery attempt may take (`WEBHOOK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Delay before each retry (`WEBHOOK_RETRY_SCHEDULE`, comma-separated seconds).
    pub retry_schedule: Vec<Duration>,
}

/// File storage for reports and uploads.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// An object store URL (`STORAGE_URL`, e.g. `s3://bucket/prefix`); unset uses `dir`.
    pub url: Option<String>,
    /// Local folder used when no object store is configured (`STORAGE_DIR`).
    pub dir: PathBuf,
    /// Largest upload accepted (`UPLOAD_MAX_BYTES`).
    pub upload_max_bytes: usize,
}

/// Reads variables by name from some source (the process environment, or a map in tests),
/// turning absent and empty alike into `None`.
struct Source<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Source<F> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.raw(name).ok_or(ConfigError::Missing { name, hint })
    }

    fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not valid here ({e})"),
            }),
        }
    }

    fn bool_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a boolean (use true or false)"),
            }),
        }
    }

    /// Refuses a variable that is no longer read, unless it is set to a false value (which
    /// meant, and still means, the feature's default).
    fn retired(&self, name: &'static str, instead: &str) -> Result<(), ConfigError> {
        match self.raw(name).map(|v| v.to_ascii_lowercase()) {
            Some(v) if !matches!(v.as_str(), "0" | "false" | "no" | "off") => {
                Err(ConfigError::Invalid {
                    name,
                    reason: format!("is no longer supported: {instead}"),
                })
            }
            _ => Ok(()),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Refuses 0 for a limit where 0 would make the server refuse everything.
fn nonzero<T: Default + PartialEq>(name: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be more than 0".into(),
        });
    }
    Ok(value)
}

/// Parses a list of CIDRs (`10.0.0.0/8`, `::1/128`); a bare address stands for itself alone.
fn parse_networks(name: &'static str, listed: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    listed
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!("{item:?} is not a CIDR such as 127.0.0.0/8 or an IP address"),
                })
        })
        .collect()
}

/// Longest an access token may live (`JWT_TTL_SECS`): a revoked token is refused through Redis,
/// and this bounds how long one could outlive its revocation if Redis lost that state.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(86_400);

/// Longest a refresh token may live (`JWT_REFRESH_TTL_SECS`).
pub const MAX_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(90 * 86_400);

/// Secrets this repository has published as examples or defaults, refused by value: anyone who
/// read the repository could sign tokens with them.
const PUBLISHED_SECRETS: &[&str] = &[
    "dev-only-secret-change-me-dev-only-secret-change-me",
    "change-me-to-a-long-random-string-of-32-bytes",
    "0123456789abcdef0123456789abcdef",
];

/// Words that mark a value a person typed as a placeholder rather than a generated secret.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change",
    "secret",
    "example",
    "password",
    "default",
    "placeholder",
    "sample",
    "dummy",
    "test",
    "demo",
    "xxxx",
    "todo",
];

/// Refuses a signing secret that is short, published by this repository, a placeholder, or of
/// obviously low entropy (few distinct characters, or one short run repeated). The reason names
/// the rule, never the value.
pub fn check_secret(name: &'static str, secret: &str) -> Result<(), ConfigError> {
    let refuse = |reason: &str| {
        Err(ConfigError::Invalid {
            name,
            reason: format!("{reason}; generate one with `openssl rand -hex 32`"),
        })
    };
    if secret.len() < 32 {
        return refuse("must be at least 32 bytes long");
    }
    if PUBLISHED_SECRETS.contains(&secret) {
        return refuse("is an example value published in this repository");
    }
    let lowered = secret.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|w| lowered.contains(*w)) {
        return refuse(&format!(
            "contains {word:?}: it looks like a placeholder, not a random secret"
        ));
    }
    let bytes = secret.as_bytes();
    let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
    if distinct < 10 {
        return refuse("has too few distinct characters to be random");
    }
    let repeats_a_shorter_run =
        (1..=bytes.len() / 2).any(|period| bytes.iter().zip(&bytes[period..]).all(|(a, b)| a == b));
    if repeats_a_shorter_run {
        return refuse("is one short run of characters repeated");
    }
    Ok(())
}

fn url_with_scheme(
    name: &'static str,
    value: String,
    schemes: &[&str],
) -> Result<SecretString, ConfigError> {
    let scheme = value.split("://").next().unwrap_or_default();
    if !value.contains("://") || !schemes.contains(&scheme) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("expected a URL starting with {}://", schemes.join("://, ")),
        });
    }
    Ok(SecretString::from(value))
}

impl Config {
    /// Loads `.env` if there is one, then reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal (production); a malformed one is a configuration error.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError::Invalid {
                    name: ".env",
                    reason: e.to_string(),
                });
            }
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from the given variables only (tests use this, never the process environment).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Builds a config from any variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Source(lookup);

        let database_url = url_with_scheme(
            "DATABASE_URL",
            env.required(
                "DATABASE_URL",
                "a postgres:// URL, e.g. postgres://postgres@127.0.0.1:5432/orderly",
            )?,
            &["postgres", "postgresql"],
        )?;
        let redis_url = url_with_scheme(
            "REDIS_URL",
            env.required("REDIS_URL", "a redis:// URL, e.g. redis://127.0.0.1:6379")?,
            &["redis", "rediss", "redis+unix", "unix"],
        )?;
        let jwt_secret = SecretString::from(env.required(
            "JWT_SECRET",
            "a random string of at least 32 bytes (e.g. `openssl rand -hex 32`)",
        )?);
        check_secret("JWT_SECRET", jwt_secret.expose_secret())?;
        let jwt_ttl = secs(env.parse_or("JWT_TTL_SECS", 900)?);
        if jwt_ttl.is_zero() || jwt_ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(ConfigError::Invalid {
                name: "JWT_TTL_SECS",
                reason: format!(
                    "must be between 1 and {} seconds (access tokens are short-lived; clients \
                     renew them with the refresh token)",
                    MAX_ACCESS_TOKEN_TTL.as_secs()
                ),
            });
        }
        let refresh_ttl = secs(env.parse_or("JWT_REFRESH_TTL_SECS", 30 * 86_400)?);
        if refresh_ttl < jwt_ttl || refresh_ttl > MAX_REFRESH_TOKEN_TTL {
            return Err(ConfigError::Invalid {
                name: "JWT_REFRESH_TTL_SECS",
                reason: format!(
                    "must be at least JWT_TTL_SECS and at most {} seconds",
                    MAX_REFRESH_TOKEN_TTL.as_secs()
                ),
            });
        }

        let format = match env.raw("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    reason: format!("{other:?} is not json or pretty"),
                });
            }
        };
        let store = match env.raw("RATE_LIMIT_STORE").as_deref() {
            None | Some("memory") => RateLimitStore::Memory,
            Some("redis") => RateLimitStore::Redis,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "RATE_LIMIT_STORE",
                    reason: format!("{other:?} is not memory or redis"),
                });
            }
        };

        let queues = env.list("WORKER_QUEUES");
        let concurrency: usize = env.parse_or("WORKER_CONCURRENCY", 16)?;
        if concurrency == 0 || concurrency > 10_000 {
            return Err(ConfigError::Invalid {
                name: "WORKER_CONCURRENCY",
                reason: "must be between 1 and 10000".into(),
            });
        }
        let lease = millis(env.parse_or("JOB_LEASE_MS", 30_000)?);
        if lease < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                name: "JOB_LEASE_MS",
                reason: "must be at least 300 ms (leases are renewed every third of it)".into(),
            });
        }

        let retry_schedule = {
            let listed = env.list("WEBHOOK_RETRY_SCHEDULE");
            if listed.is_empty() {
                // The Standard Webhooks / Svix schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
                [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                    .into_iter()
                    .map(secs)
                    .collect()
            } else {
                listed
                    .iter()
                    .map(|s| {
                        s.parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .map(Duration::from_secs_f64)
                            .ok_or_else(|| ConfigError::Invalid {
                                name: "WEBHOOK_RETRY_SCHEDULE",
                                reason: format!("{s:?} is not a number of seconds"),
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };

        let smtp_url = env
            .raw("SMTP_URL")
            .map(|v| url_with_scheme("SMTP_URL", v, &["smtp", "smtps"]))
            .transpose()?;

        // TRUST_PROXY=true believed whatever a client wrote first in X-Forwarded-For.
        env.retired(
            "TRUST_PROXY",
            "set TRUSTED_PROXIES to the CIDRs of your proxies (e.g. TRUSTED_PROXIES=10.0.0.0/8) \
             and remove TRUST_PROXY",
        )?;
        let login_failure_window = secs(env.parse_or("LOGIN_FAILURE_WINDOW_SECS", 900)?);
        if login_failure_window.is_zero() {
            return Err(ConfigError::Invalid {
                name: "LOGIN_FAILURE_WINDOW_SECS",
                reason: "must be at least 1 second".into(),
            });
        }

        let port: u16 = env.parse_or("PORT", 8080)?;
        Ok(Config {
            http: HttpConfig {
                host: env.parse_or("HOST", IpAddr::from([0, 0, 0, 0]))?,
                port,
                request_timeout: millis(env.parse_or("HTTP_REQUEST_TIMEOUT_MS", 30_000)?),
                body_limit_bytes: env.parse_or("HTTP_BODY_LIMIT_BYTES", 1024 * 1024)?,
                cors_allowed_origins: env.list("CORS_ALLOWED_ORIGINS"),
                shutdown_grace: secs(env.parse_or("SHUTDOWN_GRACE_SECS", 30)?),
                header_read_timeout: millis(nonzero(
                    "HTTP_HEADER_READ_TIMEOUT_MS",
                    env.parse_or("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?,
                )?),
                body_read_timeout: millis(nonzero(
                    "HTTP_BODY_READ_TIMEOUT_MS",
                    env.parse_or("HTTP_BODY_READ_TIMEOUT_MS", 20_000)?,
                )?),
                upload_body_read_timeout: millis(nonzero(
                    "HTTP_UPLOAD_BODY_READ_TIMEOUT_MS",
                    env.parse_or("HTTP_UPLOAD_BODY_READ_TIMEOUT_MS", 300_000)?,
                )?),
                keepalive_idle: secs(env.parse_or("HTTP_KEEPALIVE_IDLE_SECS", 75)?),
                max_connections: nonzero(
                    "HTTP_MAX_CONNECTIONS",
                    env.parse_or("HTTP_MAX_CONNECTIONS", 1024)?,
                )?,
                trusted_proxies: parse_networks("TRUSTED_PROXIES", &env.list("TRUSTED_PROXIES"))?,
            },
            database: DatabaseConfig {
                url: database_url,
                max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", 20)?,
                min_connections: env.parse_or("DATABASE_MIN_CONNECTIONS", 0)?,
                acquire_timeout: millis(env.parse_or("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?),
                pgbouncer: env.bool_or("DATABASE_PGBOUNCER", false)?,
            },
            redis: RedisConfig {
                url: redis_url,
                prefix: env.raw("REDIS_PREFIX").unwrap_or_else(|| "orderly".into()),
            },
            auth: AuthConfig {
                jwt_secret,
                jwt_issuer: env.raw("JWT_ISSUER").unwrap_or_else(|| "orderly".into()),
                jwt_audience: env
                    .raw("JWT_AUDIENCE")
                    .unwrap_or_else(|| "orderly-api".into()),
                jwt_ttl,
                refresh_ttl,
            },
            log: LogConfig {
                filter: env.raw("RUST_LOG").unwrap_or_else(|| "info".into()),
                format,
            },
            cache: CacheConfig {
                ttl: secs(env.parse_or("CACHE_TTL_SECS", 60)?),
                static_ttl: secs(env.parse_or("CACHE_STATIC_TTL_SECS", 86_400)?),
                near_max_bytes: env.parse_or("CACHE_NEAR_MAX_BYTES", 16 * 1024 * 1024)?,
            },
            rate_limit: RateLimitConfig {
                store,
                per_minute: env.parse_or("RATE_LIMIT_PER_MINUTE", 600)?,
                burst: env.parse_or("RATE_LIMIT_BURST", 60)?,
                login_max_failures: env.parse_or("LOGIN_MAX_FAILURES", 5)?,
                login_failure_window,
            },
            worker: WorkerConfig {
                queues,
                concurrency,
                lease,
                shutdown_grace: secs(env.parse_or("WORKER_SHUTDOWN_GRACE_SECS", 30)?),
                metrics_port: env
                    .raw("WORKER_METRICS_PORT")
                    .map(|_| env.parse_or("WORKER_METRICS_PORT", 0u16))
                    .transpose()?,
                completed_keep: env.parse_or("QUEUE_COMPLETED_KEEP", 1_000)?,
                completed_max_age: secs(env.parse_or("QUEUE_COMPLETED_MAX_AGE_SECS", 3_600)?),
                outbox_retention: secs(env.parse_or("OUTBOX_RETENTION_SECS", 86_400)?),
            },
            mail: MailConfig {
                smtp_url,
                mail_dir: env
                    .raw("MAIL_DIR")
                    .unwrap_or_else(|| "var/mail".into())
                    .into(),
                from: env
                    .raw("MAIL_FROM")
                    .unwrap_or_else(|| "Orderly <orders@orderly.invalid>".into()),
                public_base_url: env
                    .raw("PUBLIC_BASE_URL")
                    .unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
                retry_base: millis(env.parse_or("EMAIL_RETRY_BASE_MS", 5_000)?),
            },
            webhooks: WebhookConfig {
                allowlist: parse_networks("WEBHOOK_ALLOWLIST", &env.list("WEBHOOK_ALLOWLIST"))?,
                timeout: millis(env.parse_or("WEBHOOK_TIMEOUT_MS", 10_000)?),
                retry_schedule,
            },
            storage: StorageConfig {
                url: env.raw("STORAGE_URL"),
                dir: env
                    .raw("STORAGE_DIR")
                    .unwrap_or_else(|| "var/storage".into())
                    .into(),
                upload_max_bytes: env.parse_or("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/orderly"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("JWT_SECRET", "q7Vf2LxN9cRb4KdWm8ZtHs3YpJg6QeAu"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn defaults_apply_when_only_required_variables_are_set() {
        let config = Config::from_map(&base()).expect("valid config");
        assert_eq!(config.http.port, 8080);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.cache.ttl, Duration::from_secs(60));
        assert_eq!(config.cache.static_ttl, Duration::from_secs(86_400));
        assert_eq!(config.cache.near_max_bytes, 16 * 1024 * 1024);
        assert!(
            config.worker.queues.is_empty(),
            "no WORKER_QUEUES: every queue"
        );
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let mut vars = base();
        vars.remove("DATABASE_URL");
        let err = Config::from_map(&vars).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                name: "DATABASE_URL",
                ..
            }
        ));
        assert!(err.to_string().starts_with("DATABASE_URL is not set"));
    }

    #[test]
    fn malformed_port_names_the_variable_and_value() {
        let mut vars = base();
        vars.insert("PORT".into(), "eighty".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("PORT is invalid"), "{err}");
        assert!(err.contains("eighty"), "{err}");
    }

    #[test]
    fn short_jwt_secret_is_refused_without_echoing_it() {
        let mut vars = base();
        vars.insert("JWT_SECRET".into(), "hunter2".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("JWT_SECRET is invalid"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn published_placeholder_and_low_entropy_secrets_are_refused() {
        for (secret, why) in [
            (
                "dev-only-secret-change-me-dev-only-secret-change-me",
                "published",
            ),
            ("change-me-to-a-long-random-string-of-32-bytes", "published"),
            ("0123456789abcdef0123456789abcdef", "published"),
            ("my-very-own-secret-value-for-the-shop-api", "placeholder"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
            ("abcdefghijkl".repeat(3).as_str(), "repeated"),
        ] {
            let mut vars = base();
            vars.insert("JWT_SECRET".into(), secret.into());
            let err = Config::from_map(&vars).unwrap_err().to_string();
            assert!(err.starts_with("JWT_SECRET is invalid"), "{why}: {err}");
            assert!(!err.contains(secret), "the secret is echoed: {err}");
        }
        for generated in [
            "3f9c1e7a52b84d06a9e3c2f1b7d54e80c6a1f3e9d2b7c4a5",
            "Yh3kP9wQ2mZ7vB4nL8xR1tC6sD5fG0jA",
        ] {
            let mut vars = base();
            vars.insert("JWT_SECRET".into(), generated.into());
            assert!(Config::from_map(&vars).is_ok(), "{generated} refused");
        }
    }

    #[test]
    fn access_token_lifetime_is_bounded() {
        let mut vars = base();
        vars.insert("JWT_TTL_SECS".into(), "2592000".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("JWT_TTL_SECS is invalid"), "{err}");
        vars.insert("JWT_TTL_SECS".into(), "0".into());
        assert!(Config::from_map(&vars).is_err());
    }

    #[test]
    fn wrong_url_scheme_is_refused() {
        let mut vars = base();
        vars.insert("DATABASE_URL".into(), "mysql://localhost/db".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("DATABASE_URL is invalid"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut vars = base();
        vars.insert(
            "DATABASE_URL".into(),
            "postgres://app:s3cr3t-pw@db/orderly".into(),
        );
        let config = Config::from_map(&vars).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pw"));
        assert!(!debug.contains("0123456789abcdef"));
    }

    #[test]
    fn webhook_allowlist_parses_cidrs_and_addresses() {
        let mut vars = base();
        vars.insert(
            "WEBHOOK_ALLOWLIST".into(),
            "127.0.0.0/8, ::1, 10.1.2.3/16".into(),
        );
        let config = Config::from_map(&vars).unwrap();
        let listed: Vec<String> = config
            .webhooks
            .allowlist
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(listed, ["127.0.0.0/8", "::1/128", "10.1.0.0/16"]);

        vars.insert("WEBHOOK_ALLOWLIST".into(), "127.0.0.0/8,localhost".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("WEBHOOK_ALLOWLIST is invalid"), "{err}");
        assert!(err.contains("localhost"), "{err}");
    }

    #[test]
    fn trusted_proxies_parse_and_trust_proxy_true_is_refused() {
        let mut vars = base();
        assert!(
            Config::from_map(&vars)
                .unwrap()
                .http
                .trusted_proxies
                .is_empty()
        );
        vars.insert("TRUSTED_PROXIES".into(), "10.0.0.0/8, 2001:db8::/32".into());
        let listed: Vec<String> = Config::from_map(&vars)
            .unwrap()
            .http
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(listed, ["10.0.0.0/8", "2001:db8::/32"]);

        // `false` (what .env files copied from an older .env.example hold) means no proxy.
        vars.insert("TRUST_PROXY".into(), "false".into());
        assert!(Config::from_map(&vars).is_ok());
        vars.insert("TRUST_PROXY".into(), "true".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("TRUST_PROXY is invalid"), "{err}");
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn login_throttle_settings_have_defaults() {
        let mut vars = base();
        let config = Config::from_map(&vars).unwrap();
        assert_eq!(config.rate_limit.login_max_failures, 5);
        assert_eq!(config.rate_limit.login_failure_window, secs(900));
        vars.insert("LOGIN_FAILURE_WINDOW_SECS".into(), "0".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("LOGIN_FAILURE_WINDOW_SECS is invalid"),
            "{err}"
        );
    }

    #[test]
    fn slow_client_limits_have_defaults_and_refuse_zero() {
        let mut vars = base();
        let http = Config::from_map(&vars).unwrap().http;
        assert_eq!(http.header_read_timeout, millis(10_000));
        assert_eq!(http.body_read_timeout, millis(20_000));
        assert_eq!(http.upload_body_read_timeout, millis(300_000));
        assert_eq!(http.keepalive_idle, secs(75));
        assert_eq!(http.max_connections, 1024);

        vars.insert("HTTP_KEEPALIVE_IDLE_SECS".into(), "0".into());
        assert_eq!(
            Config::from_map(&vars).unwrap().http.keepalive_idle,
            Duration::ZERO,
            "0 turns keep-alive off"
        );
        for name in [
            "HTTP_HEADER_READ_TIMEOUT_MS",
            "HTTP_BODY_READ_TIMEOUT_MS",
            "HTTP_UPLOAD_BODY_READ_TIMEOUT_MS",
            "HTTP_MAX_CONNECTIONS",
        ] {
            let mut vars = base();
            vars.insert(name.into(), "0".into());
            let err = Config::from_map(&vars).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name} is invalid")), "{err}");
            vars.insert(name.into(), "soon".into());
            let err = Config::from_map(&vars).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name} is invalid")), "{err}");
        }
    }

    #[test]
    fn webhook_schedule_parses_seconds() {
        let mut vars = base();
        vars.insert("WEBHOOK_RETRY_SCHEDULE".into(), "0.1, 0.2,1".into());
        let config = Config::from_map(&vars).unwrap();
        assert_eq!(
            config.webhooks.retry_schedule,
            vec![millis(100), millis(200), secs(1)]
        );
    }
}
