//! Report rules: who may request and read which report, how many a user may have in the works,
//! and the build's bookkeeping.
//!
//! The shop-wide `sales` report lists every customer's orders and email address, so only admins
//! may request it; `my_orders` gives anyone their own orders. A user may have at most
//! [`MAX_OPEN_REPORTS_PER_USER`] reports queued or running: each one is a scan of up to five
//! years of orders, and the count is checked before anything is written.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    events::{DomainEvent, EventBus},
    jobs::{JobLifecycle, JobStager, LiveUpdate, RowCancel},
    pagination::{Page, PageRequest},
    queue::{Job, Outbox, RunAt, UnitOfWork},
    reports::{
        events::ReportEvent,
        job::ReportJob,
        model::{Report, ReportKind, ReportRequest, ReportStatus, SalesRow},
        repository::ReportRepository,
    },
    storage::Storage,
    users::Actor,
};

/// How many reports one user may have queued or running at once.
pub const MAX_OPEN_REPORTS_PER_USER: i64 = 3;

/// A ready report's file, opened for download.
pub struct ReportDownload {
    /// The report.
    pub report: Report,
    /// The file's size in bytes.
    pub size: u64,
    /// The name to offer the file under: `{kind}-{from}-{to}.csv`.
    pub file_name: String,
    /// The file's contents, streamed from storage.
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Reports: who may request and read which, the per-user cap, downloads, and the build bookkeeping.
#[derive(Debug, Clone)]
pub struct ReportService {
    pool: PgPool,
    reports: ReportRepository,
    /// Where built report files are, for downloads.
    storage: Storage,
    events: EventBus,
    outbox: Outbox,
    jobs: JobStager,
    lifecycle: JobLifecycle,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportCancel {
    /// The report had not started: it is cancelled now.
    Cancelled(Report),
    /// It is being built: the worker was asked to stop, deletes what it wrote and marks the row
    /// cancelled within a second or so (follow it with [`ReportService::follow`]).
    Stopping(Report),
}

/// How a report's build ended, for a client following it: `None` while it is in the works.
fn report_ending(report: &Report) -> Option<&'static str> {
    match report.status {
        ReportStatus::Queued | ReportStatus::Running => None,
        ReportStatus::Ready | ReportStatus::Expired => Some("completed"),
        ReportStatus::Failed => Some("failed"),
        ReportStatus::Cancelled => Some("cancelled"),
    }
}

impl ReportService {
    /// Wires the service.
    pub fn new(
        pool: PgPool,
        storage: Storage,
        events: EventBus,
        outbox: Outbox,
        jobs: JobStager,
        lifecycle: JobLifecycle,
    ) -> Self {
        Self {
            pool,
            reports: ReportRepository,
            storage,
            events,
            outbox,
            jobs,
            lifecycle,
        }
    }

    /// Records a report request and stages its build job (delayed to `run_at` if given).
    /// A customer asking for the shop-wide `sales` report is refused (403), and so is anyone
    /// with [`MAX_OPEN_REPORTS_PER_USER`] reports already queued or running (409).
    #[tracing::instrument(skip(self, request), fields(user_id = %actor.user_id))]
    pub async fn request(&self, actor: &Actor, request: ReportRequest) -> Result<Report, AppError> {
        if request.kind == ReportKind::Sales && !actor.is_admin() {
            return Err(AppError::forbidden(
                "the sales report covers every customer and is for admins; \
                 ask for \"my_orders\" to export your own orders",
            ));
        }
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        // Requests of one user are serialised for the count and the insert, so two concurrent
        // requests cannot both pass a cap that only one of them fits under.
        self.reports.lock_user(uow.conn(), actor.user_id).await?;
        let open = self.reports.count_open(uow.conn(), actor.user_id).await?;
        if open >= MAX_OPEN_REPORTS_PER_USER {
            return Err(AppError::conflict(format!(
                "you already have {open} reports queued or running (at most \
                 {MAX_OPEN_REPORTS_PER_USER}); wait until one is ready"
            )));
        }
        // The row names its job (to cancel and follow it) and the job its row: the id comes
        // first, then the job, then the row, all in one transaction.
        let id = Uuid::now_v7();
        let job_id = self
            .jobs
            .stage(
                &mut uow,
                &ReportJob { report_id: id },
                RunAt::time_or_now(request.run_at),
            )
            .await?;
        let report = self
            .reports
            .insert(uow.conn(), id, actor.user_id, &request, job_id)
            .await?;
        self.outbox.commit(uow).await?;
        Ok(report)
    }

