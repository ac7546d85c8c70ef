//! The overview page, `/admin/queues` (where `/admin` leads): every queue's row (counts per state
//! and priority, retries apart from first runs, oldest waiting age, the last hour, workers
//! serving it, its actions), the throughput chart of all queues together over the last hour, day
//! or week (`?range=1h|24h|7d`: minutes for the hour, the engine's hourly rollups otherwise), the
//! live workers, the outbox backlog.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{Redirect, Response},
};
use orderly::{
    jobs::QUEUE_NAMES,
    queue::inspect::{self, MinuteStats},
};
use serde::Serialize;

use crate::{
    dashboard::{
        chart::{CHART_MINUTES, Range, chart, range_links},
        format::{Moment, human_duration, moment},
        frame::{Frame, PageQuery},
        queue::{QueueRow, partition_rows, queue_row},
        render::{app_error_page, error_page, render},
        session::PageAdmin,
    },
    state::AppState,
};

/// `GET /admin`: the overview.
pub async fn index() -> Redirect {
    Redirect::to("/admin/queues")
}

/// `GET /admin/queues?range=24h`: every queue, the throughput chart, live workers, the outbox
/// backlog.
pub async fn overview(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(range) = Range::parse(query.range.as_deref()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown range",
            "Pick 1 h, 24 h or 7 d above the chart.",
            false,
        );
    };
    let services = &state.services;
    let hours = async {
        if !range.hourly() {
            return Ok(None);
        }
        let reads = QUEUE_NAMES
            .iter()
            .map(|queue| services.queue.hourly_throughput(queue, range.periods()));
        futures::future::try_join_all(reads).await.map(Some)
    };
    let read = tokio::try_join!(
        inspect::overview(
            &services.queue,
            &services.outbox,
            &QUEUE_NAMES,
            CHART_MINUTES,
        ),
        hours
    );
    let (overview, hours) = match read {
        Ok(read) => read,
        Err(error) => return app_error_page(error.into()),
    };
    let now = overview.read_at_ms;
    let rows: Vec<QueueRow> = overview
        .queues
        .iter()
        .map(|q| {
            let serving = overview
                .workers
                .iter()
                .filter(|w| w.queues.contains(&q.counts.queue))
                .count();
            let mut row = queue_row(
                &q.counts,
                &q.throughput,
                serving,
                state.services.queue.limits(&q.counts.queue),
            );
            row.partitions = partition_rows(&q.partitions);
            row
        })
        .collect();
    let chart = match &hours {
        Some(hours) => chart(&MinuteStats::sum(hours.iter().map(Vec::as_slice)), range),
        None => chart(
            &MinuteStats::sum(overview.queues.iter().map(|q| q.throughput.as_slice())),
            range,
        ),
    };
    let ranges = range_links("/admin/queues", range);
    let workers: Vec<WorkerRow> = overview
        .workers
        .iter()
        .map(|w| worker_row(w, now))
        .collect();
    let outbox = overview.outbox.map(|b| {
        serde_json::json!({
            "pending": b.pending,
            "oldest": if b.pending == 0 { "—".to_owned() } else { human_duration(b.oldest_ms) },
        })
    });
    let path = match range {
        Range::Hour => "/admin/queues".to_owned(),
        range => format!("/admin/queues?range={}", range.key()),
    };
    let mut frame = Frame::new(&session, "Queues", path, None);
    frame.notice = query.notice();
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "overview_live.html"
        } else {
            "overview.html"
        },
        minijinja::context! { frame, rows, chart, ranges, workers, outbox, read_at },
    )
}

/// One worker process on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Host name the worker reported in its heartbeat; with `pid` it finds the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues served.
    pub queues: String,
    /// Jobs at once per queue.
    pub concurrency: usize,
    /// Jobs running now.
    pub running: usize,
    /// Last heartbeat.
    pub last_heartbeat: Option<Moment>,
    /// Time since start.
    pub uptime: String,
}

/// The row of `worker` seen at `now_ms`.
pub fn worker_row(worker: &orderly::queue::WorkerInfo, now_ms: i64) -> WorkerRow {
    WorkerRow {
        host: worker.host.clone(),
        pid: worker.pid,
        queues: worker.queues.join(", "),
        concurrency: worker.concurrency,
        running: worker.running,
        last_heartbeat: moment(worker.last_heartbeat_ms, now_ms),
        uptime: human_duration(u64::try_from(now_ms - worker.started_at_ms).unwrap_or(0)),
    }
}
