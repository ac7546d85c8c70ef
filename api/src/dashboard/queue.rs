//! A queue's page, `/admin/queues/{queue}`: its row (counts, the last hour, workers), its
//! throughput chart, its groups (when it has any: see [`super::groups`]), its jobs in one state
//! per tab with a pager (see [`super::list`]), and the operator actions on the whole queue
//! (pause, resume, retry all dead, purge). Also the queue row the overview lists.
//!
//! Jobs waiting in groups count in the queue's waiting total but wait in their group, not in its
//! waiting list: the list and its pager cover the jobs without a group, and the Groups section
//! and the group pages list the others.

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use orderly::{
    error::AppError,
    queue::{
        JobState, QueueLimits,
        inspect::{MinuteStats, QueueCounts},
    },
};
use serde::Serialize;

use crate::{
    dashboard::{
        actions::{Action, ActionForm, Gate, after_action, authorize_action},
        chart::{CHART_MINUTES, chart},
        format::{STATE_TABS, human_duration, moment, parse_state_key, state_key},
        frame::{Frame, PageQuery, known_queue, no_such_action, no_such_queue},
        groups::{group_limits_badge, groups_section, has_groups},
        list::{JobRow, PAGE_SIZE, Pager, job_row, pager_with},
        render::{app_error_page, error_page, render},
        session::{PageAdmin, safe_return_path, urlencode},
    },
    extract::Path,
    state::AppState,
};

/// `GET /admin/queues/{queue}?state=dead&page=2`: one queue's jobs in one state.
pub async fn queue_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path(queue): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(job_state) = parse_state_key(query.state.as_deref().unwrap_or("waiting")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown state",
            "Pick one of the tabs of the queue page.",
            false,
        );
    };
    let key = state_key(job_state);
    let engine = &state.services.queue;
    let limits = engine.limits(queue);
    let now = chrono::Utc::now().timestamp_millis();
    let read = async {
        let (summaries, workers) = engine.summaries(&[queue], CHART_MINUTES).await?;
        let summary = summaries
            .into_iter()
            .next()
            .ok_or_else(|| AppError::internal("queue summary missing"))?;
        // A page past the end (jobs finished since the link was drawn) shows the last page.
        let last_page = state_total(&summary.counts, job_state)
            .div_ceil(PAGE_SIZE)
            .max(1);
        let page = query.page.unwrap_or(1).clamp(1, last_page);
        let list = async {
            Ok::<_, AppError>(
                engine
                    .list(queue, job_state, (page - 1) * PAGE_SIZE, PAGE_SIZE)
                    .await?,
            )
        };
        let groups = async {
            if has_groups(&summary.counts, limits.group) {
                groups_section(&state, &session, queue, now).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (list, groups) = tokio::try_join!(list, groups)?;
        Ok::<_, AppError>((summary, workers, page, list, groups))
    };
    let (summary, workers, page, list, groups) = match read.await {
        Ok(read) => read,
        Err(error) => return app_error_page(error),
    };
    let serving = workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue))
        .count();
    let row = queue_row(&summary.counts, &summary.throughput, serving, limits);
    let chart = chart(&summary.throughput);
    let tabs = tabs(&summary.counts, job_state);
    let jobs: Vec<JobRow> = list
        .jobs
        .iter()
        .map(|job| job_row(job, job_state, now))
        .collect();
    let pager = pager(queue, key, page, jobs.len(), list.total);
    let mut query_pairs = vec![("state", key.to_owned())];
    if page > 1 {
        query_pairs.push(("page", page.to_string()));
    }
    let return_to = path_and_query(&format!("/admin/queues/{queue}"), &query_pairs);
    let mut frame = Frame::new(&session, format!("Queue {queue}"), return_to, Some(queue));
    frame.notice = query.notice();
    let state_label = STATE_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, l)| *l)
        .unwrap_or("");
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "queue_live.html"
        } else {
            "queue.html"
        },
        minijinja::context! { frame, queue => row, chart, groups, tabs, jobs, pager, state_key => key, state_label, read_at },
    )
}

/// Jobs in `state` that its list shows (waiting: those without a group).
fn state_total(counts: &QueueCounts, state: JobState) -> u64 {
    match state {
        JobState::Ready => counts.waiting.saturating_sub(counts.waiting_in_groups),
        JobState::Scheduled => counts.scheduled,
        JobState::Active => counts.active,
        JobState::Completed => counts.completed,
        JobState::Dead => counts.dead,
        JobState::Cancelled => counts.cancelled,
    }
}

fn path_and_query(path: &str, query: &[(&str, String)]) -> String {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// The operator actions on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueAction {
    Pause,
    Resume,
    RetryDead,
    PurgeDead,
    PurgeCompleted,
    PurgeCancelled,
}

impl QueueAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "retry-dead" => Self::RetryDead,
            "purge-dead" => Self::PurgeDead,
            "purge-completed" => Self::PurgeCompleted,
            "purge-cancelled" => Self::PurgeCancelled,
            _ => return None,
        })
    }
}

