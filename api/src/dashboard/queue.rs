//! A queue's page, `/admin/queues/{queue}`: its row (counts, the last hour, workers), its
//! throughput chart (`?range=1h|24h|7d`), its job kinds over the last hour (attempts, failure
//! rate, run-time percentiles, as the workers recorded them), its groups (when it has any: see
//! [`super::groups`]), its jobs in one list per tab with a pager (see [`super::list`]), and the
//! operator actions on the whole queue (pause, resume, retry all dead, purge). Also the queue row
//! the overview lists.
//!
//! The tabs are the states, except that scheduled jobs are split: "Scheduled" lists the jobs
//! waiting for their first run, "Retries" those waiting for another attempt after a failure
//! (attempt, last error and when it runs). A list can be filtered by kind and by text (in the id,
//! kind, payload or last error); a filtered list is found by looking at the list's jobs in order,
//! at most [`SCAN_LIMIT`] of them, and says so when it stopped there. Bulk actions retry (or run
//! now) or delete the jobs ticked on the page, or every job the filter matches, behind the same
//! confirmation and CSRF check as every action (`POST /admin/queues/{queue}/bulk`).
//!
//! Jobs waiting in groups count in the queue's waiting total but wait in their group, not in its
//! waiting list: the list and its pager cover the jobs without a group, and the Groups section
//! and the group pages list the others.

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use orderly::{
    error::AppError,
    queue::{
        JobState, QueueLimits,
        inspect::{JobFilter, JobList, KindRuntime, MinuteStats, QueueCounts, SCAN_LIMIT},
    },
};
use serde::Serialize;

use crate::{
    dashboard::{
        actions::{
            Action, ActionForm, Gate, after_action, authorize_action, authorize_action_with,
        },
        chart::{CHART_MINUTES, Range, RangeLink, chart, range_links},
        format::{human_duration, moment, percent, run_time},
        frame::{Frame, PageQuery, known_queue, no_such_action, no_such_queue},
        groups::{group_limits_badge, groups_section, has_groups},
        list::{JobRow, PAGE_SIZE, job_row, pager_with},
        render::{app_error_page, error_page, render},
        session::{PageAdmin, safe_return_path, urlencode},
    },
    extract::Path,
    state::AppState,
};

/// Minutes of run times the job kinds table covers.
pub const KIND_MINUTES: u32 = 60;

/// Ids one bulk action on a selection takes (a page shows [`PAGE_SIZE`]; more is a forged form).
const MAX_SELECTED: usize = 1000;

/// The job lists of a queue page: URL key, list, tab label.
pub const LIST_TABS: [(&str, JobList, &str); 7] = [
    ("waiting", JobList::State(JobState::Ready), "Waiting"),
    ("scheduled", JobList::FirstRuns, "Scheduled"),
    ("retries", JobList::Retrying, "Retries"),
    ("running", JobList::State(JobState::Active), "Running"),
    (
        "completed",
        JobList::State(JobState::Completed),
        "Completed",
    ),
    ("dead", JobList::State(JobState::Dead), "Dead"),
    (
        "cancelled",
        JobList::State(JobState::Cancelled),
        "Cancelled",
    ),
];

/// The list of a URL key (the engine's state names work too; `scheduled` is the first runs).
pub fn parse_list(key: &str) -> Option<JobList> {
    LIST_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, list, _)| *list)
        .or_else(|| match JobState::parse(key)? {
            JobState::Scheduled => Some(JobList::FirstRuns),
            state => Some(JobList::State(state)),
        })
}

fn list_key(list: JobList) -> &'static str {
    LIST_TABS
        .iter()
        .find(|(_, l, _)| *l == list)
        .map(|(k, _, _)| *k)
        .unwrap_or("waiting")
}

/// The filter of `kind` and `q` (blank ones ignored).
pub fn filter_of(kind: Option<&str>, text: Option<&str>) -> JobFilter {
    let given = |value: Option<&str>| {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(200).collect::<String>())
    };
    JobFilter {
        kind: given(kind),
        text: given(text),
    }
}

