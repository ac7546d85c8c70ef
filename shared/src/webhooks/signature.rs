//! Standard Webhooks signing: `whsec_` secrets and the `webhook-signature` header.
//!
//! The spec (standardwebhooks.com): the signed content is `{webhook-id}.{webhook-timestamp}.{body}`,
//! the MAC is HMAC-SHA256 keyed with the base64-decoded part of the `whsec_` secret, and the
//! header carries `v1,<base64 of the MAC>`. Receivers verify with any Standard Webhooks library.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::error::AppError;

/// The prefix every secret carries, so it is recognisable in a receiver's configuration.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret, `whsec_<base64 key>`. Redacted in `Debug` so a logged
/// endpoint never leaks it.
#[derive(Debug, Clone)]
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(SecretString::from(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(key)
        )))
    }

    /// A stored secret, as read back from the database.
    pub fn from_stored(secret: String) -> Self {
        Self(SecretString::from(secret))
    }

    /// The whole `whsec_...` text: shown once to the admin who created the endpoint, and stored.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    fn key(&self) -> Result<Vec<u8>, AppError> {
        let encoded = self
            .expose()
            .strip_prefix(SECRET_PREFIX)
            .unwrap_or(self.expose());
        STANDARD
            .decode(encoded)
            .map_err(|_| AppError::internal("webhook secret is not valid base64"))
    }

    /// The `webhook-signature` header value for one message: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> Result<String, AppError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key()?)
            .map_err(|_| AppError::internal("webhook secret has an unusable length"))?;
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        Ok(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_vector_of_the_standard_webhooks_libraries() {
        // The vector the official libraries test against.
        let secret = WebhookSecret::from_stored("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into());
        let signature = secret
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                r#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn generated_secrets_are_prefixed_random_keys() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.key().unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = WebhookSecret::generate();
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = WebhookSecret::generate();
        let base = secret.sign("id", 1, "{}").unwrap();
        assert_ne!(base, secret.sign("id2", 1, "{}").unwrap());
        assert_ne!(base, secret.sign("id", 2, "{}").unwrap());
        assert_ne!(base, secret.sign("id", 1, "{ }").unwrap());
        assert_ne!(base, WebhookSecret::generate().sign("id", 1, "{}").unwrap());
    }
}
