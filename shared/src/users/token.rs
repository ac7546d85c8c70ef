//! Access tokens: HS256 JWTs with `sub`, `role`, `iss`, `aud`, `iat`, `exp`, a unique `jti`, the
//! login session they belong to (`sid`) and the user's token generation (`gen`).
//!
//! Verification pins the algorithm to HS256 (so `alg: none` and algorithm swaps fail), checks the
//! signature, expiry (no leeway), issuer and audience. Any failure is the same 401 for the client.
//! A token that verifies may still have been revoked (logout, password or role change): that is
//! `revocation`'s question, asked by `UserService::authenticate`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    config::AuthConfig,
    error::AppError,
    users::model::{Role, User},
};

/// The claims Orderly writes and reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Issuer (`JWT_ISSUER`); a token from another issuer is refused.
    pub iss: String,
    /// Audience (`JWT_AUDIENCE`); a token meant for another service is refused.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Unique token id.
    pub jti: Uuid,
    /// The login session (refresh-token family) the token was issued in: logging out revokes
    /// every token of the session at once.
    pub sid: Uuid,
    /// The user's token generation when the token was issued; a password or role change moves
    /// the generation on, which revokes every earlier token of the user.
    pub generation: i32,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Signs and verifies tokens with the configured secret.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

impl TokenIssuer {
    /// Builds the keys and the validation rules from config.
    pub fn new(config: &AuthConfig) -> Self {
        let secret = config.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: config.jwt_ttl,
        }
    }

    /// How long the tokens it issues live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `user` in login session `session`, at token generation `generation`.
    pub fn issue(
        &self,
        user: &User,
        session: Uuid,
        generation: i32,
    ) -> Result<AccessToken, AppError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + self.ttl.as_secs(),
            jti: Uuid::new_v4(),
            sid: session,
            generation,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::internal(format!("signing token: {e}")))?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Verifies a token and returns its claims, or a 401.
    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(reason = %e, "token refused");
                AppError::unauthorized("invalid or expired token")
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn config(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: secret.to_owned().into(),
            jwt_issuer: "orderly".into(),
            jwt_audience: "orderly-api".into(),
            jwt_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
        }
    }

    fn user() -> User {
        User {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            role: Role::Customer,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    const SECRET: &str = "q7Vf2LxN9cRb4KdWm8ZtHs3YpJg6QeAu";

    #[test]
    fn round_trip() {
        let issuer = TokenIssuer::new(&config(SECRET));
        let u = user();
        let token = issuer.issue(&u, Uuid::new_v4(), 0).unwrap();
        let claims = issuer.verify(&token.token).unwrap();
        assert_eq!(claims.sub, u.id);
        assert_eq!(claims.role, Role::Customer);
    }

    #[test]
    fn wrong_secret_is_refused() {
        let token = TokenIssuer::new(&config(SECRET))
            .issue(&user(), Uuid::new_v4(), 0)
            .unwrap();
        let other = TokenIssuer::new(&config("another-secret-of-32-bytes-length!!"));
        assert!(other.verify(&token.token).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let issuer = TokenIssuer::new(&config(SECRET));
        let now = now_secs();
        let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64url(
            format!(
                r#"{{"sub":"{}","role":"admin","iss":"orderly","aud":"orderly-api","iat":{now},"exp":{},"jti":"{}","sid":"{}","generation":0}}"#,
                Uuid::now_v7(),
                now + 60,
                Uuid::new_v4(),
                Uuid::new_v4()
            )
            .as_bytes(),
        );
        assert!(issuer.verify(&format!("{header}.{claims}.")).is_err());
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let token = TokenIssuer::new(&config(SECRET))
            .issue(&user(), Uuid::new_v4(), 0)
            .unwrap();
        let mut other_aud = config(SECRET);
        other_aud.jwt_audience = "someone-else".into();
        assert!(TokenIssuer::new(&other_aud).verify(&token.token).is_err());
        let mut other_iss = config(SECRET);
        other_iss.jwt_issuer = "someone-else".into();
        assert!(TokenIssuer::new(&other_iss).verify(&token.token).is_err());
    }

    #[test]
    fn expired_is_refused() {
        let mut c = config(SECRET);
        c.jwt_ttl = Duration::ZERO;
        let issuer = TokenIssuer::new(&c);
        let token = issuer.issue(&user(), Uuid::new_v4(), 0).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(issuer.verify(&token.token).is_err());
    }
}
