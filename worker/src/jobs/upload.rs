//! Upload jobs: process one upload by id, a product import or a product image.
//!
//! - Import: the CSV streams from storage into a blocking thread that parses and validates it
//!   (the `csv` crate and the import rules of `orderly::uploads::import`), and hands batches of
//!   1,000 rows back over a bounded channel; each batch is applied in its own transaction
//!   (valid rows upserted by SKU, row errors stored, counts and progress added). Memory stays
//!   flat whatever the file's size: a couple of batches in flight and one small fingerprint per
//!   SKU.
//! - Image: the bytes (bounded by the upload limit) are identified, checked against
//!   decompression bombs and thumbnailed in `spawn_blocking` ([`crate::imaging`]); the thumbnail
//!   is stored under a key derived from the upload id and recorded on the upload. The product
//!   itself is not changed: its images are the completed `product_image` uploads naming it.
//!
//! Idempotent: every attempt starts the upload's counters and errors from zero (upserts by SKU
//! and the thumbnail's fixed key make repeating harmless), a completed upload is not processed
//! again, and an attempt that lost the upload to a newer one writes nothing more.
//!
//! Followed and stoppable: an import reports its progress (the share of the file read, rows
//! applied) to the job after every batch, and watches for a cancel request while it waits for
//! the next batch; on one it stops the parser, keeps the batches already committed (the counts
//! say how many rows were applied), marks the upload cancelled and ends the job cancelled. An
//! image checks before it stores its thumbnail.

use apalis_core::task::data::Data;
use orderly::{
    error::AppError,
    jobs::UploadJob,
    queue::{JobError, JobInfo, job::JobResultExt},
    uploads::{
        ImageSummary, Upload, UploadPurpose, UploadStatus,
        import::{IMPORT_BATCH_ROWS, ImportBatch, ImportHeader, RowValidator},
    },
};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};
use uuid::Uuid;

use crate::{context::JobContext, imaging};

/// Why an attempt stopped early.
#[derive(Debug)]
enum Stop {
    /// It failed; the error says whether retrying can help.
    Failed(JobError),
    /// A newer attempt owns the upload now; this one leaves it alone.
    Superseded,
    /// Someone asked the job to stop.
    Cancelled,
}

impl From<JobError> for Stop {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Cancelled(_) => Self::Cancelled,
            other => Self::Failed(other),
        }
    }
}

/// Sorts a service error: a conflict means another attempt took the upload over; anything else
/// is classified as every domain error is for the queue (the file missing, too large or
/// unreadable is permanent; database and storage trouble may pass).
impl From<AppError> for Stop {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Conflict(_) => Self::Superseded,
            other => Self::Failed(other.into()),
        }
    }
}

/// Processes one upload.
#[tracing::instrument(skip_all, fields(upload_id = %job.upload_id, attempt = info.attempt))]
pub async fn handle(
    job: UploadJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    let uploads = &ctx.services.uploads;
    let last_attempt = info.attempt >= info.max_attempts;
    let (upload, run_id) = match uploads.start_run(job.upload_id).await {
        Ok(Some(started)) => started,
        Ok(None) => {
            return match uploads
                .find(job.upload_id)
                .await
                .context("loading upload")?
            {
                Some(upload) if upload.status == UploadStatus::Cancelled => Err(
                    JobError::cancelled("the upload was cancelled before it was processed"),
                ),
                _ => {
                    tracing::warn!("upload already completed, expired or gone; nothing to do");
                    Ok(())
                }
            };
        }
        Err(error) => {
            let message = format!("could not start processing: {error:#}");
            let _ = uploads
                .fail(job.upload_id, None, &message, !last_attempt)
                .await;
            return Err(JobError::retry(message));
        }
    };
    let outcome = match upload.purpose {
        UploadPurpose::ProductImport => import_products(&ctx, &upload, run_id, &info).await,
        UploadPurpose::ProductImage => process_image(&ctx, &upload, run_id, &info).await,
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(Stop::Superseded) => {
            tracing::warn!("another attempt took this upload over; stopping");
            Ok(())
        }
        Err(Stop::Cancelled) => {
            uploads
                .mark_cancelled(upload.id)
                .await
                .context("marking upload cancelled")?;
            tracing::info!("upload processing stopped on request");
            Err(JobError::cancelled("stopped on request"))
        }
        Err(Stop::Failed(error)) => {
            let retrying = matches!(error, JobError::Retry { .. }) && !last_attempt;
            tracing::warn!(
                error = error.message(),
                retrying,
                "upload processing failed"
            );
            if let Err(record) = uploads
                .fail(upload.id, Some(run_id), error.message(), retrying)
                .await
            {
                tracing::error!(error = %record, "could not record the failure on the upload");
            }
            Err(error)
        }
    }
}

/// What the parsing thread sends: a batch to apply, or why it stopped.
type Parsed = Result<ImportBatch, JobError>;

