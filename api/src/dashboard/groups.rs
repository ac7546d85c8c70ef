//! Job groups on the dashboard: the "Groups" section of a queue page (the queue's per-group
//! limits, the groups with the largest backlogs, every open breaker with a button to close it),
//! a group's own page, `/admin/queues/{queue}/groups/{key}` (its status and its waiting jobs, a
//! page at a time), and the one action on a group: closing its breaker by hand.
//!
//! Grouped jobs wait in their group, not in the queue's waiting list, so a queue page lists them
//! here and on the group pages. What a group key stands for is the shop's: on the `webhooks`
//! queue it is an endpoint id, shown with the endpoint's URL read through the webhooks service
//! ([`group_labels`], by way of [`super::links::endpoint_labels`], which the job page uses for
//! a payload's `endpoint_id` too); elsewhere the key alone.

use std::collections::{BTreeSet, HashMap};

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use orderly::{
    error::AppError,
    jobs::WebhookJob,
    queue::{
        GroupLimits, Job, JobGroup, JobState,
        inspect::{BreakerStatus, GroupStatus, JobDetail, QueueCounts},
    },
};
use serde::Serialize;

use crate::{
    dashboard::{
        actions::{Action, ActionForm, Gate, after_action, authorize_action},
        format::{Moment, group_url, human_duration, moment, short_id},
        frame::{Frame, PageQuery, known_queue, no_such_action, no_such_queue},
        links::endpoint_labels,
        list::{JobRow, PAGE_SIZE, Pager, job_row, pager_with, shorten},
        render::{app_error_page, error_page, render},
        session::{AdminSession, PageAdmin, safe_return_path},
    },
    extract::Path,
    state::AppState,
};

/// Groups listed by backlog on a queue page (the same number `/metrics` names).
pub const GROUPS_SHOWN: usize = orderly::queue::metrics::GROUP_SERIES;

/// The Groups section of a queue page.
#[derive(Debug, Clone, Serialize)]
pub struct GroupsSection {
    /// What a group key is on this queue: `Endpoint` on `webhooks`, `Group` elsewhere.
    pub noun: &'static str,
    /// The limits every group of the queue has, as label and readable value.
    pub limits: Vec<(&'static str, String)>,
    /// Groups with waiting jobs.
    pub groups_with_backlog: u64,
    /// Jobs waiting in groups in total.
    pub waiting: u64,
    /// The groups with the largest backlogs, largest first.
    pub top: Vec<GroupRow>,
    /// `and 3 more groups with 17 waiting jobs`, when groups are left out of `top`.
    pub more: Option<String>,
    /// Every group whose breaker is open or probing, the longest open first.
    pub breakers: Vec<GroupRow>,
}

/// One group in a list, and the head of a group's page.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    /// The group key.
    pub key: String,
    /// Its page.
    pub url: String,
    /// What the key stands for (a webhook endpoint's URL), when the shop knows.
    pub label: Option<String>,
    /// Jobs waiting in it.
    pub waiting: u64,
    /// Jobs of it running now.
    pub running: u64,
    /// `ready`, `held`, `waiting` or `idle` (the engine's word).
    pub state: String,
    /// Why it is not claimed from now, readable: `until 12:03:04 UTC — the job at its head is
    /// retrying`; `None` when it is ready or idle.
    pub reason: Option<String>,
    /// When a waiting group may be claimed from again.
    pub until: Option<Moment>,
    /// Its circuit breaker, when it counts failures or is open.
    pub breaker: Option<BreakerView>,
    /// Close breaker, while it is open or probing.
    pub actions: Vec<Action>,
}

/// A group's circuit breaker as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// `closed` (counting failures), `open` (its jobs wait) or `probing` (one job decides).
    pub state: String,
    /// Failed attempts in a row.
    pub failures: u64,
    /// Times it opened in a row (each doubles the cool-down).
    pub opens: u64,
    /// When it opened, in this run of failures.
    pub opened_at: Option<Moment>,
    /// When an open breaker lets a probe through.
    pub reopens_at: Option<Moment>,
    /// The last failure's message, shortened.
    pub last_error: Option<String>,
    /// One line for a table cell: `2 failures in a row`, `reopens 12:05:00 UTC`.
    pub note: String,
}

