//! SQL for idempotency keys.

use std::time::Duration;

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    error::AppError,
    idempotency::{Claim, StoredResponse},
};

/// A key already present.
#[derive(Debug)]
pub(super) struct ExistingKey {
    pub request_hash: String,
    pub resource_id: Uuid,
    pub response_status: Option<i16>,
    pub response_body: Option<Vec<u8>>,
    pub lock_expired: bool,
}

pub(super) enum ClaimOutcome {
    Claimed,
    Existing(ExistingKey),
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IdempotencyRepository;

impl IdempotencyRepository {
    /// Inserts the key with the claim's resource id, or reuses an expired key (a new resource
    /// id); otherwise returns what is there.
    pub async fn claim<'e, E: PgExecutor<'e> + Copy>(
        &self,
        db: E,
        claim: &Claim,
        request_hash: &str,
        lock_for: Duration,
        ttl: Duration,
    ) -> Result<ClaimOutcome, AppError> {
        // Asynchronous commit (see `async_commit_source`, written out in the `from` item because
        // a checked macro takes only literals; a test in `db` keeps the two the same): the claim
        // is made durable by the order's own commit, which flushes the WAL written before it.
        let claimed: Option<i32> = sqlx::query_scalar!(
            r#"insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id)
               select $1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6), $7
               from (select set_config('synchronous_commit', 'off', true)) as async_commit where true
               on conflict (user_id, scope, key) do update set
                 request_hash = excluded.request_hash, locked_until = excluded.locked_until,
                 expires_at = excluded.expires_at, resource_id = excluded.resource_id,
                 response_status = null, response_body = null, created_at = now()
               where idempotency_keys.expires_at < now()
               returning 1 as "claimed!""#,
            claim.user_id,
            claim.scope,
            claim.key,
            request_hash,
            lock_for.as_secs_f64(),
            ttl.as_secs_f64(),
            claim.resource_id,
        )
        .fetch_optional(db)
        .await?;
        if claimed.is_some() {
            return Ok(ClaimOutcome::Claimed);
        }
        let existing = sqlx::query_as!(
            ExistingKey,
            r#"select request_hash, resource_id, response_status, response_body,
                      locked_until < now() as "lock_expired!"
               from idempotency_keys
               where user_id = $1 and scope = $2 and key = $3"#,
            claim.user_id,
            claim.scope,
            claim.key,
        )
        .fetch_optional(db)
        .await?;
        match existing {
            Some(existing) => Ok(ClaimOutcome::Existing(existing)),
            // Deleted between the two statements (released by a failed request): claim again.
            None => Box::pin(self.claim(db, claim, request_hash, lock_for, ttl)).await,
        }
    }

    /// Locks the key again for a new attempt, if it is still unfinished, its lock has run out
    /// and it still names the same resource.
    pub async fn take_over<'e>(
        &self,
        db: impl PgExecutor<'e>,
        claim: &Claim,
        lock_for: Duration,
    ) -> Result<bool, AppError> {
        let taken: Option<i32> = sqlx::query_scalar!(
            r#"update idempotency_keys set locked_until = now() + make_interval(secs => $5)
               where user_id = $1 and scope = $2 and key = $3 and resource_id = $4
                 and response_status is null and locked_until < now()
               returning 1 as "taken!""#,
            claim.user_id,
            claim.scope,
            claim.key,
            claim.resource_id,
            lock_for.as_secs_f64(),
        )
        .fetch_optional(db)
        .await?;
        Ok(taken.is_some())
    }

    pub async fn complete<'e>(
        &self,
        db: impl PgExecutor<'e>,
        claim: &Claim,
        response: &StoredResponse,
    ) -> Result<(), AppError> {
        // Asynchronous commit (`async_commit_source`, written out): a stored response lost in a
        // crash is rebuilt from the order the claim names (`Begin::Unfinished`).
        sqlx::query!(
            "update idempotency_keys set response_status = $4, response_body = $5 \
             from (select set_config('synchronous_commit', 'off', true)) as async_commit \
             where user_id = $1 and scope = $2 and key = $3",
            claim.user_id,
            claim.scope,
            claim.key,
            response.status as i16,
            response.body,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Stores many responses in one statement (the background writer's batch).
    pub async fn complete_many<'e>(
        &self,
        db: impl PgExecutor<'e>,
        completions: &[(Claim, StoredResponse)],
    ) -> Result<(), AppError> {
        let user_ids: Vec<Uuid> = completions.iter().map(|(c, _)| c.user_id).collect();
        let scopes: Vec<&str> = completions.iter().map(|(c, _)| c.scope).collect();
        let keys: Vec<&str> = completions.iter().map(|(c, _)| c.key.as_str()).collect();
        let statuses: Vec<i16> = completions.iter().map(|(_, r)| r.status as i16).collect();
        let bodies: Vec<&[u8]> = completions.iter().map(|(_, r)| r.body.as_slice()).collect();
        // Asynchronous commit, as in `complete`.
        sqlx::query!(
            "update idempotency_keys set response_status = stored.status, response_body = stored.body \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::bytea[]) \
                    as stored (user_id, scope, key, status, body), \
                  (select set_config('synchronous_commit', 'off', true)) as async_commit \
             where idempotency_keys.user_id = stored.user_id and idempotency_keys.scope = stored.scope \
               and idempotency_keys.key = stored.key",
            &user_ids,
            &scopes as &[&str],
            &keys as &[&str],
            &statuses,
            &bodies as &[&[u8]],
        )
        .execute(db)
        .await?;
        Ok(())
    }

    pub async fn delete<'e>(&self, db: impl PgExecutor<'e>, claim: &Claim) -> Result<(), AppError> {
        sqlx::query!(
            "delete from idempotency_keys \
             where user_id = $1 and scope = $2 and key = $3 and response_status is null",
            claim.user_id,
            claim.scope,
            claim.key,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Deletes at most `limit` expired keys (one short statement: no long lock on the table).
    pub async fn purge_expired<'e>(
        &self,
        db: impl PgExecutor<'e>,
        limit: i64,
    ) -> Result<u64, AppError> {
        Ok(sqlx::query!(
            "delete from idempotency_keys where ctid in \
             (select ctid from idempotency_keys where expires_at < now() limit $1)",
            limit,
        )
        .execute(db)
        .await?
        .rows_affected())
    }
}