/// The queue page's URL with these parameters (defaults left out).
fn page_url(queue: &str, key: &str, page: u64, filter: &JobFilter, range: Range) -> String {
    let mut pairs = vec![("state", key.to_owned())];
    if let Some(kind) = &filter.kind {
        pairs.push(("kind", kind.clone()));
    }
    if let Some(text) = &filter.text {
        pairs.push(("q", text.clone()));
    }
    if range != Range::Hour {
        pairs.push(("range", range.key().to_owned()));
    }
    if page > 1 {
        pairs.push(("page", page.to_string()));
    }
    path_and_query(&format!("/admin/queues/{queue}"), &pairs)
}

/// `GET /admin/queues/{queue}?state=dead&kind=…&q=…&range=24h&page=2`: one queue's jobs in one
/// list, filtered.
pub async fn queue_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path(queue): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(list) = parse_list(query.state.as_deref().unwrap_or("waiting")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown state",
            "Pick one of the tabs of the queue page.",
            false,
        );
    };
    let Some(range) = Range::parse(query.range.as_deref()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown range",
            "Pick 1 h, 24 h or 7 d above the chart.",
            false,
        );
    };
    let filter = filter_of(query.kind.as_deref(), query.q.as_deref());
    let key = list_key(list);
    let engine = &state.services.queue;
    let limits = engine.limits(queue);
    let now = chrono::Utc::now().timestamp_millis();
    let read = async {
        let (summaries, workers) = engine.summaries(&[queue], CHART_MINUTES).await?;
        let summary = summaries
            .into_iter()
            .next()
            .ok_or_else(|| AppError::internal("queue summary missing"))?;
        // A page past the end (jobs finished since the link was drawn) shows the last page; a
        // filtered list's length is known only once it was read.
        let page = query.page.unwrap_or(1).max(1);
        let page = if filter.is_empty() {
            page.min(list_total(&summary.counts, list).div_ceil(PAGE_SIZE).max(1))
        } else {
            page
        };
        let jobs = async {
            Ok::<_, AppError>(
                engine
                    .scan_jobs(queue, list, &filter, (page - 1) * PAGE_SIZE, PAGE_SIZE)
                    .await?,
            )
        };
        let kinds = async { Ok::<_, AppError>(engine.kind_runtimes(queue, KIND_MINUTES).await?) };
        let hours = async {
            Ok::<_, AppError>(if range.hourly() {
                Some(engine.hourly_throughput(queue, range.periods()).await?)
            } else {
                None
            })
        };
        let groups = async {
            if has_groups(&summary.counts, limits.group) {
                groups_section(&state, &session, queue, now).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (jobs, kinds, hours, groups) = tokio::try_join!(jobs, kinds, hours, groups)?;
        Ok::<_, AppError>((summary, workers, page, jobs, kinds, hours, groups))
    };
    let (summary, workers, page, scan, kinds, hours, groups) = match read.await {
        Ok(read) => read,
        Err(error) => return app_error_page(error),
    };
    let serving = workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue))
        .count();
    let mut row = queue_row(&summary.counts, &summary.throughput, serving, limits);
    row.partitions = partition_rows(&summary.partitions);
    let chart = chart(hours.as_deref().unwrap_or(&summary.throughput), range);
    let tabs = tabs(&summary.counts, list, &filter, range);
    let row_state = match list {
        JobList::State(state) => state,
        JobList::FirstRuns | JobList::Retrying => JobState::Scheduled,
    };
    let jobs: Vec<JobRow> = scan
        .jobs
        .iter()
        .map(|job| {
            let mut row = job_row(job, row_state, now);
            if list == JobList::Retrying {
                row.when_label = "next run";
                row.attempts = format!("{} of {}", job.attempts, job.max_attempts);
            }
            row
        })
        .collect();
    let mut pager = pager_with(
        |p| page_url(queue, key, p, &filter, range),
        page,
        jobs.len(),
        scan.matched,
    );
    pager.cut = !scan.complete;
    let return_to = page_url(queue, key, page, &filter, range);
    let mut frame = Frame::new(&session, format!("Queue {queue}"), return_to, Some(queue));
    frame.notice = query.notice();
    let state_label = LIST_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, l)| *l)
        .unwrap_or("");
    let filter_view = FilterView {
        kind: filter.kind.clone(),
        q: filter.text.clone(),
        active: !filter.is_empty(),
        clear_url: page_url(queue, key, 1, &JobFilter::default(), range),
        scanned: scan.scanned,
        complete: scan.complete,
        kinds: kinds.iter().map(|k| k.kind.clone()).collect(),
    };
    let bulk = bulk_view(queue, list, &filter, scan.matched, scan.complete);
    let kinds: Vec<KindRow> = kinds
        .iter()
        .map(|k| {
            kind_row(
                k,
                &page_url(queue, key, 1, &filter_of(Some(&k.kind), None), range),
            )
        })
        .collect();
    let ranges: Vec<RangeLink> = range_links(&page_url(queue, key, 1, &filter, Range::Hour), range);
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "queue_live.html"
        } else {
            "queue.html"
        },
        minijinja::context! {
            frame, queue => row, chart, ranges, kinds, groups, tabs, jobs, pager,
            state_key => key, state_label, filter => filter_view, bulk, read_at,
            scan_limit => SCAN_LIMIT,
            range_key => (range != Range::Hour).then(|| range.key()),
        },
    )
}

