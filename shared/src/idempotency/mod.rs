//! Idempotency keys for unsafe requests (the IETF `Idempotency-Key` draft, with Stripe's rules).
//!
//! - Same key, same request, same user: the first response is returned again, byte for byte,
//!   and nothing is done twice.
//! - Same key, different request: 422. Same key while the first request is still running: 409.
//! - Keys expire after 24 hours.
//!
//! The key is claimed *inside the operation's own transaction* ([`IdempotencyService::claim`])
//! for the id the resource is given ([`Attempt::resource_id`]), together with the response the
//! operation answers if it commits (what it created is known by then; only the commit is
//! left). The claim, its response and the resource therefore commit together or not at all: a
//! request that fails or dies leaves no claim behind, and a key that exists has its answer. If
//! the key was used before, the operation rolls back whatever it wrote. The transaction also
//! holds the key's advisory lock, which is how a second request with the same key learns,
//! without waiting, that the first is still running ([`Earlier::InFlight`]).
//!
//! An operation refused with a client error stores its refusal afterwards
//! ([`IdempotencyService::refuse`]), so a retry is refused the same way.
//!
//! Keys claimed by earlier versions of Orderly, which claimed outside the operation's
//! transaction and stored the response after the commit, can have no response
//! ([`Earlier::Unfinished`]): the caller answers from the resource if it exists (and stores
//! that answer), and if it does not (the attempt died before committing), once the claim's lock
//! has run out a retry takes the key over ([`Attempt::taking_over`]) and runs the operation with
//! the same resource id, so even an old attempt that commits late cannot make a second
//! resource: the id is the resource's primary key.

mod repository;

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::AppError;
use repository::{ClaimOutcome, IdempotencyRepository};

use crate::queue::Staging;

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A key claimed for a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The user the key belongs to (keys are per user).
    pub user_id: Uuid,
    /// The operation (`orders.create`): the same key may be used for different operations.
    pub scope: &'static str,
    /// The key itself.
    pub key: String,
    /// The id the operation gives what it creates (a UUIDv7 assigned at the first claim).
    pub resource_id: Uuid,
}

/// A response stored for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Body bytes, exactly as first sent.
    pub body: Vec<u8>,
}

/// A request carrying an idempotency key, on its way into the operation that claims the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The user the key belongs to (keys are per user).
    pub user_id: Uuid,
    /// The operation (`orders.create`): the same key may be used for different operations.
    pub scope: &'static str,
    /// The key itself.
    pub key: String,
    /// The request's fingerprint ([`fingerprint`]).
    pub request_hash: String,
    /// The id the operation gives what it creates, and its claim names: a fresh UUIDv7, or the
    /// resource id of the claim taken over.
    resource_id: Uuid,
    /// Whether this attempt takes over the claim of an attempt presumed dead (whose resource id
    /// it has) instead of claiming afresh.
    taking_over: bool,
}

impl Attempt {
    /// A first attempt under `key`.
    pub fn new(user_id: Uuid, scope: &'static str, key: &str, request_hash: &str) -> Self {
        Self {
            user_id,
            scope,
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            resource_id: Uuid::now_v7(),
            taking_over: false,
        }
    }

    /// The same request, taking over `claim`: the key's earlier attempt (of an earlier version)
    /// claimed it outside its operation's transaction, never committed, and its lock has run
    /// out ([`Earlier::Unfinished`] whose resource does not exist).
    pub fn taking_over(mut self, claim: Claim) -> Self {
        self.resource_id = claim.resource_id;
        self.taking_over = true;
        self
    }

    /// The id the operation gives what it creates; its claim names the same id.
    pub fn resource_id(&self) -> Uuid {
        self.resource_id
    }

    /// The claim this attempt makes (or takes over) on its key.
    fn claim(&self) -> Claim {
        Claim {
            user_id: self.user_id,
            scope: self.scope,
            key: self.key.clone(),
            resource_id: self.resource_id,
        }
    }
}

/// How an operation's claim on its key turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is this transaction's, with its response: commit.
    Proceed,
    /// The key was used before, or is in use now: roll back and answer from it.
    Earlier(Earlier),
}

/// An earlier request under the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Earlier {
    /// Done before: send this response again.
    Replay(StoredResponse),
    /// Still running: its transaction holds the key (409).
    InFlight,
    /// Claimed by an earlier version without a response (see the module's doc): if the
    /// resource `claim.resource_id` exists, it committed and its response was not stored yet,
    /// or was lost: rebuild the response from it and [`IdempotencyService::complete`] the key.
    /// If it does not, the attempt never committed; once `lock_expired`, run again
    /// [`Attempt::taking_over`] it.
    Unfinished {
        /// The earlier attempt's claim, with its resource id.
        claim: Claim,
        /// The earlier attempt is presumed dead (its lock ran out).
        lock_expired: bool,
    },
}

/// What an operation under an idempotency key produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed<T> {
    /// It ran and committed, its response stored under the key.
    Done(T),
    /// It did nothing: an earlier request under the key answers.
    Earlier(Earlier),
}

