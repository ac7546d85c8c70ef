//! The HTTP server (`HttpConfig`) and the per-client request budgets (`RateLimitConfig`).

use std::{net::IpAddr, time::Duration};

use super::{ConfigError, Source, millis, nonzero, parse_networks, secs};

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

impl HttpConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        // TRUST_PROXY=true believed whatever a client wrote first in X-Forwarded-For.
        env.retired(
            "TRUST_PROXY",
            "set TRUSTED_PROXIES to the CIDRs of your proxies (e.g. TRUSTED_PROXIES=10.0.0.0/8) \
             and remove TRUST_PROXY",
        )?;
        let port: u16 = env.parse_or("PORT", 8080)?;
        Ok(Self {
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
        })
    }
}

/// Which store keeps the rate-limit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitStore {
    /// Process memory: exact and fastest, but each api instance has its own budget.
    Memory,
    /// Redis: every api instance shares one budget per client.
    Redis,
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

impl RateLimitConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
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
        let login_failure_window = secs(env.parse_or("LOGIN_FAILURE_WINDOW_SECS", 900)?);
        if login_failure_window.is_zero() {
            return Err(ConfigError::Invalid {
                name: "LOGIN_FAILURE_WINDOW_SECS",
                reason: "must be at least 1 second".into(),
            });
        }
        Ok(Self {
            store,
            per_minute: env.parse_or("RATE_LIMIT_PER_MINUTE", 600)?,
            burst: env.parse_or("RATE_LIMIT_BURST", 60)?,
            login_max_failures: env.parse_or("LOGIN_MAX_FAILURES", 5)?,
            login_failure_window,
        })
    }
}
