//! Which access tokens no longer count, answered from Redis on every authenticated request.
//!
//! Two facts make a verified token revoked:
//! - its user's token generation has moved past the token's (a password or role change), kept
//!   as `<prefix>:auth:{<user>}:generation`, never expiring, copied from PostgreSQL (the record)
//!   when absent;
//! - its login session was ended (logout, or a replayed refresh token), kept as
//!   `<prefix>:auth:{<user>}:revoked:<session>` for as long as an access token lives, since no
//!   token of the session can outlive that; PostgreSQL keeps the revocation for good.
//!
//! Both live under the user's hash tag, so one `MGET` answers the check (also on a Redis
//! Cluster) and an authenticated request costs one Redis round trip, no PostgreSQL.

use std::time::Duration;

use orderly_queue::RedisConnection;
use uuid::Uuid;

/// What Redis knows about one user's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationState {
    /// The user's current token generation, if Redis holds it.
    pub generation: Option<i32>,
    /// Whether the session asked about was ended.
    pub session_revoked: bool,
}

/// Where a generation handed to [`Revocations::record_generation`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Just committed by a password or role change: the newest there is.
    Committed,
    /// Read from PostgreSQL to fill a gap: possibly older than one being committed right now.
    Read,
}

/// Revocation facts in Redis.
#[derive(Clone)]
pub struct Revocations {
    redis: RedisConnection,
    prefix: String,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Revocations under `<prefix>:auth:`.
    pub fn new(redis: RedisConnection, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    fn generation_key(&self, user: Uuid) -> String {
        format!("{}:auth:{{{user}}}:generation", self.prefix)
    }

    fn session_key(&self, user: Uuid, session: Uuid) -> String {
        format!("{}:auth:{{{user}}}:revoked:{session}", self.prefix)
    }

    /// The user's generation and whether `session` was ended, in one round trip.
    pub async fn state(
        &self,
        user: Uuid,
        session: Uuid,
    ) -> Result<RevocationState, redis::RedisError> {
        let (generation, revoked): (Option<i32>, Option<String>) = redis::cmd("MGET")
            .arg(self.generation_key(user))
            .arg(self.session_key(user, session))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(RevocationState {
            generation,
            session_revoked: revoked.is_some(),
        })
    }

    /// Records a user's generation: one just committed to PostgreSQL (`Source::Committed`), or
    /// one read from it (`Source::Read`), which lands only where Redis holds none, so it can
    /// never overwrite a newer generation committed meanwhile.
    pub async fn record_generation(
        &self,
        user: Uuid,
        generation: i32,
        source: Source,
    ) -> Result<(), redis::RedisError> {
        let mut set = redis::cmd("SET");
        set.arg(self.generation_key(user)).arg(generation);
        if source == Source::Read {
            set.arg("NX");
        }
        set.query_async::<()>(&mut self.redis.clone()).await
    }

    /// Marks `sessions` of `user` ended for `lifetime` (the longest an access token lives).
    pub async fn end_sessions(
        &self,
        user: Uuid,
        sessions: &[Uuid],
        lifetime: Duration,
    ) -> Result<(), redis::RedisError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let millis = u64::try_from(lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut pipe = redis::pipe();
        for session in sessions {
            pipe.cmd("SET")
                .arg(self.session_key(user, *session))
                .arg(1)
                .arg("PX")
                .arg(millis)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await
    }
}
