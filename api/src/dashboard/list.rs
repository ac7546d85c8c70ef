//! A list of jobs as the queue and group pages show it: one row per job (its times, last error,
//! worker and the actions its state allows; a checkbox where the page offers bulk actions) and
//! the pager under the list.

use orderly::queue::{JobState, inspect::JobDetail};
use serde::Serialize;

use crate::dashboard::{
    actions::Action,
    format::{Moment, moment},
    job::job_actions,
    session::urlencode,
};

/// Jobs per page of a job list.
pub const PAGE_SIZE: u64 = 25;

/// One job in a list.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Job id.
    pub id: String,
    /// Its detail page.
    pub url: String,
    /// Job kind.
    pub kind: String,
    /// Priority 0..=9.
    pub priority: u8,
    /// `attempts/max`.
    pub attempts: String,
    /// What the time column means in this state (`enqueued`, `due`, `started`, `finished`).
    pub when_label: &'static str,
    /// That time.
    pub when: Option<Moment>,
    /// The last error, shortened.
    pub error: Option<String>,
    /// The worker holding it (running jobs).
    pub worker: Option<String>,
    /// Actions allowed in its state.
    pub actions: Vec<Action>,
}

/// `text` cut to `max` characters, with `…` when it was cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// A list row of `job`, in `state`, seen at `now_ms`.
pub fn job_row(job: &JobDetail, state: JobState, now_ms: i64) -> JobRow {
    let (when_label, when_ms) = match state {
        JobState::Ready => ("enqueued", job.enqueued_at_ms.or(job.created_at_ms)),
        JobState::Scheduled => ("due", job.run_at_ms),
        JobState::Active => ("started", job.started_at_ms),
        JobState::Completed | JobState::Dead | JobState::Cancelled => {
            ("finished", job.finished_at_ms)
        }
    };
    JobRow {
        url: format!("/admin/queues/{}/jobs/{}", job.queue, urlencode(&job.id)),
        id: job.id.clone(),
        kind: job.kind.clone(),
        priority: job.priority,
        attempts: format!("{}/{}", job.attempts, job.max_attempts),
        when_label,
        when: when_ms.and_then(|ms| moment(ms, now_ms)),
        error: if state == JobState::Cancelled {
            job.cancel_reason.as_deref().map(|r| shorten(r, 160))
        } else {
            job.last_error
                .as_deref()
                .filter(|_| state != JobState::Completed)
                .map(|e| shorten(e, 160))
        },
        worker: (state == JobState::Active)
            .then(|| job.worker.clone())
            .flatten(),
        actions: job_actions(&job.queue, &job.id, state.set_name()),
    }
}

/// Previous/next links of a job list.
#[derive(Debug, Clone, Serialize)]
pub struct Pager {
    /// First row shown (1-based), 0 when empty.
    pub from: u64,
    /// Last row shown.
    pub to: u64,
    /// Rows in total.
    pub total: u64,
    /// Page number (1-based).
    pub page: u64,
    /// Pages in total.
    pub pages: u64,
    /// Link to the previous page.
    pub prev_url: Option<String>,
    /// Link to the next page.
    pub next_url: Option<String>,
    /// Whether the list was cut short: a filtered list looks at its first jobs only, so more
    /// may match than `total` says.
    pub cut: bool,
}

/// The pager of page `page` (1-based) of `total` rows, page `p` being at `link(p)`.
pub fn pager_with(link: impl Fn(u64) -> String, page: u64, shown: usize, total: u64) -> Pager {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let offset = (page - 1) * PAGE_SIZE;
    Pager {
        from: if shown == 0 { 0 } else { offset + 1 },
        to: offset + shown as u64,
        total,
        page,
        pages,
        prev_url: (page > 1).then(|| link(page - 1)),
        next_url: (page < pages).then(|| link(page + 1)),
        cut: false,
    }
}
