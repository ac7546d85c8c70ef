//! A job's page, `/admin/queues/{queue}/jobs/{id}`: its state (a scheduled job that failed before
//! reads as retrying), timestamps, payload and what the ids in it name (see [`super::links`]),
//! retry policy, its group (linked to the group's page) and every failed attempt, and the
//! operator actions on it (retry a dead job, run a scheduled one now, cancel, delete), each
//! offered only in the states where it applies.

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use orderly::queue::{CancelOutcome, JobState, RetryPolicy, inspect::JobDetail};
use serde::Serialize;

use crate::{
    dashboard::{
        actions::{Action, ActionForm, Gate, after_action, authorize_action},
        format::state_key,
        format::{Moment, group_url, moment, retry_schedule, short_id},
        frame::{Frame, PageQuery, known_queue, no_such_action, no_such_queue},
        links::payload_links,
        render::{app_error_page, error_page, render},
        session::{PageAdmin, safe_return_path, urlencode},
    },
    extract::Path,
    state::AppState,
};

/// `GET /admin/queues/{queue}/jobs/{id}`: one job with its payload and every failed attempt.
pub async fn job_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, id)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let job = match state.services.queue.job(queue, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such job",
                "No job with that id is in this queue: it may have been deleted or trimmed by retention.",
                false,
            );
        }
        Err(error) => return app_error_page(error.into()),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let links = payload_links(&state, &session, &job.payload).await;
    let job = job_view(&job, now);
    let return_to = format!("/admin/queues/{queue}/jobs/{}", urlencode(&id));
    let mut frame = Frame::new(
        &session,
        format!("Job {}", short_id(&id)),
        return_to,
        Some(queue),
    );
    frame.notice = query.notice();
    // A grouped job waits in its group's list, not in the queue's.
    let list_url = match &job.group {
        Some(group) if job.state == "waiting" => group.url.clone(),
        _ if job.retrying => format!("/admin/queues/{queue}?state=retries"),
        _ => format!("/admin/queues/{queue}?state={}", job.state),
    };
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "job_live.html"
        } else {
            "job.html"
        },
        minijinja::context! { frame, job, links, list_url, read_at },
    )
}

/// The operator actions on one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobAction {
    Retry,
    Promote,
    Delete,
    Cancel,
}

impl JobAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "retry" => Self::Retry,
            "promote" => Self::Promote,
            "delete" => Self::Delete,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }
}

/// `POST /admin/queues/{queue}/jobs/{id}/{action}`: retry, promote, delete, cancel.
pub async fn job_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, id, action_name)): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(action) = JobAction::parse(&action_name) else {
        return no_such_action();
    };
    let state_name = match state.services.queue.job(queue, &id).await {
        Ok(job) => job.map(|j| j.state).unwrap_or_default(),
        Err(error) => return app_error_page(error.into()),
    };
    let question = job_actions(queue, &id, &state_name)
        .into_iter()
        .find(|a| a.url.ends_with(&format!("/{action_name}")))
        .map(|a| a.confirm)
        .unwrap_or_else(|| format!("{action_name} job {}?", short_id(&id)));
    let action_url = format!(
        "/admin/queues/{queue}/jobs/{}/{action_name}",
        urlencode(&id)
    );
    let form = match authorize_action(&session, &headers, form, &question, &action_url) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    let engine = &state.services.queue;
    let result = match action {
        JobAction::Retry => engine.retry_dead(queue, &id).await,
        JobAction::Promote => engine.promote(queue, &id).await,
        JobAction::Delete => engine.delete(queue, &id).await,
        JobAction::Cancel => {
            let reason = format!("cancelled on the dashboard by {}", session.actor.user_id);
            match engine.cancel(queue, &id, &reason).await {
                // A job that never ran: the row behind it (a report, an upload) says so too.
                // A running one is stopped by its handler, which updates its row itself.
                Ok(CancelOutcome::Cancelled) => {
                    if let Err(error) = state.services.job_cancelled_before_run(queue, &id).await {
                        return app_error_page(error);
                    }
                    Ok(true)
                }
                Ok(outcome) => Ok(outcome == CancelOutcome::Signalled),
                Err(error) => Err(error),
            }
        }
    };
    match result {
        Ok(changed) => {
            tracing::info!(admin = %session.actor.user_id, queue, job_id = %id, action = action_name, changed, "dashboard job action");
            let mut return_to = safe_return_path(form.return_to.as_deref());
            // The page of a deleted job is gone: go back to its list instead.
            if changed && action == JobAction::Delete && return_to.contains("/jobs/") {
                return_to = format!("/admin/queues/{queue}");
            }
            after_action(
                &return_to,
                if changed { &action_name } else { "unchanged" },
                None,
            )
        }
        Err(error) => app_error_page(error.into()),
    }
}

