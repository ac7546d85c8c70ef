//! What the processes send or write out: email (`MailConfig`), webhooks (`WebhookConfig`) and
//! files (`StorageConfig`).

use std::{path::PathBuf, time::Duration};

use orderly_queue::{Breaker, GroupLimits, RateLimit};
use secrecy::SecretString;

use super::{ConfigError, Source, millis, parse_networks, secs, url_with_scheme};

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

impl MailConfig {
    /// `port` is the api's (`HttpConfig::port`), the default of `PUBLIC_BASE_URL`.
    pub(super) fn read(env: &Source<'_>, port: u16) -> Result<Self, ConfigError> {
        let smtp_url = env
            .raw("SMTP_URL")
            .map(|v| url_with_scheme("SMTP_URL", v, &["smtp", "smtps"]))
            .transpose()?;
        Ok(Self {
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
        })
    }
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
    /// What holds per endpoint, fleet-wide (the `webhooks` queue groups its jobs by endpoint):
    /// `WEBHOOK_ENDPOINT_RATE` (`10/s`; unset: none), `WEBHOOK_ENDPOINT_CONCURRENCY` (default
    /// 4; `0`: none) and the breaker, `WEBHOOK_BREAKER_FAILURES` failed attempts in a row
    /// (default 5; `0`: no breaker) with cool-downs from `WEBHOOK_BREAKER_COOLDOWN_SECS`
    /// (default 30) doubling up to `WEBHOOK_BREAKER_MAX_COOLDOWN_SECS` (default 1800).
    pub per_endpoint: GroupLimits,
    /// Deliver each endpoint's events one at a time in the order they happened, a retry holding
    /// back the later ones (`WEBHOOK_ENDPOINT_ORDERED`, default false; it replaces the
    /// per-endpoint concurrency with 1).
    pub ordered: bool,
}

impl WebhookConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let retry_schedule = retry_schedule(env.list("WEBHOOK_RETRY_SCHEDULE"))?;
        Ok(Self {
            allowlist: parse_networks("WEBHOOK_ALLOWLIST", &env.list("WEBHOOK_ALLOWLIST"))?,
            timeout: millis(env.parse_or("WEBHOOK_TIMEOUT_MS", 10_000)?),
            retry_schedule,
            per_endpoint: per_endpoint_limits(env)?,
            ordered: env.bool_or("WEBHOOK_ENDPOINT_ORDERED", false)?,
        })
    }
}

/// The per-endpoint limits of [`WebhookConfig::per_endpoint`].
fn per_endpoint_limits(env: &Source<'_>) -> Result<GroupLimits, ConfigError> {
    let rate = env
        .raw("WEBHOOK_ENDPOINT_RATE")
        .filter(|v| !v.trim().is_empty())
        .map(|v| RateLimit::parse(&v))
        .transpose()
        .map_err(|reason| ConfigError::Invalid {
            name: "WEBHOOK_ENDPOINT_RATE",
            reason,
        })?;
    let concurrency: u32 = env.parse_or("WEBHOOK_ENDPOINT_CONCURRENCY", 4)?;
    if concurrency > 100_000 {
        return Err(ConfigError::Invalid {
            name: "WEBHOOK_ENDPOINT_CONCURRENCY",
            reason: "must be from 0 (no cap) to 100000".into(),
        });
    }
    let failures: u32 = env.parse_or("WEBHOOK_BREAKER_FAILURES", 5)?;
    let cooldown = secs(env.parse_or("WEBHOOK_BREAKER_COOLDOWN_SECS", 30)?);
    let max_cooldown = secs(env.parse_or("WEBHOOK_BREAKER_MAX_COOLDOWN_SECS", 1_800)?);
    if failures > 0 && (cooldown.is_zero() || max_cooldown < cooldown) {
        return Err(ConfigError::Invalid {
            name: "WEBHOOK_BREAKER_COOLDOWN_SECS",
            reason: "must be at least 1 and at most WEBHOOK_BREAKER_MAX_COOLDOWN_SECS".into(),
        });
    }
    Ok(GroupLimits {
        rate,
        concurrency: (concurrency > 0).then_some(concurrency),
        breaker: (failures > 0).then_some(Breaker {
            failures,
            cooldown,
            max_cooldown,
        }),
    })
}

/// The delays of `WEBHOOK_RETRY_SCHEDULE` (seconds, fractions allowed), or the default schedule
/// when it lists none.
fn retry_schedule(listed: Vec<String>) -> Result<Vec<Duration>, ConfigError> {
    if listed.is_empty() {
        // The Standard Webhooks / Svix schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
        return Ok([5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
            .into_iter()
            .map(secs)
            .collect());
    }
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
        .collect()
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

impl StorageConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.raw("STORAGE_URL"),
            dir: env
                .raw("STORAGE_DIR")
                .unwrap_or_else(|| "var/storage".into())
                .into(),
            upload_max_bytes: env.parse_or("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)?,
        })
    }
}