impl<T> Keyed<T> {
    /// Turns what a completed operation produced into something else, keeping an earlier
    /// request's answer as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Keyed<U> {
        match self {
            Self::Done(value) => Keyed::Done(f(value)),
            Self::Earlier(earlier) => Keyed::Earlier(earlier),
        }
    }
}

/// Checks an `Idempotency-Key` value: 1 to 255 printable ASCII characters.
pub fn parse_key(raw: &str) -> Result<String, AppError> {
    let key = raw.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(AppError::bad_request(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// The fingerprint of a request: SHA-256 of its canonical form.
pub fn fingerprint(canonical_request: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical_request))
}

/// Remembers keys and their responses.
#[derive(Debug, Clone)]
pub struct IdempotencyService {
    pool: PgPool,
    repository: IdempotencyRepository,
}

impl IdempotencyService {
    /// A service over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            repository: IdempotencyRepository,
        }
    }

    /// Adds to the operation's writes the claim of the attempt's key, for the resource
    /// [`Attempt::resource_id`], with `response`, if the attempt is a first one; false for an
    /// attempt that takes a claim over, which must [`Self::claim`] in a transaction.
    ///
    /// The claim assumes the key is new, the case of nearly every request: if it is not (used
    /// before, or in use by a request still running), the operation's statement fails and
    /// writes nothing, and [`Self::claim_refused`] recognises its error; the caller then runs
    /// the operation again in a transaction that [`Self::claim`]s first, which says who answers.
    pub fn claim_new(
        &self,
        to: &mut impl Staging,
        attempt: &Attempt,
        response: &StoredResponse,
    ) -> bool {
        if attempt.taking_over {
            return false;
        }
        self.repository.claim_new(
            to.writes(),
            &attempt.claim(),
            &attempt.request_hash,
            response,
            KEY_TTL,
        );
        true
    }

    /// Whether `error` is the refusal of a claim added by [`Self::claim_new`]: its key exists
    /// or is in use.
    pub fn claim_refused(error: &sqlx::Error) -> bool {
        let Some(db) = error.as_database_error() else {
            return false;
        };
        db.table() == Some(repository::TABLE)
            && matches!(
                db.kind(),
                sqlx::error::ErrorKind::UniqueViolation | sqlx::error::ErrorKind::NotNullViolation
            )
    }

    /// Claims the attempt's key inside the operation's transaction, for the resource
    /// [`Attempt::resource_id`] (or takes over the claim the attempt names), with `response`,
    /// the answer the operation gives if it commits; or says which earlier request answers: a
    /// different request under the key is 422. The claim commits or rolls back with the
    /// operation, which may write before it or after it.
    #[tracing::instrument(skip_all, fields(scope = attempt.scope))]
    pub async fn claim(
        &self,
        conn: &mut PgConnection,
        attempt: &Attempt,
        response: &StoredResponse,
    ) -> Result<Claimed, AppError> {
        let claim = attempt.claim();
        if attempt.taking_over
            && self
                .repository
                .take_over(&mut *conn, &claim, response)
                .await?
        {
            return Ok(Claimed::Proceed);
        }
        // Not taken over (another retry did, or the earlier attempt finished meanwhile): the
        // key says what happened.
        let existing = match self
            .repository
            .claim(conn, &claim, &attempt.request_hash, response, KEY_TTL)
            .await?
        {
            ClaimOutcome::Claimed => return Ok(Claimed::Proceed),
            ClaimOutcome::InFlight => return Ok(Claimed::Earlier(Earlier::InFlight)),
            ClaimOutcome::Existing(existing) => existing,
        };
        if existing.request_hash != attempt.request_hash {
            return Err(AppError::unprocessable(
                "Idempotency-Key was already used with a different request",
            ));
        }
        if let (Some(status), Some(body)) = (existing.response_status, existing.response_body) {
            return Ok(Claimed::Earlier(Earlier::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
            })));
        }
        Ok(Claimed::Earlier(Earlier::Unfinished {
            claim: Claim {
                resource_id: existing.resource_id,
                ..claim
            },
            lock_expired: existing.lock_expired,
        }))
    }

    /// Stores the refusal (a client error) of an attempt whose operation rolled back, so a retry
    /// is refused the same way; nothing is stored if another request under the key committed
    /// meanwhile.
    pub async fn refuse(
        &self,
        attempt: &Attempt,
        response: &StoredResponse,
    ) -> Result<(), AppError> {
        self.repository
            .refuse(
                &self.pool,
                &attempt.claim(),
                &attempt.request_hash,
                response,
                KEY_TTL,
            )
            .await
    }

    /// Stores the response rebuilt from the resource of an [`Earlier::Unfinished`] key.
    pub async fn complete(&self, claim: &Claim, response: &StoredResponse) -> Result<(), AppError> {
        self.repository.complete(&self.pool, claim, response).await
    }

    /// Deletes expired keys, a few thousand per statement; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, AppError> {
        crate::retention::in_batches(|limit| async move {
            self.repository.purge_expired(&self.pool, limit).await
        })
        .await
    }
}
