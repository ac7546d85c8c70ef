//! HTTP side of reports: request one, list them, follow it, download it; and the admins'
//! report schedules (`/reports/schedules`).

pub mod dto;
pub mod routes;
pub mod schedule_dto;
pub mod schedule_routes;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The reports routes and the report schedule routes.
pub fn router() -> OpenApiRouter<AppState> {
    routes::router().merge(schedule_routes::router())
}
