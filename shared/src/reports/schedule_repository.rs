//! SQL for report schedules.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::{Page, PageRequest},
    reports::schedule::{NewReportSchedule, ReportPeriod, ReportSchedule},
};

/// Report schedules in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportScheduleRepository;

impl ReportScheduleRepository {
    /// Inserts a schedule owned by `user_id`.
    pub async fn insert<'e>(
        &self,
        db: impl PgExecutor<'e>,
        user_id: Uuid,
        new: &NewReportSchedule,
    ) -> Result<ReportSchedule, AppError> {
        Ok(sqlx::query_as!(
            ReportSchedule,
            r#"insert into report_schedules (id, user_id, kind, format, cron, time_zone, period)
               values ($1, $2, $3, $4, $5, $6, $7)
               returning id, user_id, kind, format, cron, time_zone,
                         period as "period: ReportPeriod", paused, created_at, updated_at"#,
            Uuid::now_v7(),
            user_id,
            new.kind.as_str(),
            new.format,
            new.cron,
            new.time_zone,
            new.period.as_str(),
        )
        .fetch_one(db)
        .await?)
    }

    /// A schedule by id.
    pub async fn find<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<ReportSchedule>, AppError> {
        Ok(sqlx::query_as!(
            ReportSchedule,
            r#"select id, user_id, kind, format, cron, time_zone,
                      period as "period: ReportPeriod", paused, created_at, updated_at
               from report_schedules where id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// A schedule by id, locked until the transaction ends (runs of one schedule, and changes
    /// to it, take their turns). The lock still lets reports reference the row.
    pub async fn lock(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<ReportSchedule>, AppError> {
        Ok(sqlx::query_as!(
            ReportSchedule,
            r#"select id, user_id, kind, format, cron, time_zone,
                      period as "period: ReportPeriod", paused, created_at, updated_at
               from report_schedules where id = $1 for no key update"#,
            id,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// A page of schedules, newest first.
    pub async fn list<'e>(
        &self,
        db: impl PgExecutor<'e>,
        page: &PageRequest,
    ) -> Result<Page<ReportSchedule>, AppError> {
        let rows = sqlx::query_as!(
            ReportSchedule,
            r#"select id, user_id, kind, format, cron, time_zone,
                      period as "period: ReportPeriod", paused, created_at, updated_at
               from report_schedules where ($1::uuid is null or id < $1)
               order by id desc limit $2"#,
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(db)
        .await?;
        Ok(Page::from_rows(rows, page, |s| s.id))
    }

    /// Every schedule (admins create them by hand: a few dozen, not millions).
    pub async fn all<'e>(&self, db: impl PgExecutor<'e>) -> Result<Vec<ReportSchedule>, AppError> {
        Ok(sqlx::query_as!(
            ReportSchedule,
            r#"select id, user_id, kind, format, cron, time_zone,
                      period as "period: ReportPeriod", paused, created_at, updated_at
               from report_schedules order by id"#,
        )
        .fetch_all(db)
        .await?)
    }

    /// Writes a schedule's changeable fields; returns it as stored.
    pub async fn update(
        &self,
        conn: &mut PgConnection,
        schedule: &ReportSchedule,
    ) -> Result<ReportSchedule, AppError> {
        Ok(sqlx::query_as!(
            ReportSchedule,
            r#"update report_schedules
               set kind = $2, format = $3, cron = $4, time_zone = $5, period = $6, paused = $7
               where id = $1
               returning id, user_id, kind, format, cron, time_zone,
                         period as "period: ReportPeriod", paused, created_at, updated_at"#,
            schedule.id,
            schedule.kind,
            schedule.format,
            schedule.cron,
            schedule.time_zone,
            schedule.period.as_str(),
            schedule.paused,
        )
        .fetch_one(conn)
        .await?)
    }

    /// Deletes a schedule (its reports stay, no longer linked to it); `false` if there was none.
    pub async fn delete<'e>(&self, db: impl PgExecutor<'e>, id: Uuid) -> Result<bool, AppError> {
        let deleted = sqlx::query!("delete from report_schedules where id = $1", id)
            .execute(db)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }
}
