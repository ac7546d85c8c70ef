//! The JSON read API for scripts, under `/admin/api/`: the overview, a queue's jobs in one state,
//! one job. The queue engine's read models as they are; admin cookie or bearer token (no CSRF,
//! nothing here changes anything); errors in the one error shape.

use axum::{Json, extract::State};
use orderly::{
    error::AppError,
    jobs::{QUEUE_NAMES, queue_named},
    queue::inspect::{self, JobDetail, JobPage, Overview},
};
use serde::Deserialize;

use crate::{
    dashboard::{
        chart::CHART_MINUTES, format::parse_state_key, queue::PAGE_SIZE, session::ApiAdmin,
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
