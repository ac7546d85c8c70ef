//! The upload model, the parsed upload request, and the per-row errors of an import.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AppError;

/// What an uploaded file is for; decides what the worker does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum UploadPurpose {
    /// A CSV of products (`sku,name,price_cents,currency,stock`) upserted by SKU.
    ProductImport,
    /// A picture of one product; the worker checks it and makes a thumbnail.
    ProductImage,
}

impl UploadPurpose {
    /// The purpose's name, as clients send it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductImport => "product_import",
            Self::ProductImage => "product_image",
        }
    }

    /// Parses the `purpose` form field.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw.trim() {
            "product_import" => Ok(Self::ProductImport),
            "product_image" => Ok(Self::ProductImage),
            _ => Err(AppError::invalid_field(
                "purpose",
                "must be \"product_import\" or \"product_image\"",
            )),
        }
    }
}

/// Where an upload's processing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum UploadStatus {
    /// Stored; waiting for a worker (also between retries).
    Queued,
    /// A worker is on it.
    Processing,
    /// Done; see the counters and `result`.
    Completed,
    /// Gave up; see `error`.
    Failed,
    /// Stopped on request (before or while it was processed).
    Cancelled,
}

impl UploadStatus {
    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether processing is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Processing)
    }
}

/// An uploaded file and its processing state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Upload {
    /// Id (UUIDv7); also names the file's keys in storage.
    pub id: Uuid,
    /// The admin who uploaded it.
    pub user_id: Uuid,
    /// What it is for.
    pub purpose: UploadPurpose,
    /// The product an image belongs to.
    pub product_id: Option<Uuid>,
    /// The file name the client gave (without any directory part).
    pub filename: String,
    /// The content type the client declared; informational only.
    pub content_type: Option<String>,
    /// Where the file is in storage.
    pub storage_key: String,
    /// Size of the stored file, in bytes.
    pub byte_size: i64,
    /// Where processing stands; the job moves it, the client polls it.
    pub status: UploadStatus,
    /// The processing attempt that owns the counters (see the migration).
    pub run_id: Option<Uuid>,
    /// Data rows in the file, known once an import finished reading it.
    pub rows_total: Option<i64>,
    /// Rows the current attempt has applied (created or updated a product); reset when a new
    /// attempt starts, so a retried job never counts a row twice.
    pub rows_ok: i64,
    /// Rows refused (their reasons are in the upload's errors, up to a cap).
    pub rows_failed: i64,
    /// Percent of the file processed, 0 to 100.
    pub progress: i16,
    /// Why processing failed (or why the last attempt failed, while a retry is queued).
    pub error: Option<String>,
    /// What processing produced: the thumbnail and detected format, or the import summary.
    pub result: Option<serde_json::Value>,
    /// When processing finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// When the file was accepted and its job staged (set by the database, UTC).
    pub created_at: DateTime<Utc>,
    /// Last change of status or counters (kept by a database trigger, UTC).
    pub updated_at: DateTime<Utc>,
    /// When the original file was deleted, `UPLOAD_RETENTION_DAYS` after processing finished;
    /// the status, counters and result stay what processing made them (an image's thumbnail is
    /// not an original and is kept). `None` while the original is kept.
    pub expired_at: Option<DateTime<Utc>>,
    /// The queue job that processes it (absent on uploads older than cancellation).
    pub job_id: Option<Uuid>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// A checked upload request: the form fields that come with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRequest {
    /// What the file is for.
    pub purpose: UploadPurpose,
    /// The product, for images (and only for images).
    pub product_id: Option<Uuid>,
}

impl UploadRequest {
    /// Checks the `purpose` and `product_id` form fields together.
    pub fn parse(purpose: Option<&str>, product_id: Option<&str>) -> Result<Self, AppError> {
        let purpose = purpose
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| {
                AppError::invalid_field(
                    "purpose",
                    "is required (\"product_import\" or \"product_image\")",
                )
            })
            .and_then(UploadPurpose::parse)?;
        let product_id = match product_id.map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(raw) => Some(
                Uuid::parse_str(raw)
                    .map_err(|_| AppError::invalid_field("product_id", "must be a UUID"))?,
            ),
        };
        match (purpose, product_id) {
            (UploadPurpose::ProductImage, None) => Err(AppError::invalid_field(
                "product_id",
                "is required when purpose is product_image",
            )),
            (UploadPurpose::ProductImport, Some(_)) => Err(AppError::invalid_field(
                "product_id",
                "must not be given for product_import (the file names products by sku)",
            )),
            _ => Ok(Self {
                purpose,
                product_id,
            }),
        }
    }
}

/// Longest file name kept.
pub const MAX_FILENAME_CHARS: usize = 255;
/// Longest declared content type kept.
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;

/// What the client said about the file: kept for people to read, never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDescription {
    /// The base name of the file, without directories or control characters.
    pub filename: String,
    /// The declared content type.
    pub content_type: Option<String>,
}