/// Jobs in `list` that it shows unfiltered (waiting: those without a group).
fn list_total(counts: &QueueCounts, list: JobList) -> u64 {
    match list {
        JobList::State(JobState::Ready) => counts.waiting.saturating_sub(counts.waiting_in_groups),
        JobList::State(JobState::Scheduled) => counts.scheduled,
        JobList::FirstRuns => counts.scheduled.saturating_sub(counts.retrying),
        JobList::Retrying => counts.retrying,
        JobList::State(JobState::Active) => counts.active,
        JobList::State(JobState::Completed) => counts.completed,
        JobList::State(JobState::Dead) => counts.dead,
        JobList::State(JobState::Cancelled) => counts.cancelled,
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

/// The filter form above a queue's list, and what the filter found.
#[derive(Debug, Clone, Serialize)]
pub struct FilterView {
    /// The kind asked for.
    pub kind: Option<String>,
    /// The text asked for.
    pub q: Option<String>,
    /// A filter is applied.
    pub active: bool,
    /// The list without the filter.
    pub clear_url: String,
    /// Jobs looked at to find the matches.
    pub scanned: u64,
    /// Every job of the list was looked at.
    pub complete: bool,
    /// Kinds to suggest (those that ran in the last hour).
    pub kinds: Vec<String>,
}

/// One job kind in the job kinds table.
#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    /// The kind.
    pub kind: String,
    /// This tab filtered by the kind.
    pub url: String,
    /// Attempts that finished in the last hour.
    pub attempts: u64,
    /// Of them, failed.
    pub failed: u64,
    /// `failed / attempts`, readable.
    pub failure_rate: String,
    /// Above a tenth failing: drawn in red.
    pub failing: bool,
    /// Run-time percentiles and mean, readable.
    pub p50: String,
    /// 95th percentile.
    pub p95: String,
    /// 99th percentile.
    pub p99: String,
    /// Mean.
    pub mean: String,
}

fn kind_row(runtime: &KindRuntime, url: &str) -> KindRow {
    KindRow {
        kind: runtime.kind.clone(),
        url: url.to_owned(),
        attempts: runtime.attempts,
        failed: runtime.failed,
        failure_rate: percent(runtime.failure_rate),
        failing: runtime.failure_rate > 0.1,
        p50: run_time(runtime.p50_ms),
        p95: run_time(runtime.p95_ms),
        p99: run_time(runtime.p99_ms),
        mean: run_time(runtime.mean_ms),
    }
}

/// What a bulk action does to the jobs of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkOp {
    /// Dead or cancelled: queued again; scheduled: run now.
    Retry,
    /// Deleted for good.
    Delete,
}

