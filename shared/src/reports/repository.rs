//! SQL for reports, and the streaming sales query the report job reads.

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    error::AppError,
    reports::model::{Report, ReportRequest, ReportStatus, SalesRow},
};

/// Reports in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportRepository;

impl ReportRepository {
    /// Inserts a queued report.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        request: &ReportRequest,
    ) -> Result<Report, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"insert into reports (id, user_id, kind, format, from_date, to_date, status, run_at)
               values ($1, $2, $3, $4, $5, $6, 'queued', $7)
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at"#,
            Uuid::now_v7(),
            user_id,
            request.kind.as_str(),
            request.format,
            request.from,
            request.to,
            request.run_at,
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
                      error, completed_at, created_at, updated_at
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
            "update reports set status = 'running', error = null where id = $1",
            id,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Records a finished build.
    pub async fn mark_ready(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        row_count: i64,
        byte_size: i64,
        file_key: &str,
    ) -> Result<Report, AppError> {
        Ok(sqlx::query_as!(
            Report,
            r#"update reports set status = 'ready', row_count = $2, byte_size = $3, file_key = $4,
                      error = null, completed_at = now()
               where id = $1
               returning id, user_id, kind, format, from_date, to_date,
                         status as "status: ReportStatus", run_at, row_count, byte_size, file_key,
                         error, completed_at, created_at, updated_at"#,
            id,
            row_count,
            byte_size,
            file_key,
        )
        .fetch_one(conn)
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
            "update reports set status = $3, error = $2 where id = $1",
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
