//! What the templates show, shaped from the queue engine's read models: human durations and
//! times, per-state job rows with the actions allowed in that state, and the throughput chart
//! as SVG geometry (drawn on the server, so the page needs no chart library).

use chrono::{DateTime, SecondsFormat, Utc};
use orderly::queue::{
    JobState,
    inspect::{JobDetail, MinuteStats, QueueCounts},
};
use serde::Serialize;

use crate::dashboard::session::urlencode;

/// Jobs per page of a queue's job list.
pub const PAGE_SIZE: u64 = 25;

/// The job-list tabs of a queue page: URL key, engine state, label.
pub const STATE_TABS: [(&str, JobState, &str); 5] = [
    ("waiting", JobState::Ready, "Waiting"),
    ("scheduled", JobState::Scheduled, "Scheduled"),
    ("running", JobState::Active, "Running"),
    ("completed", JobState::Completed, "Completed"),
    ("dead", JobState::Dead, "Dead"),
];

/// The URL key of a state (`ready` is "waiting" to operators, `active` is "running").
pub fn state_key(state: JobState) -> &'static str {
    STATE_TABS
        .iter()
        .find(|(_, s, _)| *s == state)
        .map(|(k, _, _)| *k)
        .unwrap_or("waiting")
}

/// The state of a URL key, accepting the engine's names too.
pub fn parse_state_key(key: &str) -> Option<JobState> {
    STATE_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, s, _)| *s)
        .or_else(|| JobState::parse(key))
}

/// `3m 12s`, `1h 04m`, `2d 3h`: short enough for a table cell, precise enough to act on.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 if ms == 0 => "0s".into(),
        0 => "<1s".into(),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn datetime(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A point in time for a `<time>` element: machine form, readable form, and relative to `now`.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    /// RFC 3339, for the `datetime` attribute.
    pub iso: String,
    /// `2026-08-05 12:03:04 UTC`.
    pub text: String,
    /// `3m 12s ago` or `in 5m 00s`.
    pub relative: String,
}

/// `ms` since the epoch as a [`Moment`] seen from `now_ms`.
pub fn moment(ms: i64, now_ms: i64) -> Option<Moment> {
    let at = datetime(ms)?;
    let delta = now_ms - ms;
    Some(Moment {
        iso: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        text: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        relative: if delta >= 0 {
            format!("{} ago", human_duration(delta.unsigned_abs()))
        } else {
            format!("in {}", human_duration(delta.unsigned_abs()))
        },
    })
}

/// One operator action as a button in a POST form.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Form target.
    pub url: String,
    /// Button text.
    pub label: &'static str,
    /// The question the confirmation dialog asks.
    pub confirm: String,
    /// Destructive (drawn in red).
    pub danger: bool,
}

/// Actions on one job, by the state it is in.
pub fn job_actions(queue: &str, id: &str, state: &str) -> Vec<Action> {
    let url = |action: &str| format!("/admin/queues/{queue}/jobs/{}/{action}", urlencode(id));
    let short = short_id(id);
    let mut actions = Vec::new();
    match state {
        "dead" => actions.push(Action {
            url: url("retry"),
            label: "Retry",
            confirm: format!("Retry dead job {short} now? Its attempts start again from zero."),
            danger: false,
        }),
        "scheduled" => actions.push(Action {
            url: url("promote"),
            label: "Run now",
            confirm: format!("Run scheduled job {short} now instead of at its due time?"),
            danger: false,
        }),
        _ => {}
    }
    if state != "active" {
        actions.push(Action {
            url: url("delete"),
            label: "Delete",
            confirm: format!("Delete job {short} for good? It will not run again."),
            danger: true,
        });
    }
    actions
}

/// Actions on a whole queue.
pub fn queue_actions(counts: &QueueCounts) -> Vec<Action> {
    let queue = &counts.queue;
    let url = |action: &str| format!("/admin/queues/{queue}/{action}");
    let mut actions = vec![if counts.paused {
        Action {
            url: url("resume"),
            label: "Resume",
            confirm: format!("Resume queue {queue}? Workers start claiming its jobs again."),
            danger: false,
        }
    } else {
        Action {
            url: url("pause"),
            label: "Pause",
            confirm: format!(
                "Pause queue {queue}? No worker claims its jobs until it is resumed; running jobs finish."
            ),
            danger: false,
        }
    }];
    if counts.dead > 0 {
        actions.push(Action {
            url: url("retry-dead"),
            label: "Retry all dead",
            confirm: format!("Retry all {} dead jobs of {queue}?", counts.dead),
            danger: false,
        });
        actions.push(Action {
            url: url("purge-dead"),
            label: "Delete all dead",
            confirm: format!("Delete all {} dead jobs of {queue} for good?", counts.dead),
            danger: true,
        });
    }
    if counts.completed > 0 {
        actions.push(Action {
            url: url("purge-completed"),
            label: "Purge completed",
            confirm: format!(
                "Delete the {} completed jobs kept for {queue}?",
                counts.completed
            ),
            danger: true,
        });
    }
    actions
}