    /// Cancels a report the actor may see ([`Self::get`]'s rules) that is not built yet: one
    /// still waiting is cancelled at once; one being built is stopped by its worker, which
    /// deletes what it wrote. A report already finished is 409.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn cancel(&self, actor: &Actor, id: Uuid) -> Result<ReportCancel, AppError> {
        let report = self.get(actor, id).await?;
        if report.status.is_final() {
            return Err(AppError::conflict(format!(
                "report is {}; only a queued or running report can be cancelled",
                report.status.as_str()
            )));
        }
        let reason = format!("cancelled by user {}", actor.user_id);
        let cancelled = self
            .lifecycle
            .cancel_row(ReportJob::QUEUE, report.job_id, &reason, || {
                self.reports.mark_cancelled(&self.pool, id)
            })
            .await?;
        match cancelled {
            RowCancel::Cancelled(report) => Ok(ReportCancel::Cancelled(report)),
            RowCancel::Stopping => Ok(ReportCancel::Stopping(report)),
            // The build ended between the read and the cancel; the row says how.
            RowCancel::Finished => Err(self.finished_meanwhile(id).await),
        }
    }

    async fn finished_meanwhile(&self, id: Uuid) -> AppError {
        match self.reports.find(&self.pool, id).await {
            Ok(Some(report)) => AppError::conflict(format!(
                "report is {}; only a queued or running report can be cancelled",
                report.status.as_str()
            )),
            Ok(None) => AppError::not_found("report not found"),
            Err(error) => error,
        }
    }

