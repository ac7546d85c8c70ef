//! Request and response shapes of the uploads routes.

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    uploads::{ErrorPage, ErrorPageRequest, StoredRowError, Upload, UploadReport},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `POST /uploads` body, as `multipart/form-data` (documentation only: the handler streams the
/// parts as they arrive and never holds the file in memory).
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// `product_import` (a CSV with the header `sku,name,price_cents,currency,stock`) or
    /// `product_image` (PNG, JPEG, GIF or WebP).
    #[schema(example = "product_import")]
    pub purpose: String,
    /// The product the image shows; required for `product_image`, refused for `product_import`.
    pub product_id: Option<Uuid>,
    /// The file, at most `UPLOAD_MAX_BYTES` bytes. Its declared content type is kept but never
    /// trusted: images are identified from their bytes.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The form fields that come with the file, as sent.
#[derive(Debug, Default)]
pub struct UploadFields {
    /// The `purpose` part's text, not yet checked against the known purposes.
    pub purpose: Option<String>,
    /// The `product_id` part's text, not yet parsed as a UUID.
    pub product_id: Option<String>,
}

/// The answer to an accepted upload: processing happens in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAccepted {
    /// Follow it at `GET /api/v1/uploads/{id}` (also the `Location` header).
    #[schema(example = "01a20ddf-cae0-7f83-8362-a5070f348573")]
    pub id: Uuid,
    /// Always `queued`: processing starts in the background after this answer.
    #[schema(example = "queued")]
    pub status: String,
}

impl From<Upload> for UploadAccepted {
    fn from(upload: Upload) -> Self {
        Self {
            id: upload.id,
            status: upload.status.as_str().to_owned(),
        }
    }
}

/// `GET /uploads/{id}` query: which page of row errors to include.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Row errors per page, 1 to 500 (default 100).
    pub errors_limit: Option<u32>,
    /// `errors_next_cursor` of the previous response.
    pub errors_cursor: Option<String>,
}

impl UploadQuery {
    /// The page of row errors asked for.
    pub fn errors_page(&self) -> Result<ErrorPageRequest, AppError> {
        ErrorPageRequest::parse(self.errors_limit, self.errors_cursor.as_deref())
    }
}

/// Why one row of an import was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowErrorResponse {
    /// Line in the file (the header is line 1).
    #[schema(example = 7)]
    pub line: i64,
    /// The column at fault; absent when the row as a whole is wrong.
    #[schema(example = "price_cents")]
    pub field: Option<String>,
    /// What is wrong.
    #[schema(example = "must be a whole number of minor units, got \"12.99\"")]
    pub message: String,
}

impl From<StoredRowError> for RowErrorResponse {
    fn from(e: StoredRowError) -> Self {
        Self {
            line: e.line,
            field: e.field,
            message: e.message,
        }
    }
}

