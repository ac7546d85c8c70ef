//! Upload rules: a file is recorded (and its job staged) only once its bytes are safely in
//! storage; an image belongs to an existing product; an import applies whole batches or nothing,
//! counts each row once however often its job runs, and keeps a bounded list of row errors.

use std::collections::HashSet;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::{JobLifecycle, JobStager, LiveUpdate, RowCancel},
    products::ProductService,
    queue::{Job, Outbox, RunAt, UnitOfWork},
    storage::Storage,
    uploads::{
        import::ImportBatch,
        incoming::{self, ReceivedFile, original_key, thumbnail_key},
        job::UploadJob,
        model::{
            ErrorPageRequest, FileDescription, Upload, UploadReport, UploadRequest, UploadStatus,
        },
        repository::{BatchCounts, NewUpload, UploadRepository},
    },
    users::Actor,
};

/// Row errors kept per upload; later ones are only counted (`rows_failed`).
pub const MAX_STORED_ERRORS: i64 = 1_000;

/// What processing an image produced, recorded as the upload's `result`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSummary {
    /// The format found in the bytes (`png`, `jpeg`, `gif`, `webp`).
    pub format: String,
    /// Width of the original, in pixels.
    pub width: u32,
    /// Height of the original, in pixels.
    pub height: u32,
    /// Where the thumbnail is in storage.
    pub thumbnail_key: String,
    /// Width of the thumbnail.
    pub thumbnail_width: u32,
    /// Height of the thumbnail.
    pub thumbnail_height: u32,
}

/// Uploaded files from the request that brings them to the job that processes them: storage,
/// the upload rows, and an import's batches and progress.
#[derive(Debug, Clone)]
pub struct UploadService {
    pool: PgPool,
    uploads: UploadRepository,
    products: ProductService,
    storage: Storage,
    outbox: Outbox,
    jobs: JobStager,
    lifecycle: JobLifecycle,
    max_bytes: u64,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadCancel {
    /// Processing had not started: the upload is cancelled now.
    Cancelled(Upload),
    /// It is being processed: the worker was asked to stop and marks it cancelled within a
    /// second or so (follow it with [`UploadService::follow`]).
    Stopping(Upload),
}

/// How an upload's processing ended, for a client following it: `None` while in the works.
fn upload_ending(upload: &Upload) -> Option<&'static str> {
    match upload.status {
        UploadStatus::Queued | UploadStatus::Processing => None,
        UploadStatus::Completed => Some("completed"),
        UploadStatus::Failed => Some("failed"),
        UploadStatus::Cancelled => Some("cancelled"),
    }
}

impl UploadService {
    /// Wires the service; files larger than `max_bytes` are refused.
    pub fn new(
        pool: PgPool,
        products: ProductService,
        storage: Storage,
        outbox: Outbox,
        jobs: JobStager,
        lifecycle: JobLifecycle,
        max_bytes: u64,
    ) -> Self {
        Self {
            pool,
            uploads: UploadRepository,
            products,
            storage,
            outbox,
            jobs,
            lifecycle,
            max_bytes,
        }
    }

    /// Largest file accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Streams an incoming file to a temporary key: 413 past the size limit, 422 when empty;
    /// on any error nothing is left in storage.
    #[tracing::instrument(skip_all)]
    pub async fn receive<S>(&self, chunks: S) -> Result<ReceivedFile, AppError>
    where
        S: Stream<Item = Result<Bytes, AppError>> + Send,
    {
        incoming::receive(&self.storage, self.max_bytes, chunks).await
    }

    /// Checks what the request refers to: an image's product must exist (active or not).
    pub async fn check(&self, request: &UploadRequest) -> Result<(), AppError> {
        if let Some(product_id) = request.product_id {
            self.products
                .get(product_id, true)
                .await
                .map_err(|error| match error {
                    AppError::NotFound(_) => {
                        AppError::invalid_field("product_id", "no product has this id")
                    }
                    other => other,
                })?;
        }
        Ok(())
    }