/// Which jobs a bulk action takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Those ticked on the page.
    Selected,
    /// Every job the filter matches (among the first [`SCAN_LIMIT`] of the list).
    Matching,
}

/// The bulk action a button names (`retry-selected`, `delete-matching`, ...).
fn parse_bulk(name: &str) -> Option<(BulkOp, Scope)> {
    let (op, scope) = name.split_once('-')?;
    let op = match op {
        "retry" => BulkOp::Retry,
        "delete" => BulkOp::Delete,
        _ => return None,
    };
    let scope = match scope {
        "selected" => Scope::Selected,
        "matching" => Scope::Matching,
        _ => return None,
    };
    Some((op, scope))
}

/// What retrying means in `list`, if it means anything: the verb for buttons and questions.
fn retry_verb(list: JobList) -> Option<&'static str> {
    match list {
        JobList::State(JobState::Dead | JobState::Cancelled) => Some("Retry"),
        JobList::FirstRuns | JobList::Retrying | JobList::State(JobState::Scheduled) => {
            Some("Run now")
        }
        _ => None,
    }
}

/// Whether jobs of `list` may be deleted (a running job must finish or lose its lease first).
fn deletable(list: JobList) -> bool {
    list != JobList::State(JobState::Active)
}

/// The jobs of a list as a question names them: `dead jobs`, `retries`.
fn list_noun(list: JobList) -> &'static str {
    match list {
        JobList::State(JobState::Ready) => "waiting jobs",
        JobList::State(JobState::Scheduled) | JobList::FirstRuns => "scheduled jobs",
        JobList::Retrying => "retries",
        JobList::State(JobState::Active) => "running jobs",
        JobList::State(JobState::Completed) => "completed jobs",
        JobList::State(JobState::Dead) => "dead jobs",
        JobList::State(JobState::Cancelled) => "cancelled jobs",
    }
}

/// `kind email.welcome and text “spam”`, or `None` for an empty filter.
fn filter_words(filter: &JobFilter) -> Option<String> {
    let parts: Vec<String> = filter
        .kind
        .iter()
        .map(|kind| format!("kind {kind}"))
        .chain(filter.text.iter().map(|text| format!("text “{text}”")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" and "))
}

/// The question a bulk action asks. `selected`: how many are ticked (`None`: the page's script
/// fills in `{n}`); `matched`: how many the filter matched on the page's read.
fn bulk_question(
    queue: &str,
    list: JobList,
    filter: &JobFilter,
    op: BulkOp,
    scope: Scope,
    selected: Option<usize>,
) -> String {
    let noun = list_noun(list);
    let verb = match op {
        BulkOp::Retry => retry_verb(list).unwrap_or("Retry"),
        BulkOp::Delete => "Delete",
    };
    let after = match op {
        BulkOp::Retry if verb == "Retry" => " Their attempts start again from zero.",
        BulkOp::Retry => " They run as soon as a worker takes them.",
        BulkOp::Delete => " They will not run again.",
    };
    match scope {
        Scope::Selected => {
            let n = selected.map_or_else(|| "{n}".to_owned(), |n| n.to_string());
            format!("{verb} the {n} selected {noun} of {queue}?{after}")
        }
        Scope::Matching => {
            let which = match filter_words(filter) {
                Some(words) => format!("every one of the {noun} of {queue} with {words}"),
                None => format!("every one of the {noun} of {queue}"),
            };
            format!(
                "{verb} {which}? At most the first {SCAN_LIMIT} of the list are looked at.{after}"
            )
        }
    }
}

/// The bulk bar above a list: where it posts, and its buttons.
#[derive(Debug, Clone, Serialize)]
pub struct BulkView {
    /// Form target.
    pub url: String,
    /// The buttons: acting on the ticked jobs, then on every match.
    pub buttons: Vec<BulkButton>,
}

