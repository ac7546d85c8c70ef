//! Emails: which domain events send which message ([`subscriber`]), the email job
//! ([`job::EmailJob`]), and the sent-mail log: one record per message handed to the mail
//! server, keyed by the job that sent it, so a job retried after a successful send does not
//! send twice.

pub mod job;
mod repository;
pub mod subscriber;

use repository::SentEmailRepository;
use sqlx::PgPool;

use crate::error::AppError;

/// A sent message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SentEmail {
    /// The job that sent it.
    pub job_id: String,
    /// Job kind.
    pub kind: String,
    /// The address it went to (the `To` mailbox, exactly as stored on the user).
    pub recipient: String,
    /// The subject line as sent (rendered from the template).
    pub subject: String,
}

/// The sent-mail log.
#[derive(Debug, Clone)]
pub struct SentEmailService {
    pool: PgPool,
    /// Its SQL.
    repository: SentEmailRepository,
}

impl SentEmailService {
    /// A log in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            repository: SentEmailRepository,
        }
    }

    /// Whether the job already sent its message.
    pub async fn was_sent(&self, job_id: &str) -> Result<bool, AppError> {
        self.repository.exists(&self.pool, job_id).await
    }

    /// Records a sent message (a second record for the same job is ignored).
    ///
    /// Asynchronous commit (`orderly_queue::async_commit_source`): the row is visible to a retry at
    /// once, and a retry happens only if the worker dies before acking the job; losing the row
    /// needs PostgreSQL to crash within the same fraction of a second as well. Every email then
    /// frees its worker slot without waiting for a WAL flush. That is why the record is its own
    /// statement on the pool, never part of a caller's transaction.
    pub async fn record(&self, email: &SentEmail) -> Result<(), AppError> {
        self.repository.insert_async_commit(&self.pool, email).await
    }

    /// Deletes the records of messages sent more than `retention` ago, a few thousand per
    /// statement; returns how many. Keep `retention` far beyond an email job's retries (about
    /// an hour): a record is what stops a retried job from sending twice.
    pub async fn prune(&self, retention: std::time::Duration) -> Result<u64, AppError> {
        let cutoff = crate::retention::cutoff(retention);
        crate::retention::in_batches(|limit| async move {
            self.repository
                .delete_sent_before(&self.pool, cutoff, limit)
                .await
        })
        .await
    }

    /// Messages sent for a recipient, newest first (tests and support).
    pub async fn for_recipient(&self, recipient: &str) -> Result<Vec<SentEmail>, AppError> {
        self.repository.for_recipient(&self.pool, recipient).await
    }
}