    /// Records a received file and stages its processing job, in one transaction; if anything
    /// fails the file is deleted and no row is written.
    #[tracing::instrument(skip_all, fields(user_id = %actor.user_id, purpose = request.purpose.as_str(), size = file.size()))]
    pub async fn accept(
        &self,
        actor: &Actor,
        request: UploadRequest,
        description: FileDescription,
        mut file: ReceivedFile,
    ) -> Result<Upload, AppError> {
        let recorded = async {
            self.check(&request).await?;
            file.promote(original_key(file.id())).await?;
            let mut uow = UnitOfWork::begin(&self.pool).await?;
            // The row names its job (to cancel and follow it), so the job is staged first.
            let job = UploadJob {
                upload_id: file.id(),
            };
            let job_id = self.jobs.stage(&mut uow, &job, RunAt::Now).await?;
            let upload = self
                .uploads
                .insert(
                    uow.conn(),
                    NewUpload {
                        id: file.id(),
                        user_id: actor.user_id,
                        request: &request,
                        file: &description,
                        storage_key: file.key(),
                        byte_size: file.size(),
                        job_id,
                    },
                )
                .await?;
            self.outbox.commit(uow).await?;
            Ok::<_, AppError>(upload)
        }
        .await;
        match recorded {
            Ok(upload) => {
                file.keep();
                tracing::info!(upload_id = %upload.id, "upload accepted");
                Ok(upload)
            }
            Err(error) => {
                file.discard().await;
                Err(error)
            }
        }
    }

    /// An upload with a page of its row errors; 404 if there is no such upload.
    #[tracing::instrument(skip(self))]
    pub async fn report(&self, id: Uuid, page: ErrorPageRequest) -> Result<UploadReport, AppError> {
        let upload = self.get(id).await?;
        let errors = self.uploads.errors(&self.pool, id, page).await?;
        Ok(UploadReport { upload, errors })
    }

    /// An upload by id, for its job.
    pub async fn find(&self, id: Uuid) -> Result<Option<Upload>, AppError> {
        self.uploads.find(&self.pool, id).await
    }

    /// An upload by id; 404 if there is none.
    async fn get(&self, id: Uuid) -> Result<Upload, AppError> {
        self.uploads
            .find(&self.pool, id)
            .await?
            .ok_or_else(|| AppError::not_found("upload not found"))
    }