/// Whether a queue page shows a Groups section: the queue has group limits, or jobs in groups,
/// or open breakers.
pub fn has_groups(counts: &QueueCounts, limits: GroupLimits) -> bool {
    limits.is_limited() || counts.waiting_in_groups > 0 || counts.open_breakers > 0
}

/// The Groups section of `queue`'s page, read now.
pub(super) async fn groups_section(
    state: &AppState,
    session: &AdminSession,
    queue: &'static str,
    now_ms: i64,
) -> Result<GroupsSection, AppError> {
    let engine = &state.services.queue;
    let limits = engine.limits(queue).group;
    let overview = engine.groups(queue, GROUPS_SHOWN).await?;
    let shown: Vec<&GroupStatus> = overview
        .top
        .iter()
        .chain(overview.open_breakers.iter())
        .collect();
    let (heads, labels) = tokio::join!(
        heads_of(state, queue, &shown),
        group_labels(
            state,
            session,
            queue,
            shown.iter().map(|g| g.key.as_str()).collect()
        )
    );
    let heads = heads?;
    let row = |status: &GroupStatus| {
        group_row(
            queue,
            status,
            heads.get(&status.key),
            limits,
            labels.get(&status.key).cloned(),
            now_ms,
        )
    };
    let more_groups = overview
        .groups_with_backlog
        .saturating_sub(overview.top.len() as u64);
    Ok(GroupsSection {
        noun: group_noun(queue),
        limits: limit_facts(state, queue, limits),
        groups_with_backlog: overview.groups_with_backlog,
        waiting: overview.waiting,
        top: overview.top.iter().map(row).collect(),
        more: (more_groups > 0).then(|| {
            format!(
                "and {more_groups} more {} with {} waiting {}",
                plural(more_groups, "group"),
                overview.others_waiting,
                plural(overview.others_waiting, "job"),
            )
        }),
        breakers: overview.open_breakers.iter().map(row).collect(),
    })
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// The first waiting job of each group that is held or waits for a time (what says why: an
/// ordered group's head retrying), read concurrently.
async fn heads_of(
    state: &AppState,
    queue: &str,
    groups: &[&GroupStatus],
) -> Result<HashMap<String, JobDetail>, AppError> {
    let engine = &state.services.queue;
    let keys: BTreeSet<&str> = groups
        .iter()
        .filter(|g| matches!(g.state.as_str(), "held" | "waiting"))
        .filter(|g| g.breaker.as_ref().is_none_or(|b| b.state == "closed"))
        .map(|g| g.key.as_str())
        .collect();
    let reads = keys.into_iter().map(|key| async move {
        let page = engine.group_jobs(queue, key, 0, 1).await?;
        Ok::<_, redis::RedisError>(
            page.jobs
                .into_iter()
                .next()
                .map(|job| (key.to_owned(), job)),
        )
    });
    Ok(futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// What a group key is on `queue`, for headings.
fn group_noun(queue: &str) -> &'static str {
    if queue == WebhookJob::QUEUE.as_str() {
        "Endpoint"
    } else {
        "Group"
    }
}

/// Whether the groups of `queue` are ordered, when the shop decides it per queue (`None`: each
/// job says so itself).
fn ordered_groups(state: &AppState, queue: &str) -> Option<bool> {
    (queue == WebhookJob::QUEUE.as_str()).then_some(state.services.config.webhooks.ordered)
}

/// What the keys of `queue` stand for, by key: on the `webhooks` queue, the endpoint's URL (read
/// through the webhooks service, see [`endpoint_labels`]; "endpoint deleted" when it is gone).
/// Keys the shop does not know are left out, and so is an endpoint that could not be read: the
/// key alone is still shown.
pub(super) async fn group_labels(
    state: &AppState,
    session: &AdminSession,
    queue: &str,
    keys: Vec<&str>,
) -> HashMap<String, String> {
    if queue != WebhookJob::QUEUE.as_str() {
        return HashMap::new();
    }
    endpoint_labels(state, session, keys).await
}

/// The per-group limits of `queue`, as label and value.
fn limit_facts(state: &AppState, queue: &str, limits: GroupLimits) -> Vec<(&'static str, String)> {
    vec![
        (
            "Rate per group",
            limits
                .rate
                .map_or_else(|| "none".to_owned(), |rate| format!("at most {rate}")),
        ),
        (
            "Running per group",
            limits
                .concurrency
                .map_or_else(|| "no cap".to_owned(), |cap| format!("at most {cap}")),
        ),
        (
            "Breaker",
            limits.breaker.map_or_else(
                || "none".to_owned(),
                |b| {
                    format!(
                        "opens after {} failed {} in a row; cool-down {}, doubling up to {}",
                        b.failures,
                        plural(u64::from(b.failures), "attempt"),
                        human_duration(b.cooldown.as_millis() as u64),
                        human_duration(b.max_cooldown.as_millis() as u64),
                    )
                },
            ),
        ),
        (
            "Order",
            match ordered_groups(state, queue) {
                Some(true) => "ordered: one job at a time, first in first out; a retry holds \
                               back the jobs behind it"
                    .to_owned(),
                Some(false) => "unordered: groups take turns, jobs run side by side".to_owned(),
                None => "set by each job".to_owned(),
            },
        ),
    ]
}

/// `per group: at most 10/s, 4 running, breaker`: the badge beside a queue's name, or `None`
/// for a queue without group limits.
pub fn group_limits_badge(limits: GroupLimits) -> Option<String> {
    let parts: Vec<String> = limits
        .rate
        .map(|rate| rate.to_string())
        .into_iter()
        .chain(limits.concurrency.map(|cap| format!("{cap} running")))
        .collect();
    let breaker = limits
        .breaker
        .map(|b| format!("breaker after {}", b.failures));
    match (parts.is_empty(), breaker) {
        (true, None) => None,
        (true, Some(breaker)) => Some(format!("per group: {breaker}")),
        (false, None) => Some(format!("per group: at most {}", parts.join(", "))),
        (false, Some(breaker)) => Some(format!(
            "per group: at most {}; {breaker}",
            parts.join(", ")
        )),
    }
}

/// The row of one group, with its first waiting job `head` (read when it is held or waits).
fn group_row(
    queue: &str,
    status: &GroupStatus,
    head: Option<&JobDetail>,
    limits: GroupLimits,
    label: Option<String>,
    now_ms: i64,
) -> GroupRow {
    let breaker = status.breaker.as_ref().map(|b| breaker_view(b, now_ms));
    let until = status
        .waiting_until_ms
        .filter(|_| status.state == "waiting")
        .and_then(|ms| moment(ms, now_ms));
    let breaker_state = status.breaker.as_ref().map(|b| b.state.as_str());
    let head_ordered = head.is_some_and(|job| job.ordered);
    let reason = match status.state.as_str() {
        "held" => Some(if breaker_state == Some("probing") {
            "its breaker's probe is running".to_owned()
        } else if head_ordered {
            "ordered: it waits for its running job".to_owned()
        } else if let Some(cap) = limits.concurrency {
            format!("at its cap of {cap} running")
        } else {
            "until one of its running jobs ends".to_owned()
        }),
        "waiting" => {
            let why = if breaker_state == Some("open") {
                "its breaker is open"
            } else if head.is_some_and(|job| head_is_retrying(job, status, now_ms)) {
                "the job at its head is retrying"
            } else if limits.rate.is_some() {
                "its rate limit: the next token"
            } else {
                "held for a time"
            };
            Some(match &until {
                Some(at) => format!("until {} UTC — {why}", at.clock),
                None => why.to_owned(),
            })
        }
        _ => None,
    };
    let actions = match breaker_state {
        Some("open" | "probing") => vec![close_breaker_action(queue, &status.key)],
        _ => Vec::new(),
    };
    GroupRow {
        key: status.key.clone(),
        url: group_url(queue, &status.key),
        label,
        waiting: status.waiting,
        running: status.running,
        state: status.state.clone(),
        reason,
        until,
        breaker,
        actions,
    }
}

/// Whether an ordered group waits for the retry of the job at its head: the job failed, kept
/// its place, and is due when the group's wait ends (or later than now).
fn head_is_retrying(head: &JobDetail, status: &GroupStatus, now_ms: i64) -> bool {
    head.ordered
        && head
            .run_at_ms
            .is_some_and(|due| due > now_ms || Some(due) == status.waiting_until_ms)
}

fn breaker_view(breaker: &BreakerStatus, now_ms: i64) -> BreakerView {
    let reopens_at = breaker.reopens_at_ms.and_then(|ms| moment(ms, now_ms));
    let failures = format!(
        "{} {} in a row",
        breaker.failures,
        plural(breaker.failures, "failure")
    );
    BreakerView {
        state: breaker.state.clone(),
        failures: breaker.failures,
        opens: breaker.opens,
        opened_at: breaker.opened_at_ms.and_then(|ms| moment(ms, now_ms)),
        note: match (breaker.state.as_str(), &reopens_at) {
            ("open", Some(at)) => format!("{failures}; reopens {} UTC", at.clock),
            ("probing", _) => format!("{failures}; one job decides"),
            _ => failures,
        },
        reopens_at,
        last_error: breaker.last_error.as_deref().map(|e| shorten(e, 300)),
    }
}

/// The Close breaker button of a group.
fn close_breaker_action(queue: &str, key: &str) -> Action {
    Action {
        url: format!("{}/close-breaker", group_url(queue, key)),
        label: "Close breaker",
        confirm: format!(
            "Close the breaker of {} {}? Its waiting jobs may run at once; if they keep failing, \
             it opens again.",
            group_noun(queue).to_lowercase(),
            short_id(key)
        ),
        danger: false,
    }
}

/// Whether `key` can be a group key (1 to 200 bytes, as the engine takes them).
fn is_group_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= JobGroup::MAX_KEY_BYTES
}

fn no_such_group() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such group",
        "A group key is 1 to 200 bytes of text.",
        false,
    )
}