/// One button of the bulk bar.
#[derive(Debug, Clone, Serialize)]
pub struct BulkButton {
    /// The `do` value it posts (`retry-selected`).
    pub name: String,
    /// Its text.
    pub label: String,
    /// The question the confirmation asks (`{n}`: the number ticked, filled in by the script).
    pub confirm: String,
    /// Destructive.
    pub danger: bool,
    /// Acts on the ticked jobs (disabled while none is).
    pub selection: bool,
}

/// The bulk bar of `list` filtered by `filter`, `matched` jobs matching; `None` for a list no
/// bulk action applies to (running jobs).
fn bulk_view(
    queue: &str,
    list: JobList,
    filter: &JobFilter,
    matched: u64,
    complete: bool,
) -> Option<BulkView> {
    // Each action as (op, name, its label for the ticked jobs, for `{all}` of them, destructive).
    let mut ops = Vec::new();
    match retry_verb(list) {
        Some("Retry") => ops.push((
            BulkOp::Retry,
            "retry",
            "Retry selected",
            "Retry {all}",
            false,
        )),
        Some(_) => ops.push((
            BulkOp::Retry,
            "retry",
            "Run selected now",
            "Run {all} now",
            false,
        )),
        None => {}
    }
    if deletable(list) {
        ops.push((
            BulkOp::Delete,
            "delete",
            "Delete selected",
            "Delete {all}",
            true,
        ));
    }
    if ops.is_empty() {
        return None;
    }
    let mut buttons = Vec::new();
    for (op, name, selected, _, danger) in &ops {
        buttons.push(BulkButton {
            name: format!("{name}-selected"),
            label: (*selected).to_owned(),
            confirm: bulk_question(queue, list, filter, *op, Scope::Selected, None),
            danger: *danger,
            selection: true,
        });
    }
    if matched > 0 {
        let count = if complete {
            matched.to_string()
        } else {
            format!("{matched}+")
        };
        let all = if filter.is_empty() {
            format!("all {count}")
        } else {
            format!("all {count} matching")
        };
        for (op, name, _, every, danger) in &ops {
            buttons.push(BulkButton {
                name: format!("{name}-matching"),
                label: every.replace("{all}", &all),
                confirm: bulk_question(queue, list, filter, *op, Scope::Matching, None),
                danger: *danger,
                selection: false,
            });
        }
    }
    Some(BulkView {
        url: format!("/admin/queues/{queue}/bulk"),
        buttons,
    })
}