/// The first 8 characters of a long id (UUIDs), for buttons and questions.
pub fn short_id(id: &str) -> String {
    if id.chars().count() > 12 {
        format!("{}…", id.chars().take(8).collect::<String>())
    } else {
        id.to_owned()
    }
}

/// One waiting-per-priority entry (only non-empty priorities are listed).
#[derive(Debug, Clone, Serialize)]
pub struct PriorityCount {
    /// 0 (first) to 9.
    pub priority: usize,
    /// Waiting jobs.
    pub count: u64,
}

/// One queue's row on the overview and its header on the queue page.
#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    /// Queue name.
    pub name: String,
    /// Its page.
    pub url: String,
    /// Claiming paused.
    pub paused: bool,
    /// Waiting in total.
    pub waiting: u64,
    /// Non-empty priorities.
    pub by_priority: Vec<PriorityCount>,
    /// Scheduled (delayed, backing off).
    pub scheduled: u64,
    /// Leased by a worker now (the engine's `active` state).
    pub running: u64,
    /// Completed, within retention.
    pub completed: u64,
    /// Failed for good; kept until an operator retries or purges them.
    pub dead: u64,
    /// Age of the oldest waiting job, readable (`—` when none waits).
    pub oldest_waiting: String,
    /// The same in ms (for sorting and tests).
    pub oldest_waiting_ms: u64,
    /// Completed in the last hour.
    pub processed_hour: u64,
    /// Failed attempts in the last hour.
    pub failed_hour: u64,
    /// Live workers serving it.
    pub workers: usize,
    /// Pause/resume, retry all dead, purge.
    pub actions: Vec<Action>,
}

/// The row of `counts` with an hour of `throughput` and `workers` serving it.
pub fn queue_row(counts: &QueueCounts, throughput: &[MinuteStats], workers: usize) -> QueueRow {
    QueueRow {
        name: counts.queue.clone(),
        url: format!("/admin/queues/{}", counts.queue),
        paused: counts.paused,
        waiting: counts.waiting,
        by_priority: counts
            .waiting_by_priority
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(priority, count)| PriorityCount {
                priority,
                count: *count,
            })
            .collect(),
        scheduled: counts.scheduled,
        running: counts.active,
        completed: counts.completed,
        dead: counts.dead,
        oldest_waiting: if counts.waiting == 0 {
            "—".into()
        } else {
            human_duration(counts.oldest_waiting_ms)
        },
        oldest_waiting_ms: counts.oldest_waiting_ms,
        processed_hour: throughput.iter().map(|m| m.completed).sum(),
        failed_hour: throughput.iter().map(|m| m.failed).sum(),
        workers,
        actions: queue_actions(counts),
    }
}

/// One job in a list.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Job id.
    pub id: String,
    /// Its detail page.
    pub url: String,
    /// Job kind.
    pub kind: String,
    /// Priority 0..=9.
    pub priority: u8,
    /// `attempts/max`.
    pub attempts: String,
    /// What the time column means in this state (`enqueued`, `due`, `started`, `finished`).
    pub when_label: &'static str,
    /// That time.
    pub when: Option<Moment>,
    /// The last error, shortened.
    pub error: Option<String>,
    /// The worker holding it (running jobs).
    pub worker: Option<String>,
    /// Actions allowed in its state.
    pub actions: Vec<Action>,
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// A list row of `job`, in `state`, seen at `now_ms`.
pub fn job_row(job: &JobDetail, state: JobState, now_ms: i64) -> JobRow {
    let (when_label, when_ms) = match state {
        JobState::Ready => ("enqueued", job.enqueued_at_ms.or(job.created_at_ms)),
        JobState::Scheduled => ("due", job.run_at_ms),
        JobState::Active => ("started", job.started_at_ms),
        JobState::Completed | JobState::Dead => ("finished", job.finished_at_ms),
    };
    JobRow {
        url: format!("/admin/queues/{}/jobs/{}", job.queue, urlencode(&job.id)),
        id: job.id.clone(),
        kind: job.kind.clone(),
        priority: job.priority,
        attempts: format!("{}/{}", job.attempts, job.max_attempts),
        when_label,
        when: when_ms.and_then(|ms| moment(ms, now_ms)),
        error: job
            .last_error
            .as_deref()
            .filter(|_| state != JobState::Completed)
            .map(|e| shorten(e, 160)),
        worker: (state == JobState::Active)
            .then(|| job.worker.clone())
            .flatten(),
        actions: job_actions(&job.queue, &job.id, state.set_name()),
    }
}

