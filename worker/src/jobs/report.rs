//! Report jobs: stream the sales lines of a date range (the whole shop's for a `sales` report,
//! the requester's own for `my_orders`) out of PostgreSQL, write them as CSV into
//! storage in 64 KiB parts, record the result, and announce `report.ready` (which emails the
//! requester). Memory stays flat however many orders the range holds: rows are read from the
//! database as they arrive and written out in small parts, never collected.
//!
//! Idempotent: the file key is fixed per report, so a retry overwrites the same object; a
//! report already marked ready is left alone.

use apalis_core::task::data::Data;
use futures::TryStreamExt;
use orderly::{
    error::AppError,
    jobs::ReportJob,
    queue::{JobError, JobInfo, job::JobResultExt},
    reports::{ReportStatus, SalesRow},
};
use tokio::io::AsyncWriteExt;

use crate::context::JobContext;

/// Bytes buffered before a part is written to storage.
const PART: usize = 64 * 1024;

/// Builds one report.
pub async fn handle(
    job: ReportJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    let reports = &ctx.services.reports;
    let Some(report) = reports
        .find(job.report_id)
        .await
        .context("loading report")?
    else {
        tracing::warn!(report_id = %job.report_id, "report no longer exists; nothing to build");
        return Ok(());
    };
    if report.status == ReportStatus::Ready {
        tracing::info!(report_id = %report.id, "report already built by an earlier attempt");
        return Ok(());
    }
    reports
        .mark_running(report.id)
        .await
        .context("marking report running")?;
    match build(&ctx, &report).await {
        Ok((rows, bytes, key)) => {
            reports
                .mark_ready(report.id, rows, bytes, &key)
                .await
                .context("recording report")?;
            tracing::info!(report_id = %report.id, rows, bytes, "report ready");
            Ok(())
        }
        Err(error) => {
            let retrying = info.attempt < info.max_attempts;
            if let Err(e) = reports
                .mark_failed(report.id, error.message(), retrying)
                .await
            {
                tracing::warn!(error = %e, "could not record the report failure");
            }
            Err(error)
        }
    }
}

/// A CSV writer into an in-memory part.
fn part_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().from_writer(Vec::with_capacity(PART + PART / 4))
}

/// Writes one record into the part. Writing into memory can only fail as I/O does, so the
/// error is an `io::Error` (which the queue retries).
fn write_record<I, T>(csv: &mut csv::Writer<Vec<u8>>, record: I) -> std::io::Result<()>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    Ok(csv.write_record(record)?)
}

/// Ends a part: its bytes, flushed out of the writer.
fn into_part(csv: csv::Writer<Vec<u8>>) -> std::io::Result<Vec<u8>> {
    csv.into_inner().map_err(csv::IntoInnerError::into_error)
}

/// Streams the rows into storage; returns (rows, bytes, file key).
async fn build(
    ctx: &JobContext,
    report: &orderly::reports::Report,
) -> Result<(i64, i64, String), JobError> {
    let key = format!(
        "reports/{}/{}-{}-{}.csv",
        report.id, report.kind, report.from_date, report.to_date
    );
    let mut out = ctx.services.storage.writer(&key);
    let mut csv = part_writer();
    write_record(&mut csv, SalesRow::CSV_HEADER).context("writing CSV")?;
    // Database errors arrive as domain errors, classified like every other.
    let mut rows = ctx
        .services
        .reports
        .sales_rows(report)
        .err_into::<AppError>();
    let mut count: i64 = 0;
    let mut bytes: i64 = 0;
    while let Some(row) = rows.try_next().await.context("reading sales rows")? {
        // Text cells are neutralised against spreadsheet formulas (see `orderly::csv_cell`).
        write_record(
            &mut csv,
            row.csv_record().iter().map(|cell| cell.as_bytes()),
        )
        .context("writing CSV")?;
        count += 1;
        if csv.get_ref().len() >= PART {
            // The part is full: hand it to storage and continue in a new one (no header again).
            let part =
                into_part(std::mem::replace(&mut csv, part_writer())).context("writing CSV")?;
            bytes += part.len() as i64;
            out.write_all(&part).await.context("writing to storage")?;
        }
    }
    let rest = into_part(csv).context("writing CSV")?;
    bytes += rest.len() as i64;
    out.write_all(&rest).await.context("writing to storage")?;
    out.shutdown()
        .await
        .context("finishing the upload to storage")?;
    Ok((count, bytes, key))
}
