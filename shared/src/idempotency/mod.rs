//! Idempotency keys for unsafe requests (the IETF `Idempotency-Key` draft, with Stripe's rules).
//!
//! - Same key, same request, same user: the first response is returned again, byte for byte,
//!   and nothing is done twice.
//! - Same key, different request: 422. Same key while the first request is still running: 409.
//! - Keys expire after 24 hours.
//!
//! The flow around a handler: [`IdempotencyService::begin`] claims the key and assigns, in the
//! same statement, the id the resource will have ([`Claim::resource_id`]); the operation
//! creates the resource *with that id*, so the key is linked to it by the resource's own commit
//! and no extra statement; after the commit the response bytes are stored
//! ([`IdempotencyService::complete`], or for a success [`IdempotencyService::complete_later`]:
//! a background writer stores the responses of many requests in one statement, off the
//! response's path, since until it lands a retry is answered from the resource itself).
//!
//! A key with no stored response ([`Begin::Unfinished`]) means an earlier attempt committed and
//! died before storing its answer, or is still running, or died before committing. The caller
//! looks for the resource: found, it is answered from it; not found and the claim's lock has
//! run out, the claim is taken over ([`IdempotencyService::take_over`]) and the operation runs
//! with the same resource id; otherwise 409. A crash can never produce a second order, and even
//! an attempt that commits after its claim was presumed dead cannot: the resource id is the
//! order's primary key.

mod repository;

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::AppError;
use repository::{ClaimOutcome, IdempotencyRepository};

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A claimed key: the caller runs the operation and then completes or releases it.
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

/// What to do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time (or the earlier attempt died before doing anything): run the operation.
    Proceed(Claim),
    /// Done before: send this response again.
    Replay(StoredResponse),
    /// An earlier attempt has stored no response: if the resource `claim.resource_id` exists,
    /// it committed (and crashed before storing the response): rebuild the response from it and
    /// complete the claim. If not, it is still running, or died before committing when
    /// `lock_expired`: then [`IdempotencyService::take_over`] and run the operation.
    Unfinished {
        /// The earlier attempt's claim, with its resource id.
        claim: Claim,
        /// The earlier attempt is presumed dead (its lock ran out).
        lock_expired: bool,
    },
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

/// Most responses the background writer stores in one statement.
const COMPLETION_BATCH: usize = 500;

/// Remembers keys and their responses.
#[derive(Debug, Clone)]
pub struct IdempotencyService {
    pool: PgPool,
    repository: IdempotencyRepository,
    /// How long a claim blocks retries before it is presumed dead (longer than any request).
    lock_for: Duration,
    /// To the background writer of [`IdempotencyService::complete_later`].
    completions: mpsc::UnboundedSender<(Claim, StoredResponse)>,
}

impl IdempotencyService {
    /// A service over `pool`; a claim is presumed dead after `lock_for` without completion.
    /// Starts the background writer, so it must be called inside a tokio runtime.
    pub fn new(pool: PgPool, lock_for: Duration) -> Self {
        let (completions, pending) = mpsc::unbounded_channel();
        tokio::spawn(write_completions(pool.clone(), pending));
        Self {
            pool,
            repository: IdempotencyRepository,
            lock_for,
            completions,
        }
    }

    /// Claims `key` for `(user_id, scope)` with the request's fingerprint, or says why not.
    #[tracing::instrument(skip(self, request_hash))]
    pub async fn begin(
        &self,
        user_id: Uuid,
        scope: &'static str,
        key: &str,
        request_hash: &str,
    ) -> Result<Begin, AppError> {
        let claim = Claim {
            user_id,
            scope,
            key: key.to_owned(),
            resource_id: Uuid::now_v7(),
        };
        match self
            .repository
            .claim(&self.pool, &claim, request_hash, self.lock_for, KEY_TTL)
            .await?
        {
            ClaimOutcome::Claimed => Ok(Begin::Proceed(claim)),
            ClaimOutcome::Existing(existing) => {
                if existing.request_hash != request_hash {
                    return Err(AppError::unprocessable(
                        "Idempotency-Key was already used with a different request",
                    ));
                }
                if let (Some(status), Some(body)) =
                    (existing.response_status, existing.response_body)
                {
                    return Ok(Begin::Replay(StoredResponse {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    }));
                }
                Ok(Begin::Unfinished {
                    claim: Claim {
                        resource_id: existing.resource_id,
                        ..claim
                    },
                    lock_expired: existing.lock_expired,
                })
            }
        }
    }

    /// Takes over the claim of an attempt presumed dead, whose resource was found not to exist:
    /// locks the key again for this attempt, which keeps the resource id. False if another
    /// retry took it over first or the earlier attempt finished meanwhile.
    pub async fn take_over(&self, claim: &Claim) -> Result<bool, AppError> {
        self.repository
            .take_over(&self.pool, claim, self.lock_for)
            .await
    }

    /// Stores the response sent for the claim.
    pub async fn complete(&self, claim: &Claim, response: &StoredResponse) -> Result<(), AppError> {
        self.repository.complete(&self.pool, claim, response).await
    }

    /// Stores the response of a *successful* operation in the background, batched with other
    /// requests' (one statement for all that finished meanwhile). Until it is written, a retry
    /// finds the key unfinished and is answered from the resource the operation created, so
    /// the response is the same either way; if the process dies first, that recovery is what
    /// every retry gets. Refusals (4xx), which created nothing to recover from, go through
    /// [`IdempotencyService::complete`] before they are answered.
    pub fn complete_later(&self, claim: Claim, response: StoredResponse) {
        if let Err(mpsc::error::SendError((claim, _))) = self.completions.send((claim, response)) {
            tracing::warn!(key = %claim.key, "idempotency response writer is gone; a retry will be recovered from the resource");
        }
    }

    /// Forgets a claim whose operation failed in a way worth retrying (5xx), so a retry runs again.
    pub async fn release(&self, claim: &Claim) -> Result<(), AppError> {
        self.repository.delete(&self.pool, claim).await
    }

    /// Deletes expired keys, a few thousand per statement; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, AppError> {
        crate::retention::in_batches(|limit| async move {
            self.repository.purge_expired(&self.pool, limit).await
        })
        .await
    }
}

/// The background writer behind [`IdempotencyService::complete_later`]: everything that
/// arrived while the previous statement ran is stored by the next one.
async fn write_completions(
    pool: PgPool,
    mut pending: mpsc::UnboundedReceiver<(Claim, StoredResponse)>,
) {
    let repository = IdempotencyRepository;
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    while let Some(first) = pending.recv().await {
        batch.push(first);
        while batch.len() < COMPLETION_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Err(error) = repository.complete_many(&pool, &batch).await {
            // Not fatal: the keys stay unfinished and retries are answered from the resources.
            tracing::warn!(%error, responses = batch.len(), "storing idempotent responses failed");
        }
        batch.clear();
    }
}
