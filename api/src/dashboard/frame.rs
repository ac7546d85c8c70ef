//! What every dashboard page shares around its content: the frame `layout.html` draws
//! (navigation, the CSRF token for its forms, where live updates come from, the notice after an
//! action), the query parameters every page takes, and the check that a queue named in the URL
//! is one of ours.

use axum::{http::StatusCode, response::Response};
use orderly::jobs::{QUEUE_NAMES, queue_named};
use serde::{Deserialize, Serialize};

use crate::dashboard::{assets::asset_version, render::error_page, session::AdminSession};

/// What every page's frame needs: navigation, the CSRF token, where live updates come from.
#[derive(Debug, Serialize)]
pub(super) struct Frame {
    title: String,
    asset_version: &'static str,
    csrf: String,
    queues: &'static [&'static str],
    current_queue: Option<String>,
    /// The navigation entry that is not a queue this page belongs to (`schedules`); with no
    /// queue either, the overview is the current entry.
    pub(super) section: Option<&'static str>,
    /// This page's path and query: forms come back here after an action.
    return_to: String,
    /// This page's live part (`?live=1`): the page the script asks the live stream for (and
    /// polls in a browser without `EventSource`).
    live_url: String,
    pub(super) notice: Option<String>,
}

impl Frame {
    pub(super) fn new(
        session: &AdminSession,
        title: impl Into<String>,
        return_to: String,
        current_queue: Option<&str>,
    ) -> Self {
        let live_url = format!(
            "{return_to}{}live=1",
            if return_to.contains('?') { '&' } else { '?' }
        );
        Self {
            title: title.into(),
            asset_version: asset_version(),
            csrf: session.csrf.clone(),
            queues: &QUEUE_NAMES,
            current_queue: current_queue.map(str::to_owned),
            section: None,
            return_to,
            live_url,
            notice: None,
        }
    }
}

/// Query parameters every page takes.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// `1`: render only the live part (what the live stream sends; the page's script polls it
    /// only in a browser without `EventSource`).
    live: Option<u8>,
    /// The action just done, for the notice line.
    done: Option<String>,
    /// How many jobs that action touched.
    n: Option<u64>,
    /// Whether a bulk action stopped at the scan limit (`1`): the notice says to run it again.
    cut: Option<u8>,
    /// Queue page: the list shown (a state, or `retries`).
    pub(super) state: Option<String>,
    /// Queue and group pages: 1-based page number.
    pub(super) page: Option<u64>,
    /// Queue page: list only jobs of this kind.
    pub(super) kind: Option<String>,
    /// Queue page: list only jobs whose id, kind, payload or last error contains this.
    pub(super) q: Option<String>,
    /// Overview and queue page: the throughput chart's range (`1h`, `24h`, `7d`).
    pub(super) range: Option<String>,
}

impl PageQuery {
    /// The query that renders a page's live part (what the live stream sends); the live
    /// stream fills in the page's own parameters (its list, page, filter, range).
    pub(super) fn live_part() -> Self {
        Self {
            live: Some(1),
            ..Self::default()
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.live == Some(1)
    }

    /// The notice for `?done=…`: fixed sentences, never text from the URL.
    pub(super) fn notice(&self) -> Option<String> {
        let n = self.n.unwrap_or(0);
        let plural = |word: &str| {
            if n == 1 {
                word.to_owned()
            } else {
                format!("{word}s")
            }
        };
        let rest = if self.cut == Some(1) {
            " Only the first jobs of the list were looked at: run it again for the rest."
        } else {
            ""
        };
        Some(match self.done.as_deref()? {
            "bulk-retry" => format!("{n} {} queued for another run.{rest}", plural("job")),
            "bulk-promote" => format!("{n} scheduled {} run now.{rest}", plural("job")),
            "bulk-delete" => format!("{n} {} deleted.{rest}", plural("job")),
            "bulk-none" => "Nothing selected: tick the jobs to act on first.".to_owned(),
            "retry" => "Job queued for another run.".to_owned(),
            "promote" => "Job moved to the front of its priority: it runs now.".to_owned(),
            "delete" => "Job deleted.".to_owned(),
            "pause" => "Queue paused: no worker claims its jobs until it is resumed.".to_owned(),
            "resume" => "Queue resumed.".to_owned(),
            "retry-dead" => format!("{n} dead {} queued again.", plural("job")),
            "purge-dead" => format!("{n} dead {} deleted.", plural("job")),
            "purge-completed" => format!("{n} completed {} deleted.", plural("job")),
            "unchanged" => "Nothing changed: the job was no longer in that state.".to_owned(),
            "close-breaker" => {
                "Breaker closed: the group's jobs may run again now. If they keep failing, it \
                 opens again."
                    .to_owned()
            }
            "breaker-unchanged" => {
                "Nothing changed: the group's breaker had already closed.".to_owned()
            }
            "schedule-run" => {
                "Schedule's job enqueued: it runs as soon as a worker takes it.".to_owned()
            }
            "schedule-pause" => {
                "Schedule paused: it enqueues nothing until it is resumed.".to_owned()
            }
            "schedule-resume" => "Schedule resumed: it runs again from its next tick.".to_owned(),
            _ => return None,
        })
    }
}

/// The queue named `queue`, if it is one of ours.
pub(super) fn known_queue(queue: &str) -> Option<&'static str> {
    queue_named(queue).map(|q| q.as_str())
}

/// The 404 page for an action name no page offers.
pub(super) fn no_such_action() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such action",
        "That action does not exist.",
        false,
    )
}

pub(super) fn no_such_queue() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such queue",
        "That queue does not exist.",
        false,
    )
}
