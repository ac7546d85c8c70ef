//! Failed-login budget per account, independent of where the attempts come from: an attacker
//! spreading guesses over many addresses still gets `LOGIN_MAX_FAILURES` per
//! `LOGIN_FAILURE_WINDOW_SECS` for one account, and each refused guess costs a Redis call
//! instead of an argon2 verification, so logins of other accounts stay fast.
//!
//! Every attempt spends one unit of the account's budget before the password is checked (so
//! concurrent guesses cannot all pass a check made before any of them was counted); a
//! successful login gives the budget back. Unknown emails are counted exactly like real
//! accounts, so the answers do not tell which accounts exist. The budget lives in Redis
//! ([`AttemptLimiter`]), shared by every api instance, under a keyed hash of the normalised email
//! so no address is stored in clear.

use std::time::Duration;

use hmac::{Hmac, Mac};
use orderly_queue::RedisConnection;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::{error::AppError, ratelimit::AttemptLimiter};

/// Per-account login budget (see the module docs).
#[derive(Clone)]
pub struct LoginThrottle {
    /// `None` when `LOGIN_MAX_FAILURES` is 0 (throttling off).
    attempts: Option<AttemptLimiter>,
    /// Key of the hash that names accounts in Redis (derived from the signing secret).
    hash_key: [u8; 32],
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The name of one account's budget, from [`LoginThrottle::attempt`].
#[derive(Debug, Clone)]
pub struct AccountKey(String);

impl LoginThrottle {
    /// `max_failures` attempts per account and `window` (0 turns throttling off). Accounts are
    /// named by an HMAC keyed with a key derived from `secret`.
    pub fn new(
        redis: RedisConnection,
        prefix: &str,
        max_failures: u32,
        window: Duration,
        secret: &SecretString,
    ) -> Self {
        let mut derive = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        derive.update(b"orderly login throttle account key");
        Self {
            attempts: (max_failures > 0).then(|| {
                AttemptLimiter::new(redis, &format!("{prefix}:login"), max_failures, window)
            }),
            hash_key: derive.finalize().into_bytes().into(),
        }
    }

    /// No throttling (services built without one, such as tools that never log anyone in).
    pub fn disabled() -> Self {
        Self {
            attempts: None,
            hash_key: [0; 32],
        }
    }

    /// Spends one login attempt of the account `email` names (existing or not), before any
    /// password work; 429 with `Retry-After` when its budget is spent.
    pub async fn attempt(&self, email: &str) -> Result<AccountKey, AppError> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.hash_key).expect("HMAC takes keys of any length");
        mac.update(email.trim().to_lowercase().as_bytes());
        let key = AccountKey(hex::encode(&mac.finalize().into_bytes()[..16]));
        if let Some(attempts) = &self.attempts {
            attempts
                .attempt(&key.0)
                .await
                .map_err(|retry_after| AppError::TooManyRequests {
                    message: "too many failed logins for this account; try again later".into(),
                    retry_after,
                })?;
        }
        Ok(key)
    }

    /// A successful login: the account gets its whole budget back.
    pub async fn succeeded(&self, account: &AccountKey) {
        if let Some(attempts) = &self.attempts {
            attempts.clear(&account.0).await;
        }
    }
}