/// Actions on one job, by the state it is in.
pub fn job_actions(queue: &str, id: &str, state: &str) -> Vec<Action> {
    let url = |action: &str| format!("/admin/queues/{queue}/jobs/{}/{action}", urlencode(id));
    let short = short_id(id);
    let mut actions = Vec::new();
    match state {
        "dead" | "cancelled" => actions.push(Action {
            url: url("retry"),
            label: "Retry",
            confirm: format!("Retry {state} job {short} now? Its attempts start again from zero."),
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
    if matches!(state, "ready" | "scheduled" | "active") {
        actions.push(Action {
            url: url("cancel"),
            label: "Cancel",
            confirm: if state == "active" {
                format!(
                    "Cancel running job {short}? Its handler is asked to stop; it ends cancelled, neither retried nor dead."
                )
            } else {
                format!("Cancel job {short}? It will not run; it ends cancelled.")
            },
            danger: true,
        });
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
    /// The partition of its queue it is in (partitioned queues only).
    pub partition: Option<String>,
    /// What the job is (`email.order_confirmation`): which handler runs it.
    pub kind: String,
    /// State as operators name it.
    pub state: &'static str,
    /// Scheduled after a failed attempt: waiting for its retry, not for a first run.
    pub retrying: bool,
    /// 0 (runs first) to 9 (runs last).
    pub priority: u8,
    /// Attempts so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// The trace id of the trace it runs in (when traces are exported), to look it up in the
    /// tracing backend: the middle part of its W3C `traceparent`.
    pub trace_id: Option<String>,
    /// The uniqueness key it was enqueued with (for outbox jobs, the outbox row id).
    pub unique_key: Option<String>,
    /// Lease holder: only while it runs.
    pub worker: Option<String>,
    /// The worker that ran it last, once it no longer runs.
    pub last_worker: Option<String>,
    /// Its group, if it has one.
    pub group: Option<GroupLink>,
    /// Its group is ordered: it runs alone in it, in the order it was added.
    pub ordered: bool,
    /// Label and time of each timestamp the job has.
    pub timestamps: Vec<(&'static str, Moment)>,
    /// Every recorded failed attempt, newest first.
    pub errors: Vec<AttemptError>,
    /// The payload, pretty JSON.
    pub payload: String,
    /// The retry policy as stored (JSON), for the tooltip.
    pub retry: Option<String>,
    /// The retry policy as a schedule (`3 attempts: retries after 5s, 5m 00s`).
    pub retry_schedule: Option<String>,
    /// The last progress its handler reported: percent done and its note.
    pub progress: Option<ProgressView>,
    /// The result its handler kept, pretty JSON.
    pub result: Option<String>,
    /// Why it was cancelled, or that it was asked to stop while it runs.
    pub cancel_note: Option<String>,
    /// Allowed actions.
    pub actions: Vec<Action>,
}

/// A job's group and the group's page.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLink {
    /// The group key.
    pub key: String,
    /// The group's page.
    pub url: String,
}

/// A job's last reported progress.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    /// 0 to 100.
    pub percent: u8,
    /// What the handler said (`4200 rows`).
    pub note: String,
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
        retrying: state == Some(JobState::Scheduled) && job.attempts > 0,
        priority: job.priority,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        request_id: job.request_id.clone(),
        partition: job.partition.clone(),
        trace_id: job
            .traceparent
            .as_deref()
            .and_then(|traceparent| traceparent.split('-').nth(1))
            .map(str::to_owned),
        unique_key: job.unique_key.clone(),
        worker: job
            .worker
            .clone()
            .filter(|_| state == Some(JobState::Active)),
        last_worker: job
            .worker
            .clone()
            .filter(|_| state != Some(JobState::Active)),
        group: job.group.as_ref().map(|key| GroupLink {
            key: key.clone(),
            url: group_url(&job.queue, key),
        }),
        ordered: job.ordered,
        timestamps,
        errors,
        payload: serde_json::to_string_pretty(&job.payload).unwrap_or_default(),
        retry: job.retry.clone(),
        retry_schedule: job
            .retry
            .as_deref()
            .and_then(|r| serde_json::from_str::<RetryPolicy>(r).ok())
            .map(|policy| retry_schedule(&policy)),
        progress: job.progress.as_ref().map(|p| ProgressView {
            percent: (p.get("fraction").and_then(|f| f.as_f64()).unwrap_or(0.0) * 100.0)
                .clamp(0.0, 100.0)
                .round() as u8,
            note: p
                .get("note")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned(),
        }),
        result: job
            .result
            .as_ref()
            .and_then(|r| serde_json::to_string_pretty(r).ok()),
        cancel_note: match (&job.cancel_reason, job.cancel_requested_at_ms) {
            (Some(reason), _) if state == Some(JobState::Cancelled) => Some(reason.clone()),
            (reason, Some(_)) => Some(format!(
                "asked to stop ({}); waiting for its handler",
                reason.as_deref().unwrap_or("cancel requested")
            )),
            _ => None,
        },
        actions: job_actions(&job.queue, &job.id, &job.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_state() {
        let labels = |state| {
            job_actions("emails", "id", state)
                .into_iter()
                .map(|a| a.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels("dead"), ["Retry", "Delete"]);
        assert_eq!(labels("cancelled"), ["Retry", "Delete"]);
        assert_eq!(labels("scheduled"), ["Run now", "Cancel", "Delete"]);
        assert_eq!(labels("ready"), ["Cancel", "Delete"]);
        assert_eq!(labels("active"), ["Cancel"]);
    }

    #[test]
    fn the_trace_id_is_read_from_the_traceparent() {
        let mut job = JobDetail {
            id: "j1".into(),
            queue: "emails".into(),
            partition: None,
            state: "ready".into(),
            kind: "email.welcome".into(),
            payload: serde_json::Value::Null,
            priority: 5,
            attempts: 0,
            max_attempts: 3,
            request_id: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            worker: None,
            created_at_ms: None,
            enqueued_at_ms: None,
            run_at_ms: None,
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
            group: None,
            ordered: false,
        };
        assert_eq!(
            job_view(&job, 0).trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        job.traceparent = None;
        assert_eq!(job_view(&job, 0).trace_id, None);
    }
}
