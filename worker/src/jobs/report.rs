//! Report jobs: stream the sales lines of a date range (the whole shop's for a `sales` report,
//! the requester's own for `my_orders`) out of PostgreSQL, write them as CSV into
//! storage in 64 KiB parts, record the result, and announce `report.ready` (which emails the
//! requester). Memory stays flat however many orders the range holds: rows are read from the
//! database as they arrive and written out in small parts, never collected.
//!
//! Idempotent: the file key is fixed per report, so a retry overwrites the same object; a
//! report already marked ready is left alone.
//!
//! Followed and stoppable: the build reports its progress (rows written, and how far through
//! the date range it is: rows arrive in order of time) to the job and the row, and watches for
//! a cancel request while it waits for rows; on one it aborts the upload, deletes what it
//! wrote, marks the report cancelled and ends the job cancelled.

use apalis_core::task::data::Data;
use chrono::{DateTime, NaiveTime, Utc};
use futures::TryStreamExt;
use orderly::{
    error::AppError,
    jobs::ReportJob,
    queue::{JobError, JobInfo, job::JobResultExt},
    reports::{Report, ReportStatus, SalesRow},
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
    match report.status {
        ReportStatus::Ready | ReportStatus::Expired => {
            tracing::info!(report_id = %report.id, "report already built by an earlier attempt");
            return Ok(());
        }
        ReportStatus::Cancelled => {
            return Err(JobError::cancelled(
                "the report was cancelled before it was built",
            ));
        }
        _ => {}
    }
    reports
        .mark_running(report.id)
        .await
        .context("marking report running")?;
    match build(&ctx, &report, &info).await {
        Ok((rows, bytes, key)) => {
            let recorded = reports
                .mark_ready(report.id, rows, bytes, &key)
                .await
                .context("recording report")?;
            if recorded.is_none() {
                // Cancelled in the last moment (its job was not in the queue to signal).
                reports.delete_file(&key).await;
                return Err(JobError::cancelled(
                    "the report was cancelled while it was built",
                ));
            }
            info.progress(1.0, &format!("{rows} rows")).await;
            if let Err(error) = info
                .set_result(&serde_json::json!({ "rows": rows, "bytes": bytes }))
                .await
            {
                tracing::warn!(%error, "could not keep the job's result");
            }
            tracing::info!(report_id = %report.id, rows, bytes, "report ready");
            Ok(())
        }
        Err(error @ JobError::Cancelled(_)) => {
            reports.delete_file(&file_key(&report)).await;
            reports
                .mark_cancelled(report.id)
                .await
                .context("marking report cancelled")?;
            tracing::info!(report_id = %report.id, "report build stopped on request; partial file deleted");
            Err(error)
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

/// Where a report's file is kept (fixed per report, so a retry overwrites it).
fn file_key(report: &Report) -> String {
    format!(
        "reports/{}/{}-{}-{}.csv",
        report.id, report.kind, report.from_date, report.to_date
    )
}

/// How far through the report's date range a row placed at `placed_at` is (rows arrive in
/// order of time, so this is the build's progress without counting rows first).
fn range_fraction(report: &Report, placed_at: DateTime<Utc>) -> f64 {
    let start = report.from_date.and_time(NaiveTime::MIN).and_utc();
    let end = (report.to_date + chrono::Days::new(1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    let span = (end - start).num_milliseconds().max(1) as f64;
    ((placed_at - start).num_milliseconds() as f64 / span).clamp(0.0, 1.0)
}

/// Streams the rows into storage; returns (rows, bytes, file key). Stops with
/// [`JobError::Cancelled`] when the job is asked to stop (the caller deletes the file).
async fn build(
    ctx: &JobContext,
    report: &Report,
    info: &JobInfo,
) -> Result<(i64, i64, String), JobError> {
    let key = file_key(report);
    let mut out = ctx.services.storage.writer(&key);
    match write_rows(ctx, report, info, &mut out).await {
        Ok((rows, bytes)) => Ok((rows, bytes, key)),
        Err(error) => {
            // Nothing half-written stays behind in storage.
            let _ = out.abort().await;
            Err(error)
        }
    }
}

/// Writes the CSV into `out`; returns (rows, bytes).
async fn write_rows(
    ctx: &JobContext,
    report: &Report,
    info: &JobInfo,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<(i64, i64), JobError> {
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
    loop {
        // A big range can take a while before (and between) rows: the cancel request is
        // watched while waiting, not only between rows.
        let next = tokio::select! {
            next = rows.try_next() => next.context("reading sales rows")?,
            _ = info.cancelled() => return Err(JobError::cancelled("stopped on request")),
        };
        let Some(row) = next else { break };
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
            info.control.check()?;
            // One progress report per part: the job's (throttled) and the row's.
            info.progress(
                range_fraction(report, row.placed_at),
                &format!("{count} rows"),
            )
            .await;
            ctx.services
                .reports
                .record_progress(report.id, count)
                .await
                .context("recording progress")?;
        }
    }
    let rest = into_part(csv).context("writing CSV")?;
    bytes += rest.len() as i64;
    out.write_all(&rest).await.context("writing to storage")?;
    info.control.check()?;
    out.shutdown()
        .await
        .context("finishing the upload to storage")?;
    Ok((count, bytes))
}
