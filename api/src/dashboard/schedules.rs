//! The schedules page, `/admin/schedules`: every recurring job, whether defined in code (the
//! built-in maintenance) or created at run time and stored (reports), with its recurrence, the
//! queue and kind of its job, its next and last run, the outcome of its last job, whether it is
//! paused, and the operator actions on it (run now, pause, resume).
//!
//! The schedules are the queue engine's (`orderly::queue::schedule`); the outcome of a
//! schedule's last job is read from its queue, so it is only as old as the queue's retention.

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures::future::join_all;
use orderly::{
    Services,
    error::AppError,
    queue::{
        JobState,
        inspect::JobDetail,
        schedule::{Recurrence, ScheduleError, ScheduleView},
    },
    reports::{ReportSchedule, ReportScheduleChanges},
};
use serde::Serialize;

use crate::{
    dashboard::{
        actions::{Action, ActionForm, Gate, after_action, authorize_action},
        format::{Moment, moment, state_key},
        frame::{Frame, PageQuery, known_queue, no_such_action},
        render::{app_error_page, error_page, render},
        session::{PageAdmin, safe_return_path, urlencode},
    },
    extract::Path,
    state::AppState,
};

/// Where the page lives; actions come back here.
const PAGE: &str = "/admin/schedules";

/// `GET /admin/schedules`: every schedule with its next and last run and its actions.
pub async fn schedules_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Query(query): Query<PageQuery>,
) -> Response {
    let read = match read_schedules(&state.services).await {
        Ok(read) => read,
        Err(error) => return app_error_page(error),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<ScheduleRow> = read
        .iter()
        .map(|(view, last_job)| schedule_row(view, last_job.as_ref(), now))
        .collect();
    let mut frame = Frame::new(&session, "Schedules", PAGE.to_owned(), None);
    frame.section = Some("schedules");
    frame.notice = query.notice();
    let read_at = moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "schedules_live.html"
        } else {
            "schedules.html"
        },
        minijinja::context! { frame, rows, read_at },
    )
}

/// Every schedule, by name, with its last job as its queue holds it now (`None`: there is none,
/// or the queue no longer keeps it).
pub async fn read_schedules(
    services: &Services,
) -> Result<Vec<(ScheduleView, Option<JobDetail>)>, AppError> {
    let views = services
        .schedules
        .list()
        .await
        .map_err(schedule_app_error)?;
    let jobs = join_all(views.iter().map(|view| async {
        match &view.last_job_id {
            Some(id) => services.queue.job(&view.def.job.queue, id).await,
            None => Ok(None),
        }
    }))
    .await;
    let jobs = jobs.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(views.into_iter().zip(jobs).collect())
}

/// A schedule error in the one error shape: unknown name 404, bad definition 400.
pub fn schedule_app_error(error: ScheduleError) -> AppError {
    match error {
        ScheduleError::NotFound(_) => AppError::not_found("no such schedule"),
        ScheduleError::Invalid(message) => AppError::bad_request(message),
        ScheduleError::Redis(error) => error.into(),
    }
}

fn no_such_schedule() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such schedule",
        "No schedule has that name: it may have been removed.",
        false,
    )
}

/// The operator actions on one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScheduleAction {
    RunNow,
    Pause,
    Resume,
}

impl ScheduleAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "run-now" => Self::RunNow,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            _ => return None,
        })
    }

    /// The `done` key of the notice after it.
    fn done(self) -> &'static str {
        match self {
            Self::RunNow => "schedule-run",
            Self::Pause => "schedule-pause",
            Self::Resume => "schedule-resume",
        }
    }
}

/// `POST /admin/schedules/{name}/{action}`: run-now, pause, resume.
pub async fn schedule_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((name, action_name)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(action) = ScheduleAction::parse(&action_name) else {
        return no_such_action();
    };
    let schedules = &state.services.schedules;
    match schedules.get(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => return no_such_schedule(),
        Err(error) => return app_error_page(schedule_app_error(error)),
    }
    let question = schedule_actions(&name, action == ScheduleAction::Resume)
        .into_iter()
        .find(|a| a.url.ends_with(&format!("/{action_name}")))
        .map(|a| a.confirm)
        .unwrap_or_else(|| format!("{action_name} schedule {name}?"));
    let action_url = format!("{PAGE}/{}/{action_name}", urlencode(&name));
    let form = match authorize_action(&session, &headers, form, &question, &action_url) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    let paused = match action {
        ScheduleAction::RunNow => None,
        ScheduleAction::Pause => Some(true),
        ScheduleAction::Resume => Some(false),
    };
    let result = match (paused, ReportSchedule::id_of_engine_name(&name)) {
        (None, _) => schedules
            .run_now(&name)
            .await
            .map(Some)
            .map_err(schedule_app_error),
        // A report schedule's row is the truth (the engine mirrors it, and reconciliation would
        // undo a pause made in the engine alone): pausing and resuming go through the row.
        (Some(paused), Some(id)) => state
            .services
            .report_schedules
            .update(
                &session.actor,
                id,
                ReportScheduleChanges {
                    paused: Some(paused),
                    ..ReportScheduleChanges::default()
                },
            )
            .await
            .map(|_| None),
        (Some(paused), None) => schedules
            .set_paused(&name, paused)
            .await
            .map(|()| None)
            .map_err(schedule_app_error),
    };
    match result {
        Ok(job_id) => {
            tracing::info!(admin = %session.actor.user_id, schedule = %name, action = action_name, job_id = job_id.as_deref(), "dashboard schedule action");
            let return_to = safe_return_path(form.return_to.as_deref().or(Some(PAGE)));
            after_action(&return_to, action.done(), None)
        }
        // Removed between the check above and the action.
        Err(AppError::NotFound(_)) => no_such_schedule(),
        Err(error) => app_error_page(error),
    }
}

