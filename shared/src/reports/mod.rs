//! Reports: sales exports requested over HTTP, or by an admin's report schedule, built by a
//! worker into a CSV file in storage, downloaded by their owner (or an admin). `job` declares
//! the build job and the scheduled run's job; `schedule*` are the schedules (rules, SQL,
//! service).

pub mod events;
pub mod job;
pub mod model;
pub mod repository;
pub mod schedule;
pub mod schedule_repository;
pub mod schedule_service;
pub mod service;

pub use model::{Report, ReportKind, ReportRequest, ReportStatus, SalesRow};
pub use schedule::{
    NewReportSchedule, ReportPeriod, ReportSchedule, ReportScheduleChanges, ScheduledRun,
};
pub use schedule_service::{Reconciled, ReportScheduleService, ReportScheduleView};
pub use service::{ReportCancel, ReportDownload, ReportService};