/// `GET /admin/queues/{queue}/groups/{key}?page=2`: one group's status and its waiting jobs, next
/// to run first.
pub async fn group_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, key)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    if !is_group_key(&key) {
        return no_such_group();
    }
    let engine = &state.services.queue;
    let read = async {
        let status = engine.group(queue, &key).await?;
        // A page past the end (jobs ran since the link was drawn) shows the last page.
        let last_page = status.waiting.div_ceil(PAGE_SIZE).max(1);
        let page = query.page.unwrap_or(1).clamp(1, last_page);
        let (list, head) = if page == 1 {
            let list = engine.group_jobs(queue, &key, 0, PAGE_SIZE).await?;
            let head = list.jobs.first().cloned();
            (list, head)
        } else {
            let (list, head) = tokio::try_join!(
                engine.group_jobs(queue, &key, (page - 1) * PAGE_SIZE, PAGE_SIZE),
                engine.group_jobs(queue, &key, 0, 1)
            )?;
            (list, head.jobs.into_iter().next())
        };
        Ok::<_, AppError>((status, page, list, head))
    };
    let (read, labels) = tokio::join!(read, group_labels(&state, &session, queue, vec![&key]));
    let (status, page, list, head) = match read {
        Ok(read) => read,
        Err(error) => return app_error_page(error),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let limits = engine.limits(queue).group;
    let group = group_row(
        queue,
        &status,
        head.as_ref(),
        limits,
        labels.get(&key).cloned(),
        now,
    );
    let jobs: Vec<JobRow> = list
        .jobs
        .iter()
        .map(|job| job_row(job, JobState::Ready, now))
        .collect();
    let pager: Pager = pager_with(
        |p| format!("{}?page={p}", group.url),
        page,
        jobs.len(),
        list.total,
    );
    let return_to = if page > 1 {
        format!("{}?page={page}", group.url)
    } else {
        group.url.clone()
    };
    let noun = group_noun(queue);
    let mut frame = Frame::new(
        &session,
        format!("{noun} {}", short_id(&key)),
        return_to,
        Some(queue),
    );
    frame.notice = query.notice();
    let limits = limit_facts(&state, queue, limits);
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "group_live.html"
        } else {
            "group.html"
        },
        minijinja::context! { frame, queue, noun, group, limits, jobs, pager, state_key => "waiting", read_at },
    )
}

