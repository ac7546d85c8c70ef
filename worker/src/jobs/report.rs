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
    jobs::ReportJob,
    queue::{JobError, JobInfo},
    reports::{ReportStatus, SalesRow},
};
use tokio::io::AsyncWriteExt;

use crate::jobs::JobContext;

/// Bytes buffered before a part is written to storage.
const PART: usize = 64 * 1024;

fn retry(context: &str, e: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("{context}: {e}"))
}

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
        .map_err(|e| retry("loading report", e))?
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
        .map_err(|e| retry("marking report running", e))?;
    match build(&ctx, &report).await {
        Ok((rows, bytes, key)) => {
            reports
                .mark_ready(report.id, rows, bytes, &key)
                .await
                .map_err(|e| retry("recording report", e))?;
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
    csv.write_record(SalesRow::CSV_HEADER)
        .map_err(|e| retry("writing CSV", e))?;
    let mut rows = ctx.services.reports.sales_rows(report);
    let mut count: i64 = 0;
    let mut bytes: i64 = 0;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| retry("reading sales rows", e))?
    {
        // Text cells are neutralised against spreadsheet formulas (see `orderly::csv_cell`).
        csv.write_record(row.csv_record().iter().map(|cell| cell.as_bytes()))
            .map_err(|e| retry("writing CSV", e))?;
        count += 1;
        if csv.get_ref().len() >= PART {
            // The part is full: hand it to storage and continue in a new one (no header again).
            let part = std::mem::replace(&mut csv, part_writer())
                .into_inner()
                .map_err(|e| retry("writing CSV", e.error()))?;
            bytes += part.len() as i64;
            out.write_all(&part)
                .await
                .map_err(|e| retry("writing to storage", e))?;
        }
    }
    let rest = csv
        .into_inner()
        .map_err(|e| retry("writing CSV", e.error()))?;
    bytes += rest.len() as i64;
    out.write_all(&rest)
        .await
        .map_err(|e| retry("writing to storage", e))?;
    out.shutdown()
        .await
        .map_err(|e| retry("finishing the upload to storage", e))?;
    Ok((count, bytes, key))
}