/// `POST /admin/queues/{queue}/{action}`: pause, resume, retry-dead, purge-dead, purge-completed,
/// purge-cancelled.
pub async fn queue_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, action_name)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(action) = QueueAction::parse(&action_name) else {
        return no_such_action();
    };
    let engine = &state.services.queue;
    let counts = match engine.counts(queue).await {
        Ok(counts) => counts,
        Err(error) => return app_error_page(error.into()),
    };
    let question = queue_actions(&counts)
        .into_iter()
        .find(|a| a.url.ends_with(&format!("/{action_name}")))
        .map(|a| a.confirm)
        .unwrap_or_else(|| format!("{action_name} queue {queue}?"));
    let form = match authorize_action(
        &session,
        &headers,
        form,
        &question,
        &format!("/admin/queues/{queue}/{action_name}"),
    ) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    let result = match action {
        QueueAction::Pause => engine.pause(queue).await.map(|()| None),
        QueueAction::Resume => engine.resume(queue).await.map(|()| None),
        QueueAction::RetryDead => engine.retry_all_dead(queue).await.map(Some),
        QueueAction::PurgeDead => engine.purge_dead(queue).await.map(Some),
        QueueAction::PurgeCompleted => engine.purge_completed(queue).await.map(Some),
        QueueAction::PurgeCancelled => engine.purge_cancelled(queue).await.map(Some),
    };
    match result {
        Ok(touched) => {
            tracing::info!(admin = %session.actor.user_id, queue, action = action_name, touched, "dashboard queue action");
            after_action(
                &safe_return_path(form.return_to.as_deref()),
                &action_name,
                touched,
            )
        }
        Err(error) => app_error_page(error.into()),
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
    /// Waiting in total, in groups or not.
    pub waiting: u64,
    /// Non-empty priorities of the jobs waiting without a group.
    pub by_priority: Vec<PriorityCount>,
    /// Of `waiting`, the jobs waiting in groups (listed per group, not in the waiting list).
    pub waiting_in_groups: u64,
    /// Groups whose circuit breaker is open or probing.
    pub open_breakers: u64,
    /// Scheduled (delayed, backing off).
    pub scheduled: u64,
    /// Leased by a worker now (the engine's `active` state).
    pub running: u64,
    /// Completed, within retention.
    pub completed: u64,
    /// Failed for good; kept until an operator retries or purges them.
    pub dead: u64,
    /// Age of the oldest waiting job without a group, readable (`—` when none waits).
    pub oldest_waiting: String,
    /// The same in ms (for sorting and tests).
    pub oldest_waiting_ms: u64,
    /// Completed in the last hour.
    pub processed_hour: u64,
    /// Failed attempts in the last hour.
    pub failed_hour: u64,
    /// Live workers serving it.
    pub workers: usize,
    /// Its fleet-wide flow control, readable (`at most 40/s, 2 running`); `None` without.
    pub limits: Option<String>,
    /// What holds for each of its groups (`per group: at most 4 running; breaker after 5`);
    /// `None` without.
    pub group_limits: Option<String>,
    /// Pause/resume, retry all dead, purge.
    pub actions: Vec<Action>,
}

/// The row of `counts` with an hour of `throughput`, `workers` serving it and its `limits`.
pub fn queue_row(
    counts: &QueueCounts,
    throughput: &[MinuteStats],
    workers: usize,
    limits: QueueLimits,
) -> QueueRow {
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
        waiting_in_groups: counts.waiting_in_groups,
        open_breakers: counts.open_breakers,
        scheduled: counts.scheduled,
        running: counts.active,
        completed: counts.completed,
        dead: counts.dead,
        // The engine knows the age of the oldest job without a group only.
        oldest_waiting: if counts.waiting.saturating_sub(counts.waiting_in_groups) == 0 {
            "—".into()
        } else {
            human_duration(counts.oldest_waiting_ms)
        },
        oldest_waiting_ms: counts.oldest_waiting_ms,
        processed_hour: throughput.iter().map(|m| m.completed).sum(),
        failed_hour: throughput.iter().map(|m| m.failed).sum(),
        workers,
        limits: limits_text(limits),
        group_limits: group_limits_badge(limits.group),
        actions: queue_actions(counts),
    }
}

/// `at most 40/s, 2 running`, or `None` without limits.
fn limits_text(limits: QueueLimits) -> Option<String> {
    let parts: Vec<String> = limits
        .rate
        .map(|rate| rate.to_string())
        .into_iter()
        .chain(limits.concurrency.map(|cap| format!("{cap} running")))
        .collect();
    (!parts.is_empty()).then(|| format!("at most {}", parts.join(", ")))
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
    if counts.cancelled > 0 {
        actions.push(Action {
            url: url("purge-cancelled"),
            label: "Purge cancelled",
            confirm: format!(
                "Delete the {} cancelled jobs kept for {queue}?",
                counts.cancelled
            ),
            danger: true,
        });
    }
    actions
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
                JobState::Cancelled => counts.cancelled,
            },
            url: format!("/admin/queues/{}?state={key}", counts.queue),
            current: *state == current,
        })
        .collect()
}

/// The pager of page `page` (1-based) of `total` rows of the `key` state's list.
pub fn pager(queue: &str, key: &str, page: u64, shown: usize, total: u64) -> Pager {
    pager_with(
        |p| format!("/admin/queues/{queue}?state={key}&page={p}"),
        page,
        shown,
        total,
    )
}