/// `POST /admin/queues/{queue}/groups/{key}/close-breaker`: closes the group's breaker by hand
/// (its waiting jobs may run at once).
pub async fn group_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, key, action_name)): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    if action_name != "close-breaker" {
        return no_such_action();
    }
    if !is_group_key(&key) {
        return no_such_group();
    }
    let action = close_breaker_action(queue, &key);
    let form = match authorize_action(&session, &headers, form, &action.confirm, &action.url) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    match state.services.queue.close_breaker(queue, &key).await {
        Ok(closed) => {
            tracing::info!(admin = %session.actor.user_id, queue, group = %key, action = action_name, closed, "dashboard group action");
            after_action(
                &safe_return_path(form.return_to.as_deref()),
                if closed {
                    "close-breaker"
                } else {
                    "breaker-unchanged"
                },
                None,
            )
        }
        Err(error) => app_error_page(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orderly::queue::{Breaker, RateLimit};

    use super::*;

    fn status(state: &str, until: Option<i64>, breaker: Option<&str>) -> GroupStatus {
        GroupStatus {
            key: "ep/1".into(),
            waiting: 3,
            running: 1,
            state: state.into(),
            waiting_until_ms: until,
            breaker: breaker.map(|state| BreakerStatus {
                state: state.into(),
                failures: 5,
                opens: 1,
                opened_at_ms: Some(1_000),
                reopens_at_ms: (state == "open").then_some(31_000),
                last_error: Some("HTTP 503".into()),
            }),
        }
    }

    fn head(ordered: bool, attempts: u32, run_at_ms: Option<i64>) -> JobDetail {
        JobDetail {
            id: "j1".into(),
            queue: "webhooks".into(),
            partition: None,
            state: "ready".into(),
            kind: "webhook.deliver".into(),
            payload: serde_json::Value::Null,
            priority: 5,
            attempts,
            max_attempts: 3,
            request_id: None,
            worker: None,
            created_at_ms: None,
            enqueued_at_ms: None,
            run_at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            last_error: None,
            errors: Vec::new(),
            retry: None,
            unique_key: None,
            progress: None,
            result: None,
            cancel_requested_at_ms: None,
            cancel_reason: None,
            events: false,
            group: Some("ep/1".into()),
            ordered,
            traceparent: None,
        }
    }

    fn limits() -> GroupLimits {
        GroupLimits {
            rate: Some(RateLimit::parse("10/s").unwrap()),
            concurrency: Some(4),
            breaker: Some(Breaker::after(5)),
        }
    }

    #[test]
    fn a_waiting_group_says_why_and_until_when() {
        // 00:00:31 UTC on 1 January 1970.
        let row = |status: &GroupStatus, head: Option<&JobDetail>| {
            group_row("webhooks", status, head, limits(), None, 1_000).reason
        };
        let waiting = status("waiting", Some(31_000), None);
        assert_eq!(
            row(&waiting, Some(&head(true, 1, Some(31_000)))).as_deref(),
            Some("until 00:00:31 UTC — the job at its head is retrying")
        );
        assert_eq!(
            row(&waiting, Some(&head(false, 0, None))).as_deref(),
            Some("until 00:00:31 UTC — its rate limit: the next token")
        );
        let open = status("waiting", Some(31_000), Some("open"));
        assert_eq!(
            row(&open, None).as_deref(),
            Some("until 00:00:31 UTC — its breaker is open")
        );
        assert_eq!(
            row(&status("held", None, None), None).as_deref(),
            Some("at its cap of 4 running")
        );
        assert_eq!(
            row(&status("held", None, None), Some(&head(true, 0, None))).as_deref(),
            Some("ordered: it waits for its running job")
        );
        assert_eq!(row(&status("ready", None, None), None), None);
    }

    #[test]
    fn only_an_open_or_probing_breaker_can_be_closed() {
        let actions = |breaker| {
            group_row(
                "webhooks",
                &status("waiting", Some(31_000), breaker),
                None,
                limits(),
                None,
                1_000,
            )
            .actions
        };
        let open = actions(Some("open"));
        assert_eq!(open.len(), 1);
        assert_eq!(
            open[0].url,
            "/admin/queues/webhooks/groups/ep%2F1/close-breaker"
        );
        assert!(
            open[0].confirm.contains("endpoint ep/1"),
            "{}",
            open[0].confirm
        );
        assert_eq!(actions(Some("probing")).len(), 1);
        assert!(actions(Some("closed")).is_empty());
        assert!(actions(None).is_empty());
    }

    #[test]
    fn the_badge_sums_up_the_group_limits() {
        assert_eq!(
            group_limits_badge(limits()).as_deref(),
            Some("per group: at most 10/s, 4 running; breaker after 5")
        );
        assert_eq!(
            group_limits_badge(GroupLimits {
                breaker: Some(Breaker {
                    failures: 3,
                    cooldown: Duration::from_secs(5),
                    max_cooldown: Duration::from_secs(60),
                }),
                ..GroupLimits::default()
            })
            .as_deref(),
            Some("per group: breaker after 3")
        );
        assert_eq!(group_limits_badge(GroupLimits::default()), None);
    }
}
