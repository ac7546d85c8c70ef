//! Typed configuration, read once from the environment (and `.env` in development).
//!
//! Every setting the api and the workers use is a field here, parsed and checked at start-up.
//! A missing or malformed variable stops the process before it binds a port or claims a job,
//! with one line that names the variable and says what is wrong ([`ConfigError`]).
//! `.env.example` at the repository root documents every variable with its default.
//!
//! Secrets (`DATABASE_URL`, `REDIS_URL`, `JWT_SECRET`, `SMTP_URL`) are [`SecretString`]s, so a
//! `{:?}` of the config, or a log line that prints it, shows `[REDACTED]` instead.
//!
//! Each section has its own reader (`HttpConfig::read`, `AuthConfig::read`, ...) next to its
//! struct and its checks, in one file per group of sections; this module holds the variable
//! reader (`Source`), the error, and the helpers they share.

use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr, time::Duration};

use secrecy::SecretString;

mod auth;
mod http;
mod logging;
mod maintenance;
mod outputs;
mod stores;
#[cfg(test)]
mod tests;
mod traces;
mod worker;

pub use self::{
    auth::{AuthConfig, MAX_ACCESS_TOKEN_TTL, MAX_REFRESH_TOKEN_TTL, check_secret},
    http::{HttpConfig, RateLimitConfig, RateLimitStore},
    logging::{LogConfig, LogFormat},
    maintenance::MaintenanceConfig,
    outputs::{MailConfig, StorageConfig, WebhookConfig},
    stores::{CacheConfig, DatabaseConfig, RedisConfig, RedisMode},
    traces::{ParentRoot, TraceConfig, TraceSampler},
    worker::WorkerConfig,
};

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
    /// Trace export over OTLP (off unless an endpoint is set).
    pub traces: TraceConfig,
    /// Redis read-through cache lifetimes.
    pub cache: CacheConfig,
    /// Per-client request budgets.
    pub rate_limit: RateLimitConfig,
    /// Queue engine and worker process settings.
    pub worker: WorkerConfig,
    /// Housekeeping schedules and retention.
    pub maintenance: MaintenanceConfig,
    /// Outgoing email.
    pub mail: MailConfig,
    /// Outgoing webhooks.
    pub webhooks: WebhookConfig,
    /// Where report files and uploads are kept.
    pub storage: StorageConfig,
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

    /// Builds a config from any variable lookup, one section at a time; the first problem
    /// found stops it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Source(&lookup);
        // The sections with required variables first, so an empty environment is told about
        // DATABASE_URL, then REDIS_URL, then JWT_SECRET before anything else.
        let database = DatabaseConfig::read(&env)?;
        let redis = RedisConfig::read(&env)?;
        let auth = AuthConfig::read(&env)?;
        let http = HttpConfig::read(&env)?;
        Ok(Config {
            log: LogConfig::read(&env)?,
            traces: TraceConfig::read(&env)?,
            cache: CacheConfig::read(&env)?,
            rate_limit: RateLimitConfig::read(&env)?,
            worker: WorkerConfig::read(&env)?,
            maintenance: MaintenanceConfig::read(&env)?,
            mail: MailConfig::read(&env, http.port)?,
            webhooks: WebhookConfig::read(&env)?,
            storage: StorageConfig::read(&env)?,
            http,
            database,
            redis,
            auth,
        })
    }
}

/// Reads variables by name from some source (the process environment, or a map in tests),
/// turning absent and empty alike into `None`.
struct Source<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
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

/// Refuses a URL whose scheme is not one of `schemes` (without echoing it: it may hold a
/// password); an accepted one becomes a secret.
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
