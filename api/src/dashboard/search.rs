//! The search box in every page's header, `/admin/search?id=…`: finds a job by id in one queue or
//! all of them and sends the browser to its page.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use orderly::jobs::QUEUE_NAMES;
use serde::Deserialize;

use crate::{
    dashboard::{
        frame::{known_queue, no_such_queue},
        render::{app_error_page, error_page},
        session::{PageAdmin, urlencode},
    },
    state::AppState,
};

/// Query of the search box.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// The job id.
    id: String,
    /// Look only in this queue.
    queue: Option<String>,
}

/// `GET /admin/search?id=…[&queue=…]`: the job page of that id, wherever it is.
pub async fn search(
    State(state): State<AppState>,
    PageAdmin(_): PageAdmin,
    Query(query): Query<SearchQuery>,
) -> Response {
    let id = query.id.trim();
    if id.is_empty() || id.len() > 200 {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Search",
            "Type a job id to look for.",
            false,
        );
    }
    let queues: Vec<&str> = match query.queue.as_deref().filter(|q| !q.is_empty()) {
        Some(queue) => match known_queue(queue) {
            Some(queue) => vec![queue],
            None => return no_such_queue(),
        },
        None => QUEUE_NAMES.to_vec(),
    };
    for queue in queues {
        match state.services.queue.exists(queue, id).await {
            Ok(true) => {
                return Redirect::to(&format!("/admin/queues/{queue}/jobs/{}", urlencode(id)))
                    .into_response();
            }
            Ok(false) => {}
            Err(error) => return app_error_page(error.into()),
        }
    }
    error_page(
        StatusCode::NOT_FOUND,
        "No such job",
        "No queue holds a job with that id (completed jobs are kept only for the retention window).",
        false,
    )
}