/// One failed attempt on the job page.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptError {
    /// Attempt number.
    pub attempt: String,
    /// When it failed.
    pub at: Option<Moment>,
    /// What the handler said.
    pub error: String,
}

/// The job page.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Id, queue, kind, state (`ready` shown as waiting).
    pub id: String,
    /// The queue it was found in; with `id` it names the job in every action URL.
    pub queue: String,
    /// What the job is (`email.order_confirmation`): which handler runs it.
    pub kind: String,
    /// State as operators name it.
    pub state: &'static str,
    /// 0 (runs first) to 9 (runs last).
    pub priority: u8,
    /// Attempts so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Lease holder (or last holder).
    pub worker: Option<String>,
    /// Label and time of each timestamp the job has.
    pub timestamps: Vec<(&'static str, Moment)>,
    /// Every recorded failed attempt, newest first.
    pub errors: Vec<AttemptError>,
    /// The payload, pretty JSON.
    pub payload: String,
    /// The retry policy, pretty JSON.
    pub retry: Option<String>,
    /// Allowed actions.
    pub actions: Vec<Action>,
}

/// The job page of `job` seen at `now_ms`.
pub fn job_view(job: &JobDetail, now_ms: i64) -> JobView {
    let state = JobState::parse(&job.state);
    let timestamps = [
        ("Created", job.created_at_ms),
        ("Enqueued", job.enqueued_at_ms),
        ("Due", job.run_at_ms),
        ("Started", job.started_at_ms),
        ("Finished", job.finished_at_ms),
    ]
    .into_iter()
    .filter_map(|(label, ms)| ms.and_then(|ms| moment(ms, now_ms)).map(|m| (label, m)))
    .collect();
    let mut errors: Vec<AttemptError> = job
        .errors
        .iter()
        .map(|entry| AttemptError {
            attempt: entry
                .get("attempt")
                .map(|a| a.to_string())
                .unwrap_or_else(|| "?".into()),
            at: entry
                .get("at")
                .and_then(|v| v.as_i64())
                .and_then(|ms| moment(ms, now_ms)),
            error: entry
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| entry.to_string()),
        })
        .collect();
    errors.reverse();
    JobView {
        id: job.id.clone(),
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        state: state.map(state_key).unwrap_or("unknown"),
        priority: job.priority,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        request_id: job.request_id.clone(),
        worker: job.worker.clone(),
        timestamps,
        errors,
        payload: serde_json::to_string_pretty(&job.payload).unwrap_or_default(),
        retry: job
            .retry
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .and_then(|v| serde_json::to_string_pretty(&v).ok()),
        actions: job_actions(&job.queue, &job.id, &job.state),
    }
}

/// A tab of the queue page.
#[derive(Debug, Clone, Serialize)]
pub struct Tab {
    /// URL key.
    pub key: &'static str,
    /// The state as operators name it (`Waiting` for the engine's `ready`).
    pub label: &'static str,
    /// Jobs in that state.
    pub count: u64,
    /// The queue page with this state selected (`?state=<key>`).
    pub url: String,
    /// The tab shown.
    pub current: bool,
}

/// The tabs of `counts`' queue with `current` selected.
pub fn tabs(counts: &QueueCounts, current: JobState) -> Vec<Tab> {
    STATE_TABS
        .iter()
        .map(|(key, state, label)| Tab {
            key,
            label,
            count: match state {
                JobState::Ready => counts.waiting,
                JobState::Scheduled => counts.scheduled,
                JobState::Active => counts.active,
                JobState::Completed => counts.completed,
                JobState::Dead => counts.dead,
            },
            url: format!("/admin/queues/{}?state={key}", counts.queue),
            current: *state == current,
        })
        .collect()
}

/// Previous/next links of a job list.
#[derive(Debug, Clone, Serialize)]
pub struct Pager {
    /// First row shown (1-based), 0 when empty.
    pub from: u64,
    /// Last row shown.
    pub to: u64,
    /// Rows in total.
    pub total: u64,
    /// Page number (1-based).
    pub page: u64,
    /// Pages in total.
    pub pages: u64,
    /// Link to the previous page.
    pub prev_url: Option<String>,
    /// Link to the next page.
    pub next_url: Option<String>,
}

/// The pager of page `page` (1-based) of `total` rows.
pub fn pager(queue: &str, key: &str, page: u64, shown: usize, total: u64) -> Pager {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let offset = (page - 1) * PAGE_SIZE;
    let link = |p: u64| format!("/admin/queues/{queue}?state={key}&page={p}");
    Pager {
        from: if shown == 0 { 0 } else { offset + 1 },
        to: offset + shown as u64,
        total,
        page,
        pages,
        prev_url: (page > 1).then(|| link(page - 1)),
        next_url: (page < pages).then(|| link(page + 1)),
    }
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

/// One minute of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Left edge, in view box units.
    pub x: f64,
    /// In view box units: the minute's slot less a gap, never under one unit.
    pub width: f64,
    /// Top of the processed part.
    pub processed_y: f64,
    /// Height of the processed part.
    pub processed_height: f64,
    /// Top of the failed part (stacked above processed).
    pub failed_y: f64,
    /// Height of the failed part.
    pub failed_height: f64,
    /// Tooltip: minute and numbers.
    pub title: String,
}