/// An upload and where its processing stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResponse {
    /// Poll `GET /uploads/{id}` with it until `status` is `completed` or `failed`.
    #[schema(example = "01a20ddf-cae0-7f83-8362-a5070f348573")]
    pub id: Uuid,
    /// `product_import` or `product_image`.
    #[schema(example = "product_import")]
    pub purpose: String,
    /// `queued`, `processing`, `completed`, `failed` or `cancelled`.
    #[schema(example = "completed")]
    pub status: String,
    /// The product of an image; null for an import.
    #[schema(example = json!(null))]
    pub product_id: Option<Uuid>,
    /// File name as uploaded (without directories).
    #[schema(example = "products-2026-11.csv")]
    pub filename: String,
    /// Content type the client declared (kept, never trusted).
    #[schema(example = "text/csv")]
    pub content_type: Option<String>,
    /// Bytes received and stored.
    #[schema(example = 14_873)]
    pub byte_size: i64,
    /// Percent of the file processed, 0 to 100.
    #[schema(example = 100)]
    pub progress: i16,
    /// Data rows in the file; known once an import has read the whole file.
    #[schema(example = 250)]
    pub rows_total: Option<i64>,
    /// Rows handled so far (applied plus refused).
    #[schema(example = 250)]
    pub rows_processed: i64,
    /// Rows that created or updated a product.
    #[schema(example = 247)]
    pub rows_ok: i64,
    /// Rows refused; their reasons are in `errors`, up to the stored cap.
    #[schema(example = 3)]
    pub rows_failed: i64,
    /// Why processing failed (or, while `queued` again, why the last attempt failed).
    #[schema(example = json!(null))]
    pub error: Option<String>,
    /// What processing produced: for images the detected `format`, `width`, `height` and the
    /// `thumbnail_key`/`thumbnail_width`/`thumbnail_height`; for imports `errors_recorded` and
    /// `errors_truncated` (at most 1000 row errors are kept; `rows_failed` counts them all).
    #[schema(
        value_type = Option<Object>,
        example = json!({"errors_recorded": 3, "errors_truncated": false})
    )]
    pub result: Option<serde_json::Value>,
    /// A page of the refused rows' reasons, in file order.
    pub errors: Vec<RowErrorResponse>,
    /// How many row errors are stored in all (at most 1000; `rows_failed` counts them all).
    #[schema(example = 3)]
    pub errors_total: i64,
    /// Pass as `errors_cursor` for the next page of errors; absent on the last page.
    #[schema(example = json!(null))]
    pub errors_next_cursor: Option<String>,
    /// When the file was accepted (RFC 3339, UTC).
    #[schema(example = "2026-11-24T14:05:00Z")]
    pub created_at: DateTime<Utc>,
    /// Last change of status or progress (RFC 3339, UTC).
    #[schema(example = "2026-11-24T14:05:02Z")]
    pub updated_at: DateTime<Utc>,
    /// When processing completed (RFC 3339, UTC); absent for a failed or cancelled upload.
    #[schema(example = "2026-11-24T14:05:02Z")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the original file was deleted, `UPLOAD_RETENTION_DAYS` after processing finished
    /// (RFC 3339, UTC); null while it is kept. `status`, the counts and `result` still say
    /// what processing did, and an image's thumbnail is kept.
    #[schema(example = json!(null))]
    pub expired_at: Option<DateTime<Utc>>,
    /// When it was cancelled (RFC 3339, UTC); an import keeps the rows it applied before.
    #[schema(example = json!(null))]
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl UploadResponse {
    /// The upload without a page of its row errors (`errors` empty, `errors_total` what is
    /// stored): the final event of `GET /uploads/{id}/events`, whose client reads the errors
    /// with `GET /uploads/{id}` if it wants them.
    pub fn without_errors(upload: Upload) -> Self {
        let stored = upload.rows_failed.min(orderly::uploads::MAX_STORED_ERRORS);
        Self::from(UploadReport {
            upload,
            errors: ErrorPage {
                items: Vec::new(),
                total: stored,
                next_cursor: None,
            },
        })
    }
}

impl From<UploadReport> for UploadResponse {
    fn from(UploadReport { upload, errors }: UploadReport) -> Self {
        Self {
            id: upload.id,
            purpose: upload.purpose.as_str().to_owned(),
            status: upload.status.as_str().to_owned(),
            product_id: upload.product_id,
            filename: upload.filename,
            content_type: upload.content_type,
            byte_size: upload.byte_size,
            progress: upload.progress,
            rows_total: upload.rows_total,
            rows_processed: upload.rows_ok + upload.rows_failed,
            rows_ok: upload.rows_ok,
            rows_failed: upload.rows_failed,
            error: upload.error,
            result: upload.result,
            errors: errors.items.into_iter().map(Into::into).collect(),
            errors_total: errors.total,
            errors_next_cursor: errors.next_cursor.map(|c| c.to_string()),
            created_at: upload.created_at,
            updated_at: upload.updated_at,
            completed_at: upload.completed_at,
            expired_at: upload.expired_at,
            cancelled_at: upload.cancelled_at,
        }
    }
}
