//! SQL for idempotency keys.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    error::AppError,
    idempotency::{Claim, StoredResponse},
    queue::Writes,
};

/// The table, as PostgreSQL names it in the errors of [`IdempotencyRepository::claim_new`].
pub(super) const TABLE: &str = "idempotency_keys";

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
    /// Another transaction holds the key right now (its request is still running).
    InFlight,
    Existing(ExistingKey),
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IdempotencyRepository;

impl IdempotencyRepository {
    /// Inside the caller's transaction: takes the key's advisory lock, then inserts the key with
    /// the claim's resource id and the response the operation gives if it commits, or reuses an
    /// expired key; otherwise says what is there. Both the lock and the row belong to the
    /// transaction: a rollback leaves no trace of the claim, and a commit leaves a finished key.
    ///
    /// The advisory lock (transaction-scoped, tried, never waited for) is what tells a second
    /// request with the same key that the first is still running: without it, the second's
    /// insert would wait on the first's uncommitted row until that transaction ends.
    pub async fn claim(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        request_hash: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<ClaimOutcome, AppError> {
        let row = sqlx::query!(
            r#"with key_lock as (
                 select pg_try_advisory_xact_lock(hashtextextended($1::uuid::text || ' ' || $2 || ' ' || $3, 0)) as taken
               ), claimed as (
                 insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at,
                                               resource_id, response_status, response_body)
                 select $1, $2, $3, $4, now(), now() + make_interval(secs => $5), $6, $7, $8
                 from key_lock where taken
                 on conflict (user_id, scope, key) do update set
                   request_hash = excluded.request_hash, locked_until = excluded.locked_until,
                   expires_at = excluded.expires_at, resource_id = excluded.resource_id,
                   response_status = excluded.response_status, response_body = excluded.response_body,
                   created_at = now()
                 where idempotency_keys.expires_at < now()
                 returning 1
               )
               select (select taken from key_lock) as "lock_taken!",
                      exists (select 1 from claimed) as "claimed!""#,
            claim.user_id,
            claim.scope,
            claim.key,
            request_hash,
            ttl.as_secs_f64(),
            claim.resource_id,
            response.status as i16,
            response.body,
        )
        .fetch_one(&mut *conn)
        .await?;
        if !row.lock_taken {
            return Ok(ClaimOutcome::InFlight);
        }
        if row.claimed {
            return Ok(ClaimOutcome::Claimed);
        }
        // This transaction holds the key's lock, so what is there is finished: committed by an
        // earlier request, or a claim written by an attempt outside any operation's transaction.
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
        .fetch_one(&mut *conn)
        .await?;
        Ok(ClaimOutcome::Existing(existing))
    }

    /// Adds to `writes` the claim of a key nobody used, with the response the operation
    /// answers: a plain insert, under the key's advisory lock (tried, never waited for), so it
    /// fails, and the whole statement with it, if the key exists (unique violation) or another
    /// request holds its lock (the key is then null: a not-null violation). The caller tells
    /// both apart with [`super::IdempotencyService::claim_refused`] and claims again with
    /// [`Self::claim`], which says what is there. Built at run time (one of an operation's
    /// [`Writes`]), so the macro does not check it; the idempotency tests run every branch.
    pub fn claim_new(
        &self,
        writes: &mut Writes,
        claim: &Claim,
        request_hash: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) {
        // The key is null, which fails the statement, when its advisory lock is held: another
        // attempt under the same key is in flight.
        writes
            .write(
                "insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, \
                                               expires_at, resource_id, response_status, response_body) \
                 select c.user_id, c.scope, \
                        case when pg_try_advisory_xact_lock( \
                               hashtextextended(c.user_id::text || ' ' || c.scope || ' ' || c.key, 0)) \
                             then c.key end, \
                        c.request_hash, now(), now() + make_interval(secs => c.ttl_secs), \
                        c.resource_id, c.response_status, c.response_body \
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[], \
                             $6::uuid[], $7::int2[], $8::bytea[]) \
                      as c(user_id, scope, key, request_hash, ttl_secs, resource_id, \
                           response_status, response_body)",
            )
            .bind(vec![claim.user_id])
            .bind(vec![claim.scope])
            .bind(vec![claim.key.clone()])
            .bind(vec![request_hash.to_owned()])
            .bind(vec![ttl.as_secs_f64()])
            .bind(vec![claim.resource_id])
            .bind(vec![response.status as i16])
            .bind(vec![response.body.clone()])
            .finish();
    }

    /// Inside the caller's transaction: takes the key's advisory lock and finishes the key with
    /// the new attempt's response, if it is still unfinished, its lock has run out and it still
    /// names the same resource (a claim an earlier version wrote outside any transaction).
    pub async fn take_over(
        &self,
        conn: &mut PgConnection,
        claim: &Claim,
        response: &StoredResponse,
    ) -> Result<bool, AppError> {
        let taken: Option<i32> = sqlx::query_scalar!(
            r#"with key_lock as (
                 select pg_try_advisory_xact_lock(hashtextextended($1::uuid::text || ' ' || $2 || ' ' || $3, 0)) as taken
               )
               update idempotency_keys
               set locked_until = now(), response_status = $5, response_body = $6
               from key_lock
               where key_lock.taken and user_id = $1 and scope = $2 and key = $3 and resource_id = $4
                 and response_status is null and locked_until < now()
               returning 1 as "taken!""#,
            claim.user_id,
            claim.scope,
            claim.key,
            claim.resource_id,
            response.status as i16,
            response.body,
        )
        .fetch_optional(conn)
        .await?;
        Ok(taken.is_some())
    }

    /// Stores the refusal of an operation whose transaction (and claim with it) rolled back: the
    /// key with its response, unless the key is taken by now (another request with it
    /// committed meanwhile, whose answer stands) and has not expired.
    pub async fn refuse<'e>(
        &self,
        db: impl PgExecutor<'e>,
        claim: &Claim,
        request_hash: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), AppError> {
        // Asynchronous commit (`async_commit_source`, written out): a refusal lost in a crash
        // makes a retry run the operation again, which created nothing the first time.
        sqlx::query!(
            "insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, \
                                           resource_id, response_status, response_body) \
             select $1, $2, $3, $4, now(), now() + make_interval(secs => $5), $6, $7, $8 \
             from (select set_config('synchronous_commit', 'off', true)) as async_commit where true \
             on conflict (user_id, scope, key) do update set \
               request_hash = excluded.request_hash, locked_until = excluded.locked_until, \
               expires_at = excluded.expires_at, resource_id = excluded.resource_id, \
               response_status = excluded.response_status, response_body = excluded.response_body, \
               created_at = now() \
             where idempotency_keys.expires_at < now()",
            claim.user_id,
            claim.scope,
            claim.key,
            request_hash,
            ttl.as_secs_f64(),
            claim.resource_id,
            response.status as i16,
            response.body,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Stores the response of a key whose operation committed without one (a claim of an
    /// earlier version), rebuilt from its resource.
    pub async fn complete<'e>(
        &self,
        db: impl PgExecutor<'e>,
        claim: &Claim,
        response: &StoredResponse,
    ) -> Result<(), AppError> {
        // Asynchronous commit (`async_commit_source`, written out): a stored response lost in a
        // crash is rebuilt from the order the claim names (`Earlier::Unfinished`).
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