/// Actions on one schedule: run now, and pause or resume (`paused`: the schedule is paused).
pub fn schedule_actions(name: &str, paused: bool) -> Vec<Action> {
    let url = |action: &str| format!("{PAGE}/{}/{action}", urlencode(name));
    vec![
        Action {
            url: url("run-now"),
            label: "Run now",
            confirm: format!(
                "Run schedule {name} now? Its job is enqueued at once, outside its ticks; the next tick still runs as planned."
            ),
            danger: false,
        },
        if paused {
            Action {
                url: url("resume"),
                label: "Resume",
                confirm: format!(
                    "Resume schedule {name}? It runs again from its next tick; the ticks missed while paused are not made up."
                ),
                danger: false,
            }
        } else {
            Action {
                url: url("pause"),
                label: "Pause",
                confirm: format!(
                    "Pause schedule {name}? It enqueues nothing until it is resumed; jobs already enqueued still run."
                ),
                danger: false,
            }
        },
    ]
}

/// What became of a schedule's last job.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The job's state as operators name it (`waiting`, `running`, `completed`, …), or `gone`
    /// once the queue no longer keeps it; also the badge's style.
    pub state: &'static str,
    /// What the cell says.
    pub label: &'static str,
    /// The job's id (the link's title).
    pub job_id: String,
    /// The job's page, while the job exists and its queue is one the dashboard shows.
    pub url: Option<String>,
}

/// One schedule on the page.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    /// Unique name (`maintenance:purge_idempotency_keys`).
    pub name: String,
    /// The cron expression, for a cron schedule.
    pub cron: Option<String>,
    /// The IANA time zone the expression is read in.
    pub time_zone: Option<String>,
    /// `every 30 s`, for an interval schedule.
    pub every: Option<String>,
    /// The queue its job goes to.
    pub queue: String,
    /// That queue's page, if the dashboard shows the queue.
    pub queue_url: Option<String>,
    /// The kind of its job.
    pub kind: String,
    /// The next tick.
    pub next: Option<Moment>,
    /// Why there is no next tick (`paused` or `never`), shown instead of it.
    pub no_next: &'static str,
    /// When the last job was enqueued (a tick or "run now").
    pub last_run: Option<Moment>,
    /// What became of that job.
    pub outcome: Option<Outcome>,
    /// Enqueues nothing until resumed.
    pub paused: bool,
    /// Run now, pause or resume.
    pub actions: Vec<Action>,
}

/// The row of `view`, whose last job reads `last_job` now, seen at `now_ms`.
pub fn schedule_row(view: &ScheduleView, last_job: Option<&JobDetail>, now_ms: i64) -> ScheduleRow {
    let def = &view.def;
    let (cron, time_zone, every) = match &def.recurrence {
        Recurrence::Cron {
            expression,
            time_zone,
        } => (Some(expression.clone()), Some(time_zone.clone()), None),
        Recurrence::Interval { interval_ms } => (None, None, Some(every_text(*interval_ms))),
    };
    let queue = known_queue(&def.job.queue);
    let outcome = view.last_job_id.as_ref().map(|id| match last_job {
        Some(job) => {
            let state = JobState::parse(&job.state).map_or("unknown", state_key);
            Outcome {
                state,
                label: state,
                job_id: id.clone(),
                url: queue.map(|q| format!("/admin/queues/{q}/jobs/{}", urlencode(id))),
            }
        }
        None => Outcome {
            state: "gone",
            label: "finished (no longer kept)",
            job_id: id.clone(),
            url: None,
        },
    });
    ScheduleRow {
        name: def.name.clone(),
        cron,
        time_zone,
        every,
        queue: def.job.queue.clone(),
        queue_url: queue.map(|q| format!("/admin/queues/{q}")),
        kind: def.job.kind.clone(),
        next: view.next_tick_ms.and_then(|ms| moment(ms, now_ms)),
        no_next: if view.paused { "paused" } else { "never" },
        last_run: view.last_run_at_ms.and_then(|ms| moment(ms, now_ms)),
        outcome,
        paused: view.paused,
        actions: schedule_actions(&def.name, view.paused),
    }
}

/// An interval in the largest unit that states it exactly: `every 30 s`, `every 5 min`,
/// `every 6 h`, `every 1 d`.
fn every_text(interval_ms: u64) -> String {
    if !interval_ms.is_multiple_of(1000) {
        return format!("every {interval_ms} ms");
    }
    let secs = interval_ms / 1000;
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "d")
    } else if secs.is_multiple_of(3600) {
        (secs / 3600, "h")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "min")
    } else {
        (secs, "s")
    };
    format!("every {n} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_in_their_largest_exact_unit() {
        assert_eq!(every_text(1_000), "every 1 s");
        assert_eq!(every_text(90_000), "every 90 s");
        assert_eq!(every_text(300_000), "every 5 min");
        assert_eq!(every_text(21_600_000), "every 6 h");
        assert_eq!(every_text(86_400_000), "every 1 d");
        assert_eq!(every_text(1_500), "every 1500 ms");
    }

    #[test]
    fn actions_follow_the_paused_state() {
        let labels = |paused| {
            schedule_actions("maintenance:purge", paused)
                .into_iter()
                .map(|a| a.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(false), ["Run now", "Pause"]);
        assert_eq!(labels(true), ["Run now", "Resume"]);
        assert_eq!(
            schedule_actions("maintenance:purge", false)[0].url,
            "/admin/schedules/maintenance%3Apurge/run-now"
        );
    }
}
