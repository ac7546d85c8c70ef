//! Report rules: who may request and read which report, and the build's bookkeeping.

use futures::stream::BoxStream;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::UnitOfWork,
    error::AppError,
    events::{DomainEvent, EventBus},
    jobs::{Job, JobPolicies, ReportJob},
    queue::{Outbox, outbox},
    reports::{
        events::ReportEvent,
        model::{Report, ReportRequest, ReportStatus, SalesRow},
        repository::ReportRepository,
    },
    users::Actor,
};

/// Reports.
#[derive(Debug, Clone)]
pub struct ReportService {
    pool: PgPool,
    reports: ReportRepository,
    events: EventBus,
    outbox: Outbox,
    policies: JobPolicies,
}

impl ReportService {
    /// Wires the service.
    pub fn new(pool: PgPool, events: EventBus, outbox: Outbox, policies: JobPolicies) -> Self {
        Self {
            pool,
            reports: ReportRepository,
            events,
            outbox,
            policies,
        }
    }

    /// Records a report request and stages its build job (delayed to `run_at` if given).
    #[tracing::instrument(skip(self, request), fields(user_id = %actor.user_id))]
    pub async fn request(&self, actor: &Actor, request: ReportRequest) -> Result<Report, AppError> {
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let report = self
            .reports
            .insert(uow.conn(), actor.user_id, &request)
            .await?;
        let mut spec = ReportJob {
            report_id: report.id,
        }
        .spec(&self.policies);
        spec.run_at = request.run_at;
        outbox::stage(&mut uow, spec).await?;
        self.outbox.commit(uow).await?;
        Ok(report)
    }

    /// A report the actor may see (own, or any for admins); others are 404.
    pub async fn get(&self, actor: &Actor, id: Uuid) -> Result<Report, AppError> {
        self.reports
            .find(&self.pool, id)
            .await?
            .filter(|r| actor.may_access(r.user_id))
            .ok_or_else(|| AppError::not_found("report not found"))
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
    pub async fn mark_ready(
        &self,
        id: Uuid,
        row_count: i64,
        byte_size: i64,
        file_key: &str,
    ) -> Result<Report, AppError> {
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let report = self
            .reports
            .mark_ready(uow.conn(), id, row_count, byte_size, file_key)
            .await?;
        self.events
            .publish(
                &mut uow,
                DomainEvent::Report(ReportEvent::Ready {
                    report: report.clone(),
                }),
            )
            .await?;
        self.outbox.commit(uow).await?;
        Ok(report)
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

    /// The sales lines of a report's range, streamed.
    pub fn sales_rows(&self, report: &Report) -> BoxStream<'_, Result<SalesRow, sqlx::Error>> {
        self.reports
            .sales_rows(&self.pool, report.from_date, report.to_date)
    }
}