/// The processed/failed per minute chart.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// View box width.
    pub width: u32,
    /// View box height.
    pub height: u32,
    /// Bottom of the plot (the x axis).
    pub baseline: f64,
    /// Left edge of the plot.
    pub left: f64,
    /// The y value of the top line.
    pub max: u64,
    /// Bars, oldest first.
    pub bars: Vec<Bar>,
    /// Completed in the window.
    pub processed: u64,
    /// Failed attempts in the window.
    pub failed: u64,
    /// Minutes shown.
    pub minutes: usize,
    /// Text alternative for screen readers.
    pub summary: String,
}

/// Adds per-minute stats of several queues together (all cover the same minutes).
pub fn sum_minutes<'a>(series: impl IntoIterator<Item = &'a [MinuteStats]>) -> Vec<MinuteStats> {
    let mut total: Vec<MinuteStats> = Vec::new();
    for minutes in series {
        if total.is_empty() {
            total = minutes.to_vec();
            continue;
        }
        for (sum, minute) in total.iter_mut().zip(minutes) {
            sum.enqueued += minute.enqueued;
            sum.completed += minute.completed;
            sum.failed += minute.failed;
            sum.retried += minute.retried;
            sum.dead += minute.dead;
        }
    }
    total
}

fn nice_ceiling(value: u64) -> u64 {
    let value = value.max(1);
    let magnitude = 10u64.pow(value.ilog10());
    for step in [1, 2, 5, 10] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10 * magnitude
}

/// Lays out `minutes` as stacked bars (processed below, failed on top).
pub fn chart(minutes: &[MinuteStats]) -> Chart {
    const WIDTH: u32 = 1200;
    const HEIGHT: u32 = 150;
    const LEFT: f64 = 36.0;
    const TOP: f64 = 8.0;
    const BASELINE: f64 = 128.0;
    let peak = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0);
    let max = nice_ceiling(peak);
    let slot = (f64::from(WIDTH) - LEFT) / minutes.len().max(1) as f64;
    let scale = (BASELINE - TOP) / max as f64;
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let processed_height = m.completed as f64 * scale;
            let failed_height = m.failed as f64 * scale;
            let minute = datetime(m.minute_ms)
                .map(|t| t.format("%H:%M").to_string())
                .unwrap_or_default();
            Bar {
                x: LEFT + i as f64 * slot + 1.0,
                width: (slot - 2.0).max(1.0),
                processed_y: BASELINE - processed_height,
                processed_height,
                failed_y: BASELINE - processed_height - failed_height,
                failed_height,
                title: format!(
                    "{minute} UTC: {} processed, {} failed",
                    m.completed, m.failed
                ),
            }
        })
        .collect();
    let processed = minutes.iter().map(|m| m.completed).sum();
    let failed = minutes.iter().map(|m| m.failed).sum();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        baseline: BASELINE,
        left: LEFT,
        max,
        bars,
        processed,
        failed,
        minutes: minutes.len(),
        summary: format!(
            "Jobs per minute over the last {} minutes: {processed} processed, {failed} failed attempts.",
            minutes.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(400), "<1s");
        assert_eq!(human_duration(59_000), "59s");
        assert_eq!(human_duration(192_000), "3m 12s");
        assert_eq!(human_duration(3_840_000), "1h 04m");
        assert_eq!(human_duration(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
    }

    #[test]
    fn chart_scales_to_a_round_maximum() {
        let minutes: Vec<MinuteStats> = (0..60)
            .map(|i| MinuteStats {
                minute_ms: i * 60_000,
                completed: i as u64,
                failed: 1,
                ..Default::default()
            })
            .collect();
        let chart = chart(&minutes);
        assert_eq!(chart.max, 100);
        assert_eq!(chart.bars.len(), 60);
        assert_eq!(chart.processed, (0..60).sum::<u64>());
        assert!(
            chart
                .bars
                .iter()
                .all(|b| b.failed_y >= 8.0 && b.processed_y <= 128.0)
        );
    }

    #[test]
    fn actions_follow_the_state() {
        let labels = |state| {
            job_actions("emails", "id", state)
                .into_iter()
                .map(|a| a.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels("dead"), ["Retry", "Delete"]);
        assert_eq!(labels("scheduled"), ["Run now", "Delete"]);
        assert_eq!(labels("ready"), ["Delete"]);
        assert!(labels("active").is_empty());
    }
}