    /// Follows a report the actor may see ([`Self::get`]'s rules) while it is built: progress
    /// steps, then the report as it ended (see [`crate::jobs::lifecycle`]). `after` is the last
    /// update the client saw (`Last-Event-ID`).
    pub async fn follow(
        &self,
        actor: &Actor,
        id: Uuid,
        after: Option<String>,
    ) -> Result<BoxStream<'static, Result<LiveUpdate<Report>, AppError>>, AppError> {
        let report = self.get(actor, id).await?;
        let (pool, reports) = (self.pool.clone(), self.reports);
        let load = move || {
            let pool = pool.clone();
            async move {
                reports
                    .find(&pool, id)
                    .await?
                    .ok_or_else(|| AppError::not_found("report not found"))
            }
        };
        Ok(self.lifecycle.follow(
            ReportJob::QUEUE,
            report.job_id.map(|job_id| job_id.to_string()),
            after,
            load,
            report_ending,
        ))
    }

    /// A report the actor may see (own, or any for admins); others are 404. A shop-wide
    /// report is 403 to a customer even if they once requested it (before the rule existed, or
    /// as an admin since demoted).
    pub async fn get(&self, actor: &Actor, id: Uuid) -> Result<Report, AppError> {
        let report = self
            .reports
            .find(&self.pool, id)
            .await?
            .filter(|r| actor.may_access(r.user_id))
            .ok_or_else(|| AppError::not_found("report not found"))?;
        if report.kind == ReportKind::Sales.as_str() && !actor.is_admin() {
            return Err(AppError::forbidden("the sales report is for admins"));
        }
        Ok(report)
    }

    /// The reports the actor may see, newest first: their own (admins: everyone's), only those
    /// of report schedule `schedule_id` if given. A customer's list leaves out shop-wide `sales`
    /// reports (which [`Self::get`] refuses them).
    pub async fn list(
        &self,
        actor: &Actor,
        schedule_id: Option<Uuid>,
        page: PageRequest,
    ) -> Result<Page<Report>, AppError> {
        let owner = (!actor.is_admin()).then_some(actor.user_id);
        self.reports
            .list(&self.pool, owner, schedule_id, actor.is_admin(), &page)
            .await
    }

    /// A ready report's file, for the actor to download. The access rules are those of
    /// [`Self::get`] (404, 403); a report not built yet (or whose build failed) is 409.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn download(&self, actor: &Actor, id: Uuid) -> Result<ReportDownload, AppError> {
        let report = self.get(actor, id).await?;
        let key = match (report.status, report.file_key.as_deref()) {
            (ReportStatus::Ready, Some(key)) => key,
            (ReportStatus::Expired, _) => {
                return Err(AppError::gone(
                    "the report's file was deleted after its retention period; request the \
                     report again",
                ));
            }
            _ => {
                return Err(AppError::conflict(format!(
                    "report is {}, not ready",
                    report.status.as_str()
                )));
            }
        };
        let (file, stream) = self
            .storage
            .read(key)
            .await
            .map_err(|e| AppError::internal(format!("reading report file: {e}")))?;
        let file_name = format!(
            "{}-{}-{}.csv",
            report.kind, report.from_date, report.to_date
        );
        Ok(ReportDownload {
            report,
            size: file.size,
            file_name,
            body: stream.map_err(std::io::Error::other).boxed(),
        })
    }

    /// Expires ready reports built more than `retention` ago: the row says `expired` (a
    /// download answers 410) and the file is deleted from storage. In batches; returns how
    /// many. A file that cannot be deleted is logged and left behind (nothing points to it).
    pub async fn expire_old(&self, retention: std::time::Duration) -> Result<u64, AppError> {
        let cutoff = crate::retention::cutoff(retention);
        crate::retention::in_batches(|limit| async move {
            let keys = {
                let mut conn = self.pool.acquire().await?;
                self.reports
                    .expire_built_before(&mut conn, cutoff, limit)
                    .await?
            };
            for key in keys.iter().flatten() {
                if let Err(error) = self.storage.delete(key).await {
                    tracing::warn!(%error, key, "could not delete an expired report's file");
                }
            }
            Ok(keys.len() as u64)
        })
        .await
    }

    /// A report by id, for the build job.
    pub async fn find(&self, id: Uuid) -> Result<Option<Report>, AppError> {
        self.reports.find(&self.pool, id).await
    }

    /// Marks a build started.
    pub async fn mark_running(&self, id: Uuid) -> Result<(), AppError> {
        self.reports.mark_running(&self.pool, id).await
    }

    /// Records a finished build and publishes `report.ready` (the email and webhooks follow).
    /// `None` when the report was cancelled meanwhile (nothing is recorded or published).
    pub async fn mark_ready(
        &self,
        id: Uuid,
        row_count: i64,
        byte_size: i64,
        file_key: &str,
    ) -> Result<Option<Report>, AppError> {
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let Some(report) = self
            .reports
            .mark_ready(uow.conn(), id, row_count, byte_size, file_key)
            .await?
        else {
            return Ok(None);
        };
        self.events
            .publish(
                &mut uow,
                DomainEvent::Report(ReportEvent::Ready {
                    report: report.clone(),
                }),
            )
            .await?;
        self.outbox.commit(uow).await?;
        Ok(Some(report))
    }

    /// Records how many rows a running build has written (the row's `row_count` while it runs).
    pub async fn record_progress(&self, id: Uuid, rows_written: i64) -> Result<(), AppError> {
        self.reports
            .record_progress(&self.pool, id, rows_written)
            .await
    }

    /// Marks a report cancelled (its build stopped on request); `None` if it had finished.
    pub async fn mark_cancelled(&self, id: Uuid) -> Result<Option<Report>, AppError> {
        self.reports.mark_cancelled(&self.pool, id).await
    }

    /// Deletes a file the build wrote (a cancelled or superseded build's partial file); a file
    /// that is not there is fine.
    pub async fn delete_file(&self, key: &str) {
        if let Err(error) = self.storage.delete(key).await {
            tracing::warn!(%error, key, "could not delete a report file");
        }
    }

    /// Records a failed build: `retrying` keeps it queued for the next attempt.
    pub async fn mark_failed(&self, id: Uuid, error: &str, retrying: bool) -> Result<(), AppError> {
        let status = if retrying {
            ReportStatus::Queued
        } else {
            ReportStatus::Failed
        };
        self.reports
            .mark_failed(&self.pool, id, error, status)
            .await
    }

    /// The lines of a report's range, streamed: every customer's for `sales`, the requester's
    /// own for `my_orders` (and for any kind this build does not know, nothing but theirs).
    pub fn sales_rows(&self, report: &Report) -> BoxStream<'_, Result<SalesRow, sqlx::Error>> {
        let customer = match ReportKind::parse(&report.kind) {
            Ok(ReportKind::Sales) => None,
            _ => Some(report.user_id),
        };
        self.reports
            .sales_rows(&self.pool, report.from_date, report.to_date, customer)
    }
}