    /// Cancels an upload's processing: at once if it has not started; by asking its worker to
    /// stop if it runs (an import stops between batches, keeping the rows applied so far). An
    /// upload already processed is 409.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn cancel(&self, actor: &Actor, id: Uuid) -> Result<UploadCancel, AppError> {
        let upload = self.get(id).await?;
        let refused = |upload: &Upload| {
            AppError::conflict(format!(
                "upload is {}; only a queued or processing upload can be cancelled",
                upload.status.as_str()
            ))
        };
        if upload.status.is_final() {
            return Err(refused(&upload));
        }
        let reason = format!("cancelled by user {}", actor.user_id);
        let cancelled = self
            .lifecycle
            .cancel_row(UploadJob::QUEUE, upload.job_id, &reason, || {
                self.uploads.mark_cancelled(&self.pool, id)
            })
            .await?;
        match cancelled {
            RowCancel::Cancelled(upload) => Ok(UploadCancel::Cancelled(upload)),
            RowCancel::Stopping => Ok(UploadCancel::Stopping(upload)),
            // Processing ended between the read and the cancel; the row says how.
            RowCancel::Finished => Err(refused(&self.get(id).await?)),
        }
    }

    /// Follows an upload while it is processed: progress steps, then the upload as it ended
    /// (see [`crate::jobs::lifecycle`]). `after` is the last update the client saw.
    pub async fn follow(
        &self,
        id: Uuid,
        after: Option<String>,
    ) -> Result<BoxStream<'static, Result<LiveUpdate<Upload>, AppError>>, AppError> {
        let upload = self.get(id).await?;
        let (pool, uploads) = (self.pool.clone(), self.uploads);
        let load = move || {
            let pool = pool.clone();
            async move {
                uploads
                    .find(&pool, id)
                    .await?
                    .ok_or_else(|| AppError::not_found("upload not found"))
            }
        };
        Ok(self.lifecycle.follow(
            UploadJob::QUEUE,
            upload.job_id.map(|job_id| job_id.to_string()),
            after,
            load,
            upload_ending,
        ))
    }

    /// Marks an upload cancelled (its processing stopped on request); `None` if it had
    /// finished.
    pub async fn mark_cancelled(&self, id: Uuid) -> Result<Option<Upload>, AppError> {
        self.uploads.mark_cancelled(&self.pool, id).await
    }

    /// Starts a processing attempt: counters, progress and row errors start again from zero, so
    /// a retried job never counts a row twice. Returns the upload and the attempt's run id, or
    /// `None` when the upload is already completed (a job delivered twice) or gone.
    #[tracing::instrument(skip(self))]
    pub async fn start_run(&self, id: Uuid) -> Result<Option<(Upload, Uuid)>, AppError> {
        let run_id = Uuid::now_v7();
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let Some(upload) = self.uploads.start_run(uow.conn(), id, run_id).await? else {
            return Ok(None);
        };
        self.uploads.delete_errors(uow.conn(), id).await?;
        uow.commit().await?;
        Ok(Some((upload, run_id)))
    }

    /// The uploaded file as a byte stream, with its size; 410 if it expired (deleted after its
    /// retention), 404 if it is missing from storage.
    pub async fn open(
        &self,
        upload: &Upload,
    ) -> Result<(u64, BoxStream<'static, std::io::Result<Bytes>>), AppError> {
        if upload.expired_at.is_some() {
            return Err(AppError::gone(
                "the uploaded file was deleted after its retention period; upload it again",
            ));
        }
        let (file, stream) = self
            .storage
            .read(&upload.storage_key)
            .await
            .map_err(storage_error)?;
        Ok((file.size, stream.map_err(std::io::Error::other).boxed()))
    }

    /// The whole uploaded file (images); 404 if it is missing, 413 if it is larger than uploads
    /// may be (it cannot have come through the api, so it is not read).
    pub async fn read_whole(&self, upload: &Upload) -> Result<Vec<u8>, AppError> {
        let (size, mut stream) = self.open(upload).await?;
        if size > self.max_bytes {
            return Err(AppError::PayloadTooLarge(format!(
                "the stored file has {size} bytes, more than the upload limit of {} bytes",
                self.max_bytes
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or_default());
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| AppError::internal(format!("reading the upload: {e}")))?;
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(AppError::PayloadTooLarge(
                    "the stored file grew past the upload limit".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Applies one batch of an import in one transaction: its valid rows are upserted through
    /// the catalogue, its row errors stored (up to [`MAX_STORED_ERRORS`] per upload), its counts
    /// and progress added. All of it commits or none of it does. 409 when `run_id` no longer
    /// owns the upload (a newer attempt took over); then nothing is applied.
    #[tracing::instrument(skip_all, fields(upload_id = %id, rows = batch.products.len(), errors = batch.errors.len()))]
    pub async fn apply_import_batch(
        &self,
        id: Uuid,
        run_id: Uuid,
        batch: &ImportBatch,
    ) -> Result<(), AppError> {
        let rows_failed = batch
            .errors
            .iter()
            .map(|e| e.line)
            .collect::<HashSet<_>>()
            .len();
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        // First, so the upload row is locked for the rest of the batch and a superseded attempt
        // writes nothing.
        let owned = self
            .uploads
            .add_counts(
                uow.conn(),
                id,
                run_id,
                BatchCounts {
                    rows_ok: batch.products.len() as i64,
                    rows_failed: rows_failed as i64,
                    progress: i16::from(batch.progress.min(100)),
                },
            )
            .await?;
        if !owned {
            return Err(AppError::conflict(
                "another processing attempt took this upload over",
            ));
        }
        let written = self
            .products
            .upsert_batch(uow.conn(), &batch.products)
            .await?;
        if !batch.errors.is_empty() {
            let stored = self.uploads.count_errors(&mut *uow.conn(), id).await?;
            let room = usize::try_from(MAX_STORED_ERRORS - stored).unwrap_or_default();
            let kept = &batch.errors[..batch.errors.len().min(room)];
            self.uploads.insert_errors(uow.conn(), id, kept).await?;
        }
        uow.commit().await?;
        // Each batch's products show their new price and stock as soon as it commits.
        self.products.catalogue_edited(written).await;
        Ok(())
    }

    /// Finishes an import: the totals and whether the error list was cut (each batch already
    /// refreshed the cached catalogue when it committed).
    #[tracing::instrument(skip(self))]
    pub async fn complete_import(
        &self,
        id: Uuid,
        run_id: Uuid,
        rows_total: u64,
    ) -> Result<Option<Upload>, AppError> {
        let recorded = self.uploads.count_errors(&self.pool, id).await?;
        let upload = self
            .uploads
            .complete(
                &self.pool,
                id,
                run_id,
                Some(i64::try_from(rows_total).unwrap_or(i64::MAX)),
                &json!({
                    "errors_recorded": recorded,
                    "errors_truncated": recorded >= MAX_STORED_ERRORS,
                }),
            )
            .await?;
        Ok(upload)
    }

    /// Expires uploads that finished (completed, failed or cancelled) more than `retention` ago:
    /// the row keeps its outcome and says `expired_at`, and the original file is deleted from
    /// storage (an image's thumbnail stays: products show it). In batches; returns how many. A
    /// file that cannot be deleted is logged and left behind.
    pub async fn expire_old(&self, retention: std::time::Duration) -> Result<u64, AppError> {
        let cutoff = crate::retention::cutoff(retention);
        crate::retention::in_batches(|limit| async move {
            let keys = {
                let mut conn = self.pool.acquire().await?;
                self.uploads
                    .expire_finished_before(&mut conn, cutoff, limit)
                    .await?
            };
            for key in &keys {
                if let Err(error) = self.storage.delete(key).await {
                    tracing::warn!(%error, key, "could not delete an expired upload's original");
                }
            }
            Ok(keys.len() as u64)
        })
        .await
    }

    /// Stores an image upload's thumbnail; returns its key.
    #[tracing::instrument(skip(self, png), fields(bytes = png.len()))]
    pub async fn store_thumbnail(&self, id: Uuid, png: Vec<u8>) -> Result<String, AppError> {
        let key = thumbnail_key(id);
        self.storage
            .put(&key, Bytes::from(png))
            .await
            .map_err(|e| AppError::internal(format!("could not store the thumbnail: {e}")))?;
        Ok(key)
    }

    /// Finishes an image upload.
    #[tracing::instrument(skip(self, summary))]
    pub async fn complete_image(
        &self,
        id: Uuid,
        run_id: Uuid,
        summary: &ImageSummary,
    ) -> Result<Option<Upload>, AppError> {
        self.uploads
            .complete(
                &self.pool,
                id,
                run_id,
                None,
                &serde_json::to_value(summary)?,
            )
            .await
    }

    /// Records a failed attempt: `retrying` keeps it queued for the next one.
    #[tracing::instrument(skip(self))]
    pub async fn fail(
        &self,
        id: Uuid,
        run_id: Option<Uuid>,
        error: &str,
        retrying: bool,
    ) -> Result<(), AppError> {
        let status = if retrying {
            UploadStatus::Queued
        } else {
            UploadStatus::Failed
        };
        self.uploads
            .fail(&self.pool, id, run_id, error, status)
            .await
    }
}

fn storage_error(error: object_store::Error) -> AppError {
    match error {
        object_store::Error::NotFound { .. } => {
            AppError::not_found("the uploaded file is missing from storage")
        }
        other => AppError::internal(format!("storage: {other}")),
    }
}
