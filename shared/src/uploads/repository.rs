//! SQL for uploads and their row errors.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    error::AppError,
    uploads::model::{
        ErrorPage, ErrorPageRequest, FileDescription, RowError, StoredRowError, Upload,
        UploadPurpose, UploadRequest, UploadStatus,
    },
};

/// A new upload row.
#[derive(Debug, Clone, Copy)]
pub struct NewUpload<'a> {
    /// Id chosen when the file started arriving (it names the file's keys).
    pub id: Uuid,
    /// The admin whose request brought the file (deleting that user deletes the row).
    pub user_id: Uuid,
    /// Purpose and product.
    pub request: &'a UploadRequest,
    /// Name and declared type.
    pub file: &'a FileDescription,
    /// Where the file is.
    pub storage_key: &'a str,
    /// Bytes actually stored (counted while streaming, not the client's declared length).
    pub byte_size: u64,
    /// The job that processes it.
    pub job_id: Uuid,
}

/// Counters one committed import batch adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    /// Rows this batch applied; added to the upload's total only if the run still owns it.
    pub rows_ok: i64,
    /// Rows this batch refused, including those past the cap on stored row errors.
    pub rows_failed: i64,
    /// Percent of the file processed after this batch.
    pub progress: i16,
}

/// Uploads in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadRepository;

