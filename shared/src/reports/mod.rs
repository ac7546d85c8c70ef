//! Reports: sales exports requested over HTTP, built by a worker into a CSV file in storage,
//! downloaded by their owner (or an admin). `job` declares the build job.

pub mod events;
pub mod job;
pub mod model;
pub mod repository;
pub mod service;

pub use model::{Report, ReportKind, ReportRequest, ReportStatus, SalesRow};
pub use service::{ReportDownload, ReportService};