/// `POST /admin/queues/{queue}/bulk`: `do` = `retry-selected`, `delete-selected`,
/// `retry-matching` or `delete-matching`; `ids` the ticked jobs; `state`, `kind`, `q` the list
/// and filter the page showed.
pub async fn bulk_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path(queue): Path<String>,
    headers: HeaderMap,
    form: Result<axum::Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let pairs = match &form {
        Ok(axum::Form(pairs)) => pairs.clone(),
        Err(_) => Vec::new(),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let Some((op, scope)) = field("do").and_then(parse_bulk) else {
        return no_such_action();
    };
    let Some(list) = parse_list(field("state").unwrap_or("waiting")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown state",
            "Pick one of the tabs of the queue page.",
            false,
        );
    };
    let allowed = match op {
        BulkOp::Retry => retry_verb(list).is_some(),
        BulkOp::Delete => deletable(list),
    };
    if !allowed {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Not for this list",
            "That action does not apply to the jobs of this list.",
            false,
        );
    }
    let filter = filter_of(field("kind"), field("q"));
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key == "ids")
        .map(|(_, id)| id.clone())
        .take(MAX_SELECTED)
        .collect();
    let question = bulk_question(
        queue,
        list,
        &filter,
        op,
        scope,
        (scope == Scope::Selected).then_some(ids.len()),
    );
    // What the confirmation page posts again.
    let mut fields: Vec<(String, String)> = ["do", "state", "kind", "q"]
        .into_iter()
        .filter_map(|name| field(name).map(|value| (name.to_owned(), value.to_owned())))
        .collect();
    if scope == Scope::Selected {
        fields.extend(ids.iter().map(|id| ("ids".to_owned(), id.clone())));
    }
    let form = form.map(|axum::Form(pairs)| axum::Form(ActionForm::from_pairs(&pairs)));
    let action_url = format!("/admin/queues/{queue}/bulk");
    let form =
        match authorize_action_with(&session, &headers, form, &question, &action_url, &fields) {
            Gate::Proceed(form) => form,
            Gate::Respond(response) => return response,
        };
    let return_to = safe_return_path(form.return_to.as_deref());
    let engine = &state.services.queue;
    let (ids, complete) = match scope {
        Scope::Selected if ids.is_empty() => {
            return after_action(&return_to, "bulk-none", None);
        }
        Scope::Selected => (ids, true),
        Scope::Matching => match engine.matching_ids(queue, list, &filter).await {
            Ok(matches) => (matches.ids, matches.complete),
            Err(error) => return app_error_page(error.into()),
        },
    };
    let (done, result) = match (op, retry_verb(list)) {
        (BulkOp::Retry, Some("Retry")) => ("bulk-retry", engine.retry_jobs(queue, &ids).await),
        (BulkOp::Retry, _) => ("bulk-promote", engine.promote_jobs(queue, &ids).await),
        (BulkOp::Delete, _) => ("bulk-delete", engine.delete_jobs(queue, &ids).await),
    };
    match result {
        Ok(changed) => {
            tracing::info!(
                admin = %session.actor.user_id, queue, action = done, asked = ids.len(), changed,
                complete, "dashboard bulk action"
            );
            let separator = if return_to.contains('?') { '&' } else { '?' };
            let cut = if complete { "" } else { "&cut=1" };
            Redirect::to(&format!(
                "{return_to}{separator}done={done}&n={changed}{cut}"
            ))
            .into_response()
        }
        Err(error) => app_error_page(error.into()),
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
    /// Scheduled for their first run (delayed, or at a set time).
    pub scheduled: u64,
    /// Scheduled for another attempt after a failed one.
    pub retrying: u64,
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
    /// The sizes of each partition of a partitioned queue (empty for a queue of one).
    pub partitions: Vec<PartitionRow>,
}

/// One partition of a partitioned queue on its queue page.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    /// The partition's name (`emails~2`; partition 0 is the queue's own name).
    pub name: String,
    /// Waiting jobs, in groups or not.
    pub waiting: u64,
    /// Scheduled jobs, first runs and retries.
    pub scheduled: u64,
    /// Leased by a worker now.
    pub running: u64,
    /// Completed, within retention.
    pub completed: u64,
    /// Failed for good.
    pub dead: u64,
}

/// The rows of a queue's partitions (none for a queue of one partition).
pub fn partition_rows(partitions: &[QueueCounts]) -> Vec<PartitionRow> {
    partitions
        .iter()
        .map(|p| PartitionRow {
            name: p.queue.clone(),
            waiting: p.waiting,
            scheduled: p.scheduled,
            running: p.active,
            completed: p.completed,
            dead: p.dead,
        })
        .collect()
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
        scheduled: counts.scheduled.saturating_sub(counts.retrying),
        retrying: counts.retrying,
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
        partitions: Vec::new(),
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
    /// The list as operators name it (`Waiting` for the engine's `ready`).
    pub label: &'static str,
    /// Jobs in that list.
    pub count: u64,
    /// The queue page with this list selected (`?state=<key>`), the filter kept.
    pub url: String,
    /// The tab shown.
    pub current: bool,
}

/// The tabs of `counts`' queue with `current` selected, linking with `filter` and `range` kept.
pub fn tabs(counts: &QueueCounts, current: JobList, filter: &JobFilter, range: Range) -> Vec<Tab> {
    LIST_TABS
        .iter()
        .map(|(key, list, label)| Tab {
            key,
            label,
            count: match list {
                JobList::State(JobState::Ready) => counts.waiting,
                _ => list_total(counts, *list),
            },
            url: page_url(&counts.queue, key, 1, filter, range),
            current: *list == current,
        })
        .collect()
}
