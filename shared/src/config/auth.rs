//! Token signing and lifetimes (`AuthConfig`), and the checks a signing secret must pass.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Source, secs};

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

impl AuthConfig {
    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
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
        Ok(Self {
            jwt_secret,
            jwt_issuer: env.raw("JWT_ISSUER").unwrap_or_else(|| "orderly".into()),
            jwt_audience: env
                .raw("JWT_AUDIENCE")
                .unwrap_or_else(|| "orderly-api".into()),
            jwt_ttl,
            refresh_ttl,
        })
    }
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
