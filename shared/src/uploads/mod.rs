//! Uploads: files admins send to the shop, stored first and processed by a worker afterwards.
//!
//! - `product_import`: a CSV of products (`sku,name,price_cents,currency,stock`), validated row
//!   by row with the catalogue's own checks ([`import`]) and upserted through `ProductService`
//!   in batches, each batch in one transaction; refused rows are reported with their line.
//! - `product_image`: a picture of a product, identified from its bytes and thumbnailed.
//!
//! The api streams the file to storage ([`incoming`]) and calls [`UploadService::accept`], which
//! records the upload and stages its `UploadJob` in one transaction; the worker reloads the
//! upload by id and reports progress on its row, which `GET /api/v1/uploads/{id}` reads.
//! Uploads use the catalogue only through `ProductService`; `job` declares the processing job.

pub mod import;
pub mod incoming;
pub mod job;
pub mod model;
pub mod repository;
pub mod service;

pub use incoming::ReceivedFile;
pub use model::{
    ErrorPage, ErrorPageRequest, FileDescription, RowError, StoredRowError, Upload, UploadPurpose,
    UploadReport, UploadRequest, UploadStatus,
};
pub use service::{ImageSummary, MAX_STORED_ERRORS, UploadCancel, UploadService};
