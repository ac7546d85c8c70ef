//! Emails sent: one record per message handed to the mail server, keyed by the job that sent
//! it, so a job retried after a successful send does not send twice.

use sqlx::PgPool;

use crate::error::AppError;

/// A sent message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SentEmail {
    /// The job that sent it.
    pub job_id: String,
    /// Job kind.
    pub kind: String,
    /// To.
    pub recipient: String,
    /// Subject.
    pub subject: String,
}

/// The sent-mail log.
#[derive(Debug, Clone)]
pub struct SentEmailService {
    pool: PgPool,
}

impl SentEmailService {
    /// A log in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Whether the job already sent its message.
    pub async fn was_sent(&self, job_id: &str) -> Result<bool, AppError> {
        Ok(sqlx::query_scalar::<_, bool>(
            "select exists(select 1 from sent_emails where job_id = $1)",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records a sent message (a second record for the same job is ignored).
    ///
    /// Asynchronous commit (`crate::db::async_commit_source`): the row is visible to a retry at
    /// once, and a retry happens only if the worker dies before acking the job; losing the row
    /// needs PostgreSQL to crash within the same fraction of a second as well. Every email then
    /// frees its worker slot without waiting for a WAL flush.
    pub async fn record(&self, email: &SentEmail) -> Result<(), AppError> {
        sqlx::query(concat!(
            "insert into sent_emails (job_id, kind, recipient, subject) \
             select $1, $2, $3, $4 from ",
            crate::db::async_commit_source!(),
            " as async_commit on conflict (job_id) do nothing"
        ))
        .bind(&email.job_id)
        .bind(&email.kind)
        .bind(&email.recipient)
        .bind(&email.subject)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Messages sent for a recipient, newest first (tests and support).
    pub async fn for_recipient(&self, recipient: &str) -> Result<Vec<SentEmail>, AppError> {
        Ok(sqlx::query_as::<_, SentEmail>(
            "select job_id, kind, recipient, subject from sent_emails where recipient = $1 order by sent_at desc",
        )
        .bind(recipient)
        .fetch_all(&self.pool)
        .await?)
    }
}