impl FileDescription {
    /// Cleans what the client sent: a name like `../../etc/passwd` becomes `passwd`, so the
    /// name can be shown anywhere without surprises (it never names a storage key).
    pub fn new(filename: Option<&str>, content_type: Option<&str>) -> Self {
        let base = filename
            .unwrap_or_default()
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default();
        let filename: String = base
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_FILENAME_CHARS)
            .collect();
        let filename = match filename.trim() {
            "" | "." | ".." => "upload".to_owned(),
            name => name.to_owned(),
        };
        let content_type = content_type
            .map(|t| {
                t.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_CONTENT_TYPE_CHARS)
                    .collect::<String>()
            })
            .filter(|t| !t.trim().is_empty());
        Self {
            filename,
            content_type,
        }
    }
}

/// One reason one row of an import was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Line in the file (the header is line 1).
    pub line: u64,
    /// The column at fault; `None` when the row as a whole is wrong.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl RowError {
    /// A problem with one column of `line`.
    pub fn field(line: u64, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A problem with the row as a whole.
    pub fn row(line: u64, message: impl Into<String>) -> Self {
        Self {
            line,
            field: None,
            message: message.into(),
        }
    }
}

/// A stored row error, as the status endpoint lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StoredRowError {
    /// Position in the upload's error list (the page cursor).
    pub id: i64,
    /// Line in the file.
    pub line: i64,
    /// The column at fault, if one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Default number of row errors per page.
pub const DEFAULT_ERRORS_LIMIT: u32 = 100;
/// Largest number of row errors per page.
pub const MAX_ERRORS_LIMIT: u32 = 500;

/// A page of an upload's row errors: `limit` entries after `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPageRequest {
    /// Entries per page.
    pub limit: u32,
    /// The `errors_next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

impl ErrorPageRequest {
    /// Parses `errors_limit` and `errors_cursor` as given in a query string.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, AppError> {
        let limit = limit.unwrap_or(DEFAULT_ERRORS_LIMIT);
        if !(1..=MAX_ERRORS_LIMIT).contains(&limit) {
            return Err(AppError::invalid_field(
                "errors_limit",
                format!("must be between 1 and {MAX_ERRORS_LIMIT}"),
            ));
        }
        let cursor = match cursor.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                AppError::invalid_field("errors_cursor", "is not a valid cursor")
            })?),
        };
        Ok(Self { limit, cursor })
    }
}

impl Default for ErrorPageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_ERRORS_LIMIT,
            cursor: None,
        }
    }
}

/// Some of an upload's row errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    /// The entries, in file order.
    pub items: Vec<StoredRowError>,
    /// How many entries are stored for the upload in all.
    pub total: i64,
    /// Pass as `errors_cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<i64>,
}

/// An upload with a page of its row errors: what the status endpoint shows.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadReport {
    /// The upload.
    pub upload: Upload,
    /// Its row errors.
    pub errors: ErrorPage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_check_purpose_and_product_together() {
        let id = Uuid::now_v7().to_string();
        assert_eq!(
            UploadRequest::parse(Some("product_import"), None).unwrap(),
            UploadRequest {
                purpose: UploadPurpose::ProductImport,
                product_id: None
            }
        );
        assert!(UploadRequest::parse(Some("product_image"), Some(&id)).is_ok());
        for (purpose, product, field) in [
            (None, None, "purpose"),
            (Some(" "), None, "purpose"),
            (Some("avatar"), None, "purpose"),
            (Some("product_image"), None, "product_id"),
            (Some("product_image"), Some("not-a-uuid"), "product_id"),
            (Some("product_import"), Some(id.as_str()), "product_id"),
        ] {
            let error = UploadRequest::parse(purpose, product).unwrap_err();
            assert_eq!(error.status(), 422);
            assert!(
                error.to_string().starts_with(field),
                "{purpose:?}/{product:?}: {error}"
            );
        }
    }

    #[test]
    fn file_names_lose_directories_and_control_characters() {
        let d = FileDescription::new(Some("../../etc/pass\nwd"), Some("text/csv"));
        assert_eq!(d.filename, "passwd");
        assert_eq!(d.content_type.as_deref(), Some("text/csv"));
        assert_eq!(
            FileDescription::new(Some("C:\\x\\a.png"), None).filename,
            "a.png"
        );
        assert_eq!(FileDescription::new(None, Some("")).filename, "upload");
        assert_eq!(FileDescription::new(Some(".."), None).filename, "upload");
        assert_eq!(FileDescription::new(None, Some("")).content_type, None);
    }

    #[test]
    fn error_pages_are_bounded() {
        assert_eq!(
            ErrorPageRequest::parse(None, None).unwrap(),
            ErrorPageRequest::default()
        );
        assert_eq!(
            ErrorPageRequest::parse(Some(10), Some("42")).unwrap(),
            ErrorPageRequest {
                limit: 10,
                cursor: Some(42)
            }
        );
        assert!(ErrorPageRequest::parse(Some(0), None).is_err());
        assert!(ErrorPageRequest::parse(Some(MAX_ERRORS_LIMIT + 1), None).is_err());
        assert!(ErrorPageRequest::parse(None, Some("x")).is_err());
        assert!(ErrorPageRequest::parse(None, Some("-1")).is_err());
    }
}
