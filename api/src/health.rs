//! Health checks for load balancers and orchestrators.
//!
//! - `GET /health`: readiness. PostgreSQL (`select 1`) and Redis (`PING`) are checked at once,
//!   each with a short timeout; 200 when both answer, 503 naming the one that did not and why.
//! - `GET /health/live`: liveness. No I/O: the process is up and serving.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckStatus {
    /// `up` or `down`.
    #[schema(example = "up")]
    pub status: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "connection refused")]
    pub error: Option<String>,
    /// How long the check took.
    #[schema(example = 1.2)]
    pub latency_ms: f64,
}

/// Status of every dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The pool's answer to `select 1`.
    pub postgres: CheckStatus,
    /// The shared connection's answer to `PING`.
    pub redis: CheckStatus,
}

/// Readiness report.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok` or `degraded`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Per dependency.
    pub checks: Checks,
}

/// Liveness report.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveReport {
    /// Always `ok` when the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
}

async fn check<F, E>(fut: F) -> CheckStatus
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, fut).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(())) => CheckStatus {
            status: "up",
            error: None,
            latency_ms,
        },
        Ok(Err(e)) => CheckStatus {
            status: "down",
            error: Some(e.to_string()),
            latency_ms,
        },
        Err(_) => CheckStatus {
            status: "down",
            error: Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            latency_ms,
        },
    }
}

/// Readiness: can this instance serve requests (PostgreSQL and Redis reachable)?
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = HealthReport), (status = 503, body = HealthReport)))]
pub async fn readiness(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.services.db.clone();
    let mut redis = state.services.redis.clone();
    let (postgres, redis) = tokio::join!(
        check(async move {
            sqlx::query_scalar!("select 1")
                .fetch_one(&db)
                .await
                .map(|_| ())
        }),
        check(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut redis)
                .await
                .map(|_| ())
        }),
    );
    let healthy = postgres.status == "up" && redis.status == "up";
    let report = HealthReport {
        status: if healthy { "ok" } else { "degraded" },
        checks: Checks { postgres, redis },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

/// Liveness: is the process up? No I/O.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = LiveReport)))]
pub async fn liveness() -> Json<LiveReport> {
    Json(LiveReport { status: "ok" })
}
