//! The JSON read API for scripts, under `/admin/api/`: the overview, a queue's jobs in one state,
//! one job, a queue's job kinds (attempts, failure rate, run-time percentiles over the last
//! hour), a queue's groups, one group with its waiting jobs, the schedules. The queue engine's read models as they are (a schedule with the state
//! of its last job beside it); admin cookie or bearer token (no CSRF, nothing here changes
//! anything); errors in the one error shape.

use axum::{Json, extract::State};
use orderly::{
    error::AppError,
    jobs::{QUEUE_NAMES, queue_named},
    queue::{
        inspect::{self, GroupStatus, GroupsOverview, JobDetail, JobPage, KindRuntime, Overview},
        schedule::ScheduleView,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    dashboard::{
        chart::CHART_MINUTES, format::parse_state_key, groups::GROUPS_SHOWN, list::PAGE_SIZE,
        queue::KIND_MINUTES, schedules::read_schedules, session::ApiAdmin,
    },
    extract::Path,
    state::AppState,
};

/// `GET /admin/api/overview`: every queue's counts and last hour, workers, outbox backlog.
pub async fn api_overview(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
) -> Result<Json<Overview>, AppError> {
    let services = &state.services;
    Ok(Json(
        inspect::overview(
            &services.queue,
            &services.outbox,
            &QUEUE_NAMES,
            CHART_MINUTES,
        )
        .await?,
    ))
}

/// Query of the JSON job list.
#[derive(Debug, Deserialize)]
pub struct JobListQuery {
    /// `waiting`, `scheduled`, `running`, `completed` or `dead` (engine names work too).
    state: String,
    /// Rows to skip.
    #[serde(default)]
    offset: u64,
    /// Rows to return, 1 to 200 (default 25).
    limit: Option<u64>,
}

fn api_queue(queue: &str) -> Result<&'static str, AppError> {
    queue_named(queue)
        .map(|q| q.as_str())
        .ok_or_else(|| AppError::not_found("no such queue"))
}

/// `GET /admin/api/queues/{queue}/jobs?state=dead&offset=0&limit=25`.
pub async fn api_jobs(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path(queue): Path<String>,
    crate::extract::Query(query): crate::extract::Query<JobListQuery>,
) -> Result<Json<JobPage>, AppError> {
    let queue = api_queue(&queue)?;
    let job_state = parse_state_key(&query.state).ok_or_else(|| {
        AppError::bad_request("state must be waiting, scheduled, running, completed or dead")
    })?;
    let limit = query.limit.unwrap_or(PAGE_SIZE).clamp(1, 200);
    Ok(Json(
        state
            .services
            .queue
            .list(queue, job_state, query.offset, limit)
            .await?,
    ))
}

/// `GET /admin/api/queues/{queue}/jobs/{id}`.
pub async fn api_job(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<JobDetail>, AppError> {
    let queue = api_queue(&queue)?;
    state
        .services
        .queue
        .job(queue, &id)
        .await?
        .map(Json)
        .ok_or_else(|| AppError::not_found("no such job"))
}

/// `GET /admin/api/queues/{queue}/kinds`: per job kind, the attempts that ended in the last hour,
/// how many failed, and run-time percentiles (as the workers recorded them), most attempts first.
pub async fn api_kinds(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path(queue): Path<String>,
) -> Result<Json<Vec<KindRuntime>>, AppError> {
    let queue = api_queue(&queue)?;
    Ok(Json(
        state
            .services
            .queue
            .kind_runtimes(queue, KIND_MINUTES)
            .await?,
    ))
}

/// Query of the JSON groups overview.
#[derive(Debug, Deserialize)]
pub struct GroupsQuery {
    /// Groups listed by backlog, 1 to 1000 (default 10).
    top: Option<usize>,
}

/// `GET /admin/api/queues/{queue}/groups?top=10`: the groups with the largest backlogs, the rest
/// summed, and every open breaker. (Jobs waiting in groups are not in the `waiting` job list.)
pub async fn api_groups(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path(queue): Path<String>,
    crate::extract::Query(query): crate::extract::Query<GroupsQuery>,
) -> Result<Json<GroupsOverview>, AppError> {
    let queue = api_queue(&queue)?;
    let top = query.top.unwrap_or(GROUPS_SHOWN).clamp(1, 1000);
    Ok(Json(state.services.queue.groups(queue, top).await?))
}

/// Query of the JSON group: a page of its waiting jobs.
#[derive(Debug, Deserialize)]
pub struct GroupJobsQuery {
    /// Rows to skip.
    #[serde(default)]
    offset: u64,
    /// Rows to return, 1 to 200 (default 25).
    limit: Option<u64>,
}

/// One group: its status and a page of its waiting jobs, next to run first.
#[derive(Debug, Serialize)]
pub struct GroupDetail {
    /// Backlog, running jobs, state, breaker.
    pub group: GroupStatus,
    /// Its waiting jobs.
    pub jobs: JobPage,
}

/// `GET /admin/api/queues/{queue}/groups/{key}?offset=0&limit=25`.
pub async fn api_group(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path((queue, key)): Path<(String, String)>,
    crate::extract::Query(query): crate::extract::Query<GroupJobsQuery>,
) -> Result<Json<GroupDetail>, AppError> {
    let queue = api_queue(&queue)?;
    if key.is_empty() || key.len() > orderly::queue::JobGroup::MAX_KEY_BYTES {
        return Err(AppError::not_found("no such group"));
    }
    let limit = query.limit.unwrap_or(PAGE_SIZE).clamp(1, 200);
    let engine = &state.services.queue;
    let (group, jobs) = tokio::try_join!(
        engine.group(queue, &key),
        engine.group_jobs(queue, &key, query.offset, limit)
    )?;
    Ok(Json(GroupDetail { group, jobs }))
}

/// A schedule and what became of its last job.
#[derive(Debug, Serialize)]
pub struct ScheduleStatus {
    /// The definition, paused state, last and next tick.
    #[serde(flatten)]
    pub schedule: ScheduleView,
    /// The engine's state of `last_job_id` (`ready`, `scheduled`, `active`, `completed`,
    /// `dead`); `null` when there is no last job or its queue no longer keeps it.
    pub last_job_state: Option<String>,
}

/// `GET /admin/api/schedules`: every schedule, by name.
pub async fn api_schedules(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
) -> Result<Json<Vec<ScheduleStatus>>, AppError> {
    let read = read_schedules(&state.services).await?;
    Ok(Json(
        read.into_iter()
            .map(|(schedule, job)| ScheduleStatus {
                schedule,
                last_job_state: job.map(|j| j.state),
            })
            .collect(),
    ))
}
