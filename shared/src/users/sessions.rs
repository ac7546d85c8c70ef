//! Login sessions and their refresh tokens: the rows, the token format and the SQL.
//!
//! A login starts a session (a refresh-token family); each refresh rotates the session's token:
//! the presented one is marked rotated and a new one is issued in the same family. A refresh
//! token is `<id>.<secret>`: the id finds the row, and only a SHA-256 of the 256-bit random
//! secret is stored, so a copy of the table cannot be replayed. Presenting a token that was
//! already rotated means two parties hold it (it leaked): the whole family is revoked, the
//! newest token included, which logs both out (OAuth 2.0 Security BCP, refresh token rotation).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::AppError;

/// A refresh token as issued to a client (the only time its secret exists in clear).
#[derive(Debug, Clone)]
pub struct IssuedRefreshToken {
    /// `<id>.<secret>`, what the client presents.
    pub token: String,
    /// The session it belongs to.
    pub session: Uuid,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// A presented refresh token, split into its row id and secret.
#[derive(Debug)]
pub struct PresentedRefreshToken {
    id: Uuid,
    secret_hash: [u8; 32],
}

impl PresentedRefreshToken {
    /// Parses `<id>.<secret>`; anything else is the same 401 as an unknown token.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let refused = || AppError::unauthorized("invalid or expired refresh token");
        let (id, secret) = raw.trim().split_once('.').ok_or_else(refused)?;
        let id = Uuid::try_parse(id).map_err(|_| refused())?;
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        Ok(Self {
            id,
            secret_hash: hash(secret),
        })
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equal without an early exit, so the time taken says nothing about where hashes differ.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random secret and its token for row `id`.
fn new_secret(id: Uuid) -> (String, [u8; 32]) {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let hashed = hash(&secret);
    (format!("{}.{secret}", id.simple()), hashed)
}

/// What a presented refresh token turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Valid and now rotated: issue the new token in `session` for `user_id`.
    Rotated {
        /// The owner.
        user_id: Uuid,
        /// The session (family) the new token belongs to.
        session: Uuid,
    },
    /// Already rotated once: a replay. The caller revokes `session`.
    Replayed {
        /// The owner.
        user_id: Uuid,
        /// The family to revoke.
        session: Uuid,
    },
    /// Unknown, wrong secret, expired or revoked.
    Refused,
}

/// Which refresh tokens [`SessionRepository::revoke`] revokes.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One session's (logout, replay).
    Session(Uuid),
    /// All of a user's (password or role change).
    User(Uuid),
}

/// Refresh tokens in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionRepository;

impl SessionRepository {
    /// Stores a new refresh token of `user_id` in `session`; returns the token to hand out.
    #[tracing::instrument(skip_all)]
    pub async fn issue<'e>(
        &self,
        db: impl PgExecutor<'e>,
        user_id: Uuid,
        session: Uuid,
        ttl: std::time::Duration,
    ) -> Result<IssuedRefreshToken, AppError> {
        let id = Uuid::new_v4();
        let (token, secret_hash) = new_secret(id);
        let expires_at = Utc::now()
            + chrono::Duration::from_std(ttl)
                .map_err(|e| AppError::internal(format!("refresh token lifetime: {e}")))?;
        sqlx::query!(
            "insert into refresh_tokens (id, family_id, user_id, secret_hash, expires_at) \
             values ($1, $2, $3, $4, $5)",
            id,
            session,
            user_id,
            &secret_hash[..],
            expires_at,
        )
        .execute(db)
        .await?;
        Ok(IssuedRefreshToken {
            token,
            session,
            expires_in: ttl.as_secs(),
        })
    }

    /// Checks `presented` and, if it is live, marks it rotated. The row is locked for the
    /// check, so of two concurrent refreshes with one token exactly one rotates it and the other
    /// sees a replay.
    #[tracing::instrument(skip_all)]
    pub async fn rotate(
        &self,
        conn: &mut PgConnection,
        presented: &PresentedRefreshToken,
    ) -> Result<Rotation, AppError> {
        let row = sqlx::query!(
            "select family_id, user_id, secret_hash, expires_at, rotated_at, revoked_at \
             from refresh_tokens where id = $1 for update",
            presented.id,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row.filter(|r| same_hash(&r.secret_hash, &presented.secret_hash)) else {
            return Ok(Rotation::Refused);
        };
        if row.revoked_at.is_some() || row.expires_at <= Utc::now() {
            return Ok(Rotation::Refused);
        }
        if row.rotated_at.is_some() {
            return Ok(Rotation::Replayed {
                user_id: row.user_id,
                session: row.family_id,
            });
        }
        sqlx::query!(
            "update refresh_tokens set rotated_at = now() where id = $1",
            presented.id,
        )
        .execute(&mut *conn)
        .await?;
        Ok(Rotation::Rotated {
            user_id: row.user_id,
            session: row.family_id,
        })
    }

    /// Revokes every live token of one session, or of every session of a user.
    #[tracing::instrument(skip_all)]
    pub async fn revoke<'e>(&self, db: impl PgExecutor<'e>, scope: Scope) -> Result<(), AppError> {
        match scope {
            Scope::Session(session) => {
                sqlx::query!(
                    "update refresh_tokens set revoked_at = now() \
                     where family_id = $1 and revoked_at is null",
                    session,
                )
                .execute(db)
                .await?
            }
            Scope::User(user_id) => {
                sqlx::query!(
                    "update refresh_tokens set revoked_at = now() \
                     where user_id = $1 and revoked_at is null",
                    user_id,
                )
                .execute(db)
                .await?
            }
        };
        Ok(())
    }

    /// Sessions of `user_id` revoked since `since`: those whose access tokens may still be
    /// unexpired.
    #[tracing::instrument(skip_all)]
    pub async fn revoked_since<'e>(
        &self,
        db: impl PgExecutor<'e>,
        user_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, AppError> {
        Ok(sqlx::query_scalar!(
            "select distinct family_id from refresh_tokens \
             where user_id = $1 and revoked_at >= $2",
            user_id,
            since,
        )
        .fetch_all(db)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_back_to_their_hash() {
        let id = Uuid::new_v4();
        let (token, hashed) = new_secret(id);
        let presented = PresentedRefreshToken::parse(&token).unwrap();
        assert_eq!(presented.id, id);
        assert!(same_hash(&presented.secret_hash, &hashed));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "x",
            "not-a-uuid.abc",
            &format!("{}.short", Uuid::new_v4()),
        ] {
            assert!(PresentedRefreshToken::parse(bad).is_err(), "{bad:?}");
        }
    }
}