impl UploadRepository {
    /// Inserts a queued upload.
    #[tracing::instrument(skip_all, fields(upload_id = %upload.id))]
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        upload: NewUpload<'_>,
    ) -> Result<Upload, AppError> {
        Ok(sqlx::query_as!(
            Upload,
            r#"insert into uploads (id, user_id, purpose, product_id, filename, content_type,
                                   storage_key, byte_size, status, job_id)
               values ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9)
               returning id, user_id, purpose as "purpose: UploadPurpose", product_id, filename,
                         content_type, storage_key, byte_size, status as "status: UploadStatus",
                         run_id, rows_total, rows_ok, rows_failed, progress, error, result,
                         completed_at, created_at, updated_at, expired_at, job_id, cancelled_at"#,
            upload.id,
            upload.user_id,
            upload.request.purpose.as_str(),
            upload.request.product_id,
            upload.file.filename,
            upload.file.content_type,
            upload.storage_key,
            i64::try_from(upload.byte_size).unwrap_or(i64::MAX),
            upload.job_id,
        )
        .fetch_one(conn)
        .await?)
    }

    /// An upload by id.
    #[tracing::instrument(skip_all)]
    pub async fn find<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Upload>, AppError> {
        Ok(sqlx::query_as!(
            Upload,
            r#"select id, user_id, purpose as "purpose: UploadPurpose", product_id, filename,
                      content_type, storage_key, byte_size, status as "status: UploadStatus",
                      run_id, rows_total, rows_ok, rows_failed, progress, error, result,
                      completed_at, created_at, updated_at, expired_at, job_id,
                      cancelled_at
               from uploads where id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// Hands the upload to a new processing attempt `run_id` with its counters at zero; `None`
    /// when it is already completed, its original expired, or it is gone.
    #[tracing::instrument(skip_all)]
    pub async fn start_run(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        run_id: Uuid,
    ) -> Result<Option<Upload>, AppError> {
        Ok(sqlx::query_as!(
            Upload,
            r#"update uploads set status = 'processing', run_id = $2, rows_total = null, rows_ok = 0,
                      rows_failed = 0, progress = 0, error = null, result = null, completed_at = null
               where id = $1 and status not in ('completed', 'cancelled') and expired_at is null
               returning id, user_id, purpose as "purpose: UploadPurpose", product_id, filename,
                         content_type, storage_key, byte_size, status as "status: UploadStatus",
                         run_id, rows_total, rows_ok, rows_failed, progress, error, result,
                         completed_at, created_at, updated_at, expired_at, job_id, cancelled_at"#,
            id,
            run_id,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// Deletes every row error of an upload.
    #[tracing::instrument(skip_all)]
    pub async fn delete_errors(&self, conn: &mut PgConnection, id: Uuid) -> Result<(), AppError> {
        sqlx::query!("delete from upload_errors where upload_id = $1", id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Adds one batch's counts, if `run_id` still owns the upload; false when it does not. The
    /// row stays locked until the caller's transaction ends, so batches of two attempts never
    /// interleave.
    #[tracing::instrument(skip_all)]
    pub async fn add_counts(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        run_id: Uuid,
        counts: BatchCounts,
    ) -> Result<bool, AppError> {
        let updated = sqlx::query!(
            "update uploads set rows_ok = rows_ok + $3, rows_failed = rows_failed + $4, progress = $5 \
             where id = $1 and run_id = $2 and status = 'processing'",
            id,
            run_id,
            counts.rows_ok,
            counts.rows_failed,
            counts.progress,
        )
        .execute(conn)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// How many row errors are stored for an upload.
    pub async fn count_errors<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<i64, AppError> {
        Ok(sqlx::query_scalar!(
            r#"select count(*) as "count!" from upload_errors where upload_id = $1"#,
            id,
        )
        .fetch_one(db)
        .await?)
    }

    /// Stores row errors, in the order given.
    #[tracing::instrument(skip_all, fields(errors = errors.len()))]
    pub async fn insert_errors(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        errors: &[RowError],
    ) -> Result<(), AppError> {
        if errors.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch through arrays, so every batch size is the same
        // prepared statement; `unnest` yields the rows in array order, so the identity ids
        // follow the order given.
        let lines: Vec<i64> = errors
            .iter()
            .map(|e| i64::try_from(e.line).unwrap_or(i64::MAX))
            .collect();
        let fields: Vec<Option<&str>> = errors.iter().map(|e| e.field.as_deref()).collect();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        sqlx::query!(
            "insert into upload_errors (upload_id, line, field, message) \
             select $1, * from unnest($2::bigint[], $3::text[], $4::text[])",
            id,
            &lines,
            &fields as &[Option<&str>],
            &messages as &[&str],
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A page of an upload's row errors, in file order.
    #[tracing::instrument(skip_all)]
    pub async fn errors<'e>(
        &self,
        db: impl PgExecutor<'e> + Copy,
        id: Uuid,
        page: ErrorPageRequest,
    ) -> Result<ErrorPage, AppError> {
        let mut items = sqlx::query_as!(
            StoredRowError,
            "select id, line, field, message from upload_errors \
             where upload_id = $1 and id > $2 order by id limit $3",
            id,
            page.cursor.unwrap_or(0),
            i64::from(page.limit) + 1,
        )
        .fetch_all(db)
        .await?;
        let next_cursor = if items.len() > page.limit as usize {
            items.truncate(page.limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        let total = self.count_errors(db, id).await?;
        Ok(ErrorPage {
            items,
            total,
            next_cursor,
        })
    }

    /// Records a finished run.
    #[tracing::instrument(skip_all)]
    pub async fn complete<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        run_id: Uuid,
        rows_total: Option<i64>,
        result: &serde_json::Value,
    ) -> Result<Option<Upload>, AppError> {
        Ok(sqlx::query_as!(
            Upload,
            r#"update uploads set status = 'completed', progress = 100, rows_total = $3, result = $4,
                      error = null, completed_at = now()
               where id = $1 and run_id = $2 and status <> 'cancelled'
               returning id, user_id, purpose as "purpose: UploadPurpose", product_id, filename,
                         content_type, storage_key, byte_size, status as "status: UploadStatus",
                         run_id, rows_total, rows_ok, rows_failed, progress, error, result,
                         completed_at, created_at, updated_at, expired_at, job_id, cancelled_at"#,
            id,
            run_id,
            rows_total,
            result,
        )
        .fetch_optional(db)
        .await?)
    }

    /// Marks at most `limit` uploads that finished (completed, failed or cancelled) before
    /// `cutoff` and still have their original as expired, keeping their status, counters and
    /// result; returns the originals' keys, for the caller to delete from storage once this
    /// committed (a crash in between leaves a file behind, never a row whose file is gone while
    /// it says the file is there).
    #[tracing::instrument(skip_all)]
    pub async fn expire_finished_before(
        &self,
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>, AppError> {
        // When an upload finished: the expression of `uploads_expiry_candidates_idx`.
        Ok(sqlx::query_scalar!(
            r#"with doomed as (
                   select id from uploads
                   where expired_at is null and status in ('completed', 'failed', 'cancelled')
                     and coalesce(completed_at, cancelled_at, updated_at) < $1
                   order by coalesce(completed_at, cancelled_at, updated_at)
                   limit $2 for update skip locked)
               update uploads u set expired_at = now()
               from doomed where u.id = doomed.id
               returning u.storage_key"#,
            cutoff,
            limit,
        )
        .fetch_all(conn)
        .await?)
    }

    /// Records a failed attempt: `status` is `queued` while a retry is coming, else `failed`.
    /// With a `run_id`, only if that run still owns the upload.
    #[tracing::instrument(skip_all)]
    pub async fn fail<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        run_id: Option<Uuid>,
        error: &str,
        status: UploadStatus,
    ) -> Result<(), AppError> {
        sqlx::query!(
            "update uploads set status = $4, error = $3 \
             where id = $1 and ($2::uuid is null or run_id = $2) \
               and status not in ('completed', 'cancelled')",
            id,
            run_id,
            error,
            status.as_str(),
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Marks an upload cancelled unless its processing already finished; returns it if it
    /// changed. Rows an import applied before the stop stay applied (each batch committed on
    /// its own); the counters say how many.
    #[tracing::instrument(skip_all)]
    pub async fn mark_cancelled<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Upload>, AppError> {
        Ok(sqlx::query_as!(
            Upload,
            r#"update uploads set status = 'cancelled', cancelled_at = now()
               where id = $1 and status in ('queued', 'processing')
               returning id, user_id, purpose as "purpose: UploadPurpose", product_id, filename,
                         content_type, storage_key, byte_size, status as "status: UploadStatus",
                         run_id, rows_total, rows_ok, rows_failed, progress, error, result,
                         completed_at, created_at, updated_at, expired_at, job_id, cancelled_at"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }
}