async fn import_products(
    ctx: &JobContext,
    upload: &Upload,
    run_id: Uuid,
    info: &JobInfo,
) -> Result<(), Stop> {
    let uploads = &ctx.services.uploads;
    let (size, stream) = uploads.open(upload).await?;
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    // Two batches in flight at most: the parser stays just ahead of the database.
    let (batches, mut received) = mpsc::channel::<Parsed>(2);
    let parser = tokio::task::spawn_blocking(move || parse_import(reader, size, &batches));

    let mut rows_applied = 0usize;
    loop {
        // Dropping the receiver on a cancel stops the parser at its next batch.
        let parsed = tokio::select! {
            parsed = received.recv() => parsed,
            _ = info.cancelled() => return Err(Stop::Cancelled),
        };
        let Some(parsed) = parsed else { break };
        let batch = parsed?;
        uploads
            .apply_import_batch(upload.id, run_id, &batch)
            .await?;
        rows_applied += batch.products.len();
        tracing::debug!(progress = batch.progress, "import batch applied");
        info.progress(
            f64::from(batch.progress) / 100.0,
            &format!("{rows_applied} rows applied"),
        )
        .await;
    }
    let rows_total = parser.await.context("the import parser stopped")??;
    let completed = uploads
        .complete_import(upload.id, run_id, rows_total)
        .await?;
    if completed.is_none() {
        return Err(Stop::Superseded);
    }
    info.progress(1.0, &format!("{rows_total} rows read")).await;
    tracing::info!(rows_total, "import completed");
    Ok(())
}

/// Reads the CSV (blocking), sending batches of [`IMPORT_BATCH_ROWS`] rows; returns the number
/// of data rows. A file-level problem (no header, a wrong header) is sent as a permanent error.
fn parse_import(
    reader: impl std::io::Read,
    size: u64,
    batches: &mpsc::Sender<Parsed>,
) -> Result<u64, JobError> {
    let parsed = read_import(reader, size, batches);
    if let Err(error) = &parsed {
        let _ = batches.blocking_send(Err(error.clone()));
    }
    parsed
}

/// The reading of [`parse_import`]; its error is also sent to the receiving side.
fn read_import(
    reader: impl std::io::Read,
    size: u64,
    batches: &mpsc::Sender<Parsed>,
) -> Result<u64, JobError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong width are reported per row, not as a failure of the whole file.
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    if !csv.read_byte_record(&mut record).map_err(csv_error)? {
        return Err(JobError::permanent(
            "the file is empty: expected a header row sku,name,price_cents,currency,stock",
        ));
    }
    let fields: Vec<&[u8]> = record.iter().collect();
    let header = ImportHeader::parse(&fields).map_err(JobError::permanent)?;
    let mut rows = RowValidator::new(header);
    let mut batch = ImportBatch::default();
    let mut rows_in_batch = 0usize;
    let mut rows_total = 0u64;
    loop {
        if !csv.read_byte_record(&mut record).map_err(csv_error)? {
            break;
        }
        rows_total += 1;
        let line = record.position().map_or(rows_total + 1, |p| p.line());
        let fields: Vec<&[u8]> = record.iter().collect();
        match rows.check(line, &fields) {
            Ok(product) => batch.products.push(product),
            Err(errors) => batch.errors.extend(errors),
        }
        rows_in_batch += 1;
        if rows_in_batch == IMPORT_BATCH_ROWS {
            // Never 100 before the end: completion says that.
            batch.progress = percent(csv.position().byte(), size).min(99);
            if batches
                .blocking_send(Ok(std::mem::take(&mut batch)))
                .is_err()
            {
                // The receiving side stopped (a batch failed); it reports why.
                return Ok(rows_total);
            }
            rows_in_batch = 0;
        }
    }
    if !batch.is_empty() {
        batch.progress = 99;
        let _ = batches.blocking_send(Ok(batch));
    }
    Ok(rows_total)
}

fn csv_error(error: csv::Error) -> JobError {
    if error.is_io_error() {
        // Reading from storage failed: another attempt may succeed.
        JobError::retry(format!("reading the upload: {error}"))
    } else {
        JobError::permanent(format!("the file is not valid CSV: {error}"))
    }
}

fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    u8::try_from(done.saturating_mul(100) / total).unwrap_or(100)
}

async fn process_image(
    ctx: &JobContext,
    upload: &Upload,
    run_id: Uuid,
    info: &JobInfo,
) -> Result<(), Stop> {
    let uploads = &ctx.services.uploads;
    let bytes = uploads.read_whole(upload).await?;
    let thumbnail = tokio::task::spawn_blocking(move || imaging::make_thumbnail(&bytes))
        .await
        .context("the image task stopped")?
        .map_err(|rejection| {
            let declared = upload
                .content_type
                .as_deref()
                .map(|t| format!(" (declared as {t}; the declared type is not trusted)"))
                .unwrap_or_default();
            JobError::permanent(format!("{rejection}{declared}"))
        })?;
    info.control.check()?;
    // The key is derived from the upload id, so a repeated attempt overwrites, never adds.
    let thumbnail_key = uploads.store_thumbnail(upload.id, thumbnail.png).await?;
    let summary = ImageSummary {
        format: thumbnail.format.to_owned(),
        width: thumbnail.width,
        height: thumbnail.height,
        thumbnail_key,
        thumbnail_width: thumbnail.thumbnail_width,
        thumbnail_height: thumbnail.thumbnail_height,
    };
    let completed = uploads.complete_image(upload.id, run_id, &summary).await?;
    if completed.is_none() {
        return Err(Stop::Superseded);
    }
    tracing::info!(format = %summary.format, width = summary.width, height = summary.height, "image processed");
    Ok(())
}
