//! SQL for the sent-mail log.

use sqlx::PgExecutor;

use crate::{emails::SentEmail, error::AppError};

/// The `sent_emails` table.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SentEmailRepository;

impl SentEmailRepository {
    /// Whether a row exists for the job.
    pub async fn exists<'e, E: PgExecutor<'e>>(
        &self,
        db: E,
        job_id: &str,
    ) -> Result<bool, AppError> {
        Ok(sqlx::query_scalar!(
            r#"select exists(select 1 from sent_emails where job_id = $1) as "exists!""#,
            job_id,
        )
        .fetch_one(db)
        .await?)
    }

    /// Inserts the row unless the job already has one, committing asynchronously (see
    /// `async_commit_source`): run it as its own autocommit statement, never inside a
    /// business transaction.
    pub async fn insert_async_commit<'e, E: PgExecutor<'e>>(
        &self,
        db: E,
        email: &SentEmail,
    ) -> Result<(), AppError> {
        // The `from` item is `async_commit_source!()` written out (a checked macro takes only
        // literals); a test in `db` keeps the two the same.
        sqlx::query!(
            "insert into sent_emails (job_id, kind, recipient, subject) \
             select $1, $2, $3, $4 from (select set_config('synchronous_commit', 'off', true)) \
             as async_commit on conflict (job_id) do nothing",
            email.job_id,
            email.kind,
            email.recipient,
            email.subject,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Rows for a recipient, newest first.
    pub async fn for_recipient<'e, E: PgExecutor<'e>>(
        &self,
        db: E,
        recipient: &str,
    ) -> Result<Vec<SentEmail>, AppError> {
        Ok(sqlx::query_as!(
            SentEmail,
            "select job_id, kind, recipient, subject from sent_emails where recipient = $1 order by sent_at desc",
            recipient,
        )
        .fetch_all(db)
        .await?)
    }

    /// Deletes at most `limit` records of messages sent before `cutoff`.
    pub async fn delete_sent_before<'e, E: PgExecutor<'e>>(
        &self,
        db: E,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<u64, AppError> {
        Ok(sqlx::query!(
            "delete from sent_emails where ctid in \
             (select ctid from sent_emails where sent_at < $1 limit $2)",
            cutoff,
            limit,
        )
        .execute(db)
        .await?
        .rows_affected())
    }
}
