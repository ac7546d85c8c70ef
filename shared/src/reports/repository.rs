//! SQL for reports, and the streaming sales query the report job reads.

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::{Page, PageRequest},
    reports::{
        model::{Report, ReportRequest, ReportStatus, SalesRow},
        schedule::ReportSchedule,
    },
};

/// Reports in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportRepository;

impl ReportRepository {
    /// Inserts a queued report, built by job `job_id`.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        user_id: Uuid,
        request: &ReportRequest,
        job_id: Uuid,
    ) -> Result<Report, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"insert into reports (id, user_id, kind, format, from_date, to_date, status, run_at,
                                   job_id)
               values ($1, $2, $3, $4, $5, $6, 'queued', $7, $8)
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at, job_id, cancelled_at,
                         schedule_id"#,
            id,
            user_id,
            request.kind.as_str(),
            request.format,
            request.from,
            request.to,
            request.run_at,
            job_id,
        )
        .fetch_one(conn)
        .await?)
    }

    /// A report by id.
    pub async fn find<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Report>, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"select id, user_id, kind, format, from_date, to_date,
                      status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                      error, completed_at, created_at, updated_at, job_id, cancelled_at,
                      schedule_id
               from reports where id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// How many of `user_id`'s reports are queued or running (a partial index keeps this cheap
    /// however many finished reports the user has).
    pub async fn count_open<'e>(
        &self,
        db: impl PgExecutor<'e>,
        user_id: Uuid,
    ) -> Result<i64, AppError> {
        Ok(sqlx::query_scalar!(
            r#"select count(*) as "count!" from reports
               where user_id = $1 and status in ('queued', 'running')"#,
            user_id,
        )
        .fetch_one(db)
        .await?)
    }

    /// Holds a transaction-scoped lock on `user_id`'s report requests until commit or rollback.
    pub async fn lock_user(&self, conn: &mut PgConnection, user_id: Uuid) -> Result<(), AppError> {
        // `$1::uuid::text`: the macro types `$1` from its first cast, and the key must be the id's
        // text form, as it was when the id was bound to a bare `$1::text`.
        sqlx::query!(
            "select pg_advisory_xact_lock(hashtextextended('reports:' || $1::uuid::text, 0))",
            user_id,
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Sets a report running.
    pub async fn mark_running<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<(), AppError> {
        sqlx::query!(
            "update reports set status = 'running', error = null
             where id = $1 and status in ('queued', 'running')",
            id,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Records a finished build; `None` if the report was cancelled meanwhile.
    pub async fn mark_ready(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        row_count: i64,
        byte_size: i64,
        file_key: &str,
    ) -> Result<Option<Report>, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"update reports set status = 'ready', row_count = $2, byte_size = $3, file_key = $4,
                      error = null, completed_at = now()
               where id = $1 and status <> 'cancelled'
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at, job_id, cancelled_at,
                         schedule_id"#,
            id,
            row_count,
            byte_size,
            file_key,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// Records how many rows a running build has written so far.
    pub async fn record_progress<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        rows_written: i64,
    ) -> Result<(), AppError> {
        sqlx::query!(
            "update reports set row_count = $2 where id = $1 and status = 'running'",
            id,
            rows_written,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Marks a report cancelled unless it already finished; returns it if it changed.
    pub async fn mark_cancelled<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Report>, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"update reports set status = 'cancelled', cancelled_at = now(), file_key = null
               where id = $1 and status in ('queued', 'running')
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at, job_id, cancelled_at,
                         schedule_id"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// Records a failed build.
    pub async fn mark_failed<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        error: &str,
        status: ReportStatus,
    ) -> Result<(), AppError> {
        sqlx::query!(
            "update reports set status = $3, error = $2 where id = $1 and status <> 'cancelled'",
            id,
            error,
            status.as_str(),
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Marks at most `limit` ready reports built before `cutoff` expired and forgets their
    /// files; returns the file keys they had, for the caller to delete from storage once this
    /// committed (a crash in between leaves an unreferenced file, never a row whose file is gone).
    pub async fn expire_built_before(
        &self,
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Option<String>>, AppError> {
        let rows = sqlx::query!(
            r#"with doomed as (
                   select id, file_key from reports
                   where status = 'ready' and completed_at < $1
                   order by completed_at limit $2 for update skip locked)
               update reports r set status = 'expired', expired_at = now(), file_key = null
               from doomed where r.id = doomed.id
               returning doomed.file_key"#,
            cutoff,
            limit,
        )
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(|row| row.file_key).collect())
    }

    /// Inserts the queued report of one run of a schedule (owned by the schedule's owner, built
    /// by job `job_id`); `None`, inserting nothing, if that run already made its report.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_scheduled(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        schedule: &ReportSchedule,
        from: NaiveDate,
        to: NaiveDate,
        tick: DateTime<Utc>,
        job_id: Uuid,
    ) -> Result<Option<Report>, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"insert into reports (id, user_id, kind, format, from_date, to_date, status, job_id,
                                   schedule_id, schedule_tick)
               values ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9)
               on conflict (schedule_id, schedule_tick) do nothing
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at, job_id, cancelled_at,
                         schedule_id"#,
            id,
            schedule.user_id,
            schedule.kind,
            schedule.format,
            from,
            to,
            job_id,
            schedule.id,
            tick,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// The last day covered by a report of `schedule_id` that was not failed or cancelled.
    pub async fn last_covered_day<'e>(
        &self,
        db: impl PgExecutor<'e>,
        schedule_id: Uuid,
    ) -> Result<Option<NaiveDate>, AppError> {
        Ok(sqlx::query_scalar!(
            "select max(to_date) from reports
             where schedule_id = $1 and status not in ('failed', 'cancelled')",
            schedule_id,
        )
        .fetch_one(db)
        .await?)
    }

    /// A page of reports, newest first: of `owner` only (`None`: everyone's), of `schedule_id`
    /// only if given, and without shop-wide `sales` reports unless `with_sales`.
    pub async fn list<'e>(
        &self,
        db: impl PgExecutor<'e>,
        owner: Option<Uuid>,
        schedule_id: Option<Uuid>,
        with_sales: bool,
        page: &PageRequest,
    ) -> Result<Page<Report>, AppError> {
        let rows = sqlx::query_as!(
            Report,
            r#"select id, user_id, kind, format, from_date, to_date,
                      status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                      error, completed_at, created_at, updated_at, job_id, cancelled_at,
                      schedule_id
               from reports
               where ($1::uuid is null or user_id = $1)
                 and ($2::uuid is null or schedule_id = $2)
                 and ($3 or kind <> 'sales')
                 and ($4::uuid is null or id < $4)
               order by id desc limit $5"#,
            owner,
            schedule_id,
            with_sales,
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(db)
        .await?;
        Ok(Page::from_rows(rows, page, |r| r.id))
    }

    /// Sales lines of orders placed in `[from, to]` (UTC days), of every customer or only of
    /// `customer`, in order: streamed row by row from a server-side cursor, so memory stays flat
    /// however many orders there are.
    pub fn sales_rows<'a>(
        &self,
        pool: &'a PgPool,
        from: NaiveDate,
        to: NaiveDate,
        customer: Option<Uuid>,
    ) -> BoxStream<'a, Result<SalesRow, sqlx::Error>> {
        let start: DateTime<Utc> = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let end: DateTime<Utc> = (to + chrono::Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        sqlx::query_as!(
            SalesRow,
            r#"select o.id as order_id, o.created_at as placed_at, o.status, u.email as customer_email,
                      i.sku, i.name as product_name, i.quantity, i.unit_price_cents,
                      i.unit_price_cents * i.quantity as "line_total_cents!", o.currency
               from orders o join order_items i on i.order_id = o.id join users u on u.id = o.user_id
               where o.created_at >= $1 and o.created_at < $2 and ($3::uuid is null or o.user_id = $3)
               order by o.created_at, o.id, i.line_no"#,
            start,
            end,
            customer,
        )
        .fetch(pool)
    }
}
