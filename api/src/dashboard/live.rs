//! Live updates of the dashboard's pages over one Server-Sent Events stream per open page:
//! `GET /admin/live?page=/admin/queues/emails?state=dead` answers `text/event-stream` and sends
//! that page's live part (the same HTML as the page's `?live=1` variant) as a `fragment` event
//! when it opens and whenever it changes; nothing while it does not. The page's script swaps it
//! in (see `static/dashboard.js`).
//!
//! What it costs does not grow with the number of open pages: one [`LiveHub`] per api process
//! runs a single task, started with the first stream and stopped when the last one ends, that
//! reads the queues' change signal (every queue's counts and current minute of throughput, and
//! the live workers: one pipelined read per queue) once per [`super::hub::SIGNAL_EVERY`] and wakes the
//! streams only when it changed. A woken stream renders its page's live part and sends it only
//! if it differs from what it sent last (the "Read at" line, which always differs, does not
//! count). A job page whose job keeps an event stream (reports, uploads) also looks at that
//! stream every [`JOB_EVENTS_EVERY`] while the job is still in the works, so progress shows as
//! soon as the handler reports it. A page that can no longer be rendered (its job was deleted,
//! Redis is unreachable) sends one `failed` event with the HTTP status its page would answer,
//! and the stream goes on.
//!
//! Only our own pages are rendered: `page` must be the path (and query: a queue page's list,
//! page, filter and chart range, the overview's range) of the overview, a queue page, a group
//! page, a job page or the schedules page, and is rendered by calling that page's handler, never
//! by fetching a URL; anything else is the dashboard's 404 page. The session is checked as for
//! the pages; an anonymous request is sent to the login form, which then returns to `page`.
//!
//! A stream ends when the api shuts down ([`LiveHub::shut_down`], called by `app::serve_app` as
//! soon as the shutdown signal arrives, so graceful shutdown never waits for open dashboards),
//! when the session's token expires, and after [`MAX_STREAM`] at most: the browser reconnects by
//! itself, through the session check again, so a revoked session stops seeing data. Each
//! fragment's event id is a hash of its content, so a reconnect whose `Last-Event-ID` says the
//! page already shows the current content is not sent it again.

use std::{
    borrow::Cow,
    convert::Infallible,
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use orderly::queue::QueueEngine;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use tokio::{sync::watch, time::Instant};

use crate::{
    dashboard::{
        frame::{PageQuery, known_queue},
        groups, job, overview, queue,
        render::{error_page, with_headers},
        schedules,
        session::{AdminSession, PageAdmin, urlencode, urlencode_segment},
    },
    extract::Path,
    state::AppState,
};

/// How often a job page looks for a new event of its job, while the job is in the works and
/// keeps an event stream.
pub const JOB_EVENTS_EVERY: Duration = Duration::from_millis(250);

/// How often a quiet stream sends a comment, so proxies do not close it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest one stream lives before the browser reconnects (and its session is checked again).
pub const MAX_STREAM: Duration = Duration::from_secs(5 * 60);

/// How long the browser waits before reconnecting a stream that ended.
const RECONNECT: Duration = Duration::from_secs(2);

/// The largest live part read back from a page handler.
const FRAGMENT_LIMIT: usize = 8 * 1024 * 1024;

/// Where every live template starts its "Read at" line: it changes on every render, so a
/// fragment's content, for deciding whether to send it, ends there.
const READ_AT_LINE: &str = "<p class=\"muted small updated\">";

/// A dashboard page that has a live part.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LivePage {
    /// `/admin/queues?range=…`.
    Overview { range: Option<String> },
    /// `/admin/queues/{queue}?state=…&page=…&kind=…&q=…&range=…`.
    Queue {
        queue: String,
        state: Option<String>,
        page: Option<u64>,
        kind: Option<String>,
        q: Option<String>,
        range: Option<String>,
    },
    /// `/admin/queues/{queue}/jobs/{id}`.
    Job { queue: String, id: String },
    /// `/admin/queues/{queue}/groups/{key}?page=…`.
    Group {
        queue: String,
        key: String,
        page: Option<u64>,
    },
    /// `/admin/schedules`.
    Schedules,
}

impl LivePage {
    /// The page at `url` (a path and query, as the page's `data-live-url` gives it; `live=1`
    /// and the notice parameters are ignored), if it is one with a live part.
    fn parse(url: &str) -> Option<Self> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let decode = |text: &str| {
            percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(Cow::into_owned)
        };
        let segments: Vec<&str> = path.strip_prefix("/admin/")?.split('/').collect();
        Some(match segments.as_slice() {
            ["queues"] => {
                let mut range = None;
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if key == "range" {
                        range = Some(decode(value)?);
                    }
                }
                Self::Overview { range }
            }
            ["schedules"] => Self::Schedules,
            ["queues", queue] => {
                let (mut state, mut page, mut kind, mut q, mut range) =
                    (None, None, None, None, None);
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    match key {
                        "state" => state = Some(decode(value)?),
                        "page" => page = Some(value.parse().ok()?),
                        "kind" => kind = Some(decode(value)?),
                        "q" => q = Some(decode(value)?),
                        "range" => range = Some(decode(value)?),
                        _ => {}
                    }
                }
                Self::Queue {
                    queue: decode(queue)?,
                    state,
                    page,
                    kind,
                    q,
                    range,
                }
            }
            ["queues", queue, "jobs", id] => Self::Job {
                queue: decode(queue)?,
                id: decode(id)?,
            },
            ["queues", queue, "groups", key] => {
                let mut page = None;
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if name == "page" {
                        page = Some(value.parse().ok()?);
                    }
                }
                Self::Group {
                    queue: decode(queue)?,
                    key: percent_decode_str(key).decode_utf8().ok()?.into_owned(),
                    page,
                }
            }
            _ => return None,
        })
    }

    /// The page itself (where signing in returns to).
    fn url(&self) -> String {
        match self {
            Self::Overview { range: None } => "/admin/queues".to_owned(),
            Self::Overview { range: Some(range) } => {
                format!("/admin/queues?range={}", urlencode(range))
            }
            Self::Schedules => "/admin/schedules".to_owned(),
            Self::Queue {
                queue,
                state,
                page,
                kind,
                q,
                range,
            } => {
                let mut query = Vec::new();
                for (name, value) in [("state", state), ("kind", kind), ("q", q), ("range", range)]
                {
                    if let Some(value) = value {
                        query.push(format!("{name}={}", urlencode(value)));
                    }
                }
                if let Some(page) = page {
                    query.push(format!("page={page}"));
                }
                let path = format!("/admin/queues/{}", urlencode(queue));
                if query.is_empty() {
                    path
                } else {
                    format!("{path}?{}", query.join("&"))
                }
            }
            Self::Job { queue, id } => {
                format!("/admin/queues/{}/jobs/{}", urlencode(queue), urlencode(id))
            }
            Self::Group { queue, key, page } => {
                let path = format!(
                    "/admin/queues/{}/groups/{}",
                    urlencode(queue),
                    urlencode_segment(key)
                );
                match page {
                    Some(page) => format!("{path}?page={page}"),
                    None => path,
                }
            }
        }
    }

    /// The page's live part as its handler renders it for `session`, or the handler's answer
    /// when it is not a page (no such queue or job, an unknown state, the queues unreachable).
    async fn render(&self, state: &AppState, session: &AdminSession) -> Result<String, Response> {
        let (app, admin) = (State(state.clone()), PageAdmin(session.clone()));
        let response = match self {
            Self::Overview { range } => {
                let mut query = PageQuery::live_part();
                query.range = range.clone();
                overview::overview(app, admin, Query(query)).await
            }
            Self::Queue {
                queue,
                state: list,
                page,
                kind,
                q,
                range,
            } => {
                let mut query = PageQuery::live_part();
                query.state = list.clone();
                query.page = *page;
                query.kind = kind.clone();
                query.q = q.clone();
                query.range = range.clone();
                queue::queue_page(app, admin, Path(queue.clone()), Query(query)).await
            }
            Self::Job { queue, id } => {
                job::job_page(
                    app,
                    admin,
                    Path((queue.clone(), id.clone())),
                    Query(PageQuery::live_part()),
                )
                .await
            }
            Self::Group { queue, key, page } => {
                let mut query = PageQuery::live_part();
                query.page = *page;
                groups::group_page(app, admin, Path((queue.clone(), key.clone())), Query(query))
                    .await
            }
            Self::Schedules => {
                schedules::schedules_page(app, admin, Query(PageQuery::live_part())).await
            }
        };
        if response.status() != StatusCode::OK {
            return Err(response);
        }
        let body = axum::body::to_bytes(response.into_body(), FRAGMENT_LIMIT)
            .await
            .map_err(|error| {
                tracing::error!(%error, "dashboard live part could not be read back");
                unavailable()
            })?;
        String::from_utf8(body.to_vec()).map_err(|_| unavailable())
    }
}

fn unavailable() -> Response {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The dashboard could not read the queues. Try again in a moment.",
        false,
    )
}

fn no_such_page() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such page",
        "Live updates exist only for the dashboard's own pages.",
        false,
    )
}

/// The query of `GET /admin/live`.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// The page whose live part to stream: its path and query.
    page: Option<String>,
}

/// `GET /admin/live?page=<path and query>`: the page's live part, as Server-Sent Events.
pub async fn live_stream(
    State(state): State<AppState>,
    session: Result<PageAdmin, Response>,
    query: Result<Query<LiveQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let page = query
        .ok()
        .and_then(|Query(query)| query.page)
        .and_then(|page| LivePage::parse(&page));
    let session = match session {
        Ok(PageAdmin(session)) => session,
        Err(refusal) => return back_to_page(refusal, page.as_ref()),
    };
    let Some(page) = page else {
        return no_such_page();
    };
    let Some(wake) = state.live_hub.subscribe() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Restarting",
            "The dashboard is restarting; live updates resume by themselves.",
            false,
        );
    };
    // Rendered after subscribing, so a change in between wakes the stream rather than being lost.
    let first = match page.render(&state, &session).await {
        Ok(html) => html,
        Err(response) => return response,
    };
    let job = match &page {
        LivePage::Job { queue, id } => JobFeed::open(&state.services.queue, queue, id).await,
        _ => None,
    };
    let sent = content_key(&first);
    let seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|id| id == event_id(sent));
    let first = (!seen).then(|| Ok(fragment_event(&first, sent).retry(RECONNECT)));
    // The stream ends with the session's token (the reconnect then meets the login form).
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let session_left = Duration::from_secs(session.claims.exp.saturating_sub(now));
    let follower = Follower {
        state,
        session,
        page,
        wake,
        job,
        sent,
        deadline: Instant::now() + MAX_STREAM.min(session_left),
    };
    let events = futures::stream::iter(first).chain(follower.into_stream());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_headers(response)
}

/// An anonymous visitor is sent to the login form as for a page, returning to the page whose
/// live part was asked for (not to the stream); other refusals stay as they are.
fn back_to_page(mut refusal: Response, page: Option<&LivePage>) -> Response {
    if refusal.status().is_redirection() {
        let next = page.map_or_else(|| "/admin/queues".to_owned(), LivePage::url);
        if let Ok(location) =
            HeaderValue::from_str(&format!("/admin/login?next={}", urlencode(&next)))
        {
            refusal.headers_mut().insert(header::LOCATION, location);
        }
    }
    refusal
}

/// The job of a job page, when it keeps an event stream.
struct JobFeed {
    queue: &'static str,
    id: String,
    /// The last event seen.
    after: Option<String>,
    /// The job's life has ended (its last event was final): no quick looks until it changes.
    ended: bool,
}

impl JobFeed {
    async fn open(engine: &QueueEngine, queue: &str, id: &str) -> Option<Self> {
        let queue = known_queue(queue)?;
        let job = engine.job(queue, id).await.ok()??;
        if !job.events {
            return None;
        }
        let mut feed = Self {
            queue,
            id: id.to_owned(),
            after: None,
            ended: matches!(job.state.as_str(), "completed" | "dead" | "cancelled"),
        };
        // The stream is capped (about 100 entries): one read reaches its end.
        feed.look(engine, 1000).await;
        Some(feed)
    }

    /// Whether the job had a new event since the last look.
    async fn look(&mut self, engine: &QueueEngine, count: usize) -> bool {
        match engine
            .job_events(self.queue, &self.id, self.after.as_deref(), count)
            .await
        {
            Ok(events) => match events.last() {
                Some(last) => {
                    self.ended = last.is_final();
                    self.after = Some(last.id.clone());
                    true
                }
                None => false,
            },
            Err(error) => {
                tracing::debug!(%error, queue = self.queue, job_id = %self.id, "job events could not be read");
                false
            }
        }
    }
}

/// One open stream: what it shows, for whom, and what it sent last.
struct Follower {
    state: AppState,
    session: AdminSession,
    page: LivePage,
    wake: watch::Receiver<u64>,
    job: Option<JobFeed>,
    /// Content key of the last event sent.
    sent: u64,
    deadline: Instant,
}

impl Follower {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut follower| async move {
            let event = follower.next().await?;
            Some((Ok(event), follower))
        })
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let quick = self.job.as_ref().is_some_and(|job| !job.ended);
            let woken = tokio::select! {
                changed = self.wake.changed() => {
                    // The hub dropped its channel: the api is shutting down.
                    changed.ok()?;
                    true
                }
                () = tokio::time::sleep(JOB_EVENTS_EVERY), if quick => false,
                () = tokio::time::sleep_until(self.deadline) => return None,
            };
            if let Some(job) = &mut self.job {
                let moved = job.look(&self.state.services.queue, 100).await;
                if !woken && !moved {
                    continue;
                }
            }
            let (key, event) = match self.page.render(&self.state, &self.session).await {
                Ok(html) => {
                    let key = content_key(&html);
                    (key, fragment_event(&html, key))
                }
                // The page is gone (a deleted job) or the queues are unreachable: say so once.
                Err(response) => {
                    let status = response.status().as_u16();
                    let key = hash(&("failed", status));
                    (
                        key,
                        Event::default().event("failed").data(status.to_string()),
                    )
                }
            };
            if key != self.sent {
                self.sent = key;
                return Some(event);
            }
        }
    }
}

fn fragment_event(html: &str, key: u64) -> Event {
    let html = if html.contains('\r') {
        Cow::Owned(html.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(html)
    };
    Event::default()
        .event("fragment")
        .id(event_id(key))
        .data(html)
}

fn event_id(key: u64) -> String {
    format!("{key:016x}")
}

/// What decides whether a fragment changed: its HTML up to the "Read at" line.
fn content_key(html: &str) -> u64 {
    hash(&html.rfind(READ_AT_LINE).map_or(html, |at| &html[..at]))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_with_a_live_part_are_accepted() {
        assert_eq!(
            LivePage::parse("/admin/queues?live=1"),
            Some(LivePage::Overview { range: None })
        );
        assert_eq!(
            LivePage::parse("/admin/queues?range=7d&live=1"),
            Some(LivePage::Overview {
                range: Some("7d".into())
            })
        );
        assert_eq!(
            LivePage::parse("/admin/schedules"),
            Some(LivePage::Schedules)
        );
        assert_eq!(
            LivePage::parse("/admin/queues/emails?state=dead&page=2&live=1&done=retry"),
            Some(LivePage::Queue {
                queue: "emails".into(),
                state: Some("dead".into()),
                page: Some(2),
                kind: None,
                q: None,
                range: None,
            })
        );
        assert_eq!(
            LivePage::parse(
                "/admin/queues/emails?state=retries&kind=email.welcome&q=smtp+451&range=24h"
            ),
            Some(LivePage::Queue {
                queue: "emails".into(),
                state: Some("retries".into()),
                page: None,
                kind: Some("email.welcome".into()),
                q: Some("smtp 451".into()),
                range: Some("24h".into()),
            })
        );
        assert_eq!(
            LivePage::parse("/admin/queues/reports/jobs/a%20b%3F?live=1"),
            Some(LivePage::Job {
                queue: "reports".into(),
                id: "a b?".into(),
            })
        );
        assert_eq!(
            LivePage::parse(
                "/admin/queues/webhooks/groups/ep%2F1+x?page=2&live=1&done=close-breaker"
            ),
            Some(LivePage::Group {
                queue: "webhooks".into(),
                key: "ep/1+x".into(),
                page: Some(2),
            })
        );
        for refused in [
            "",
            "/",
            "/admin",
            "/admin/",
            "/admin/live?page=/admin/queues",
            "/admin/api/overview",
            "/admin/queues/emails/pause",
            "/admin/queues/emails/jobs/x/retry",
            "/admin/queues/webhooks/groups/x/close-breaker",
            "/admin/queues/webhooks/groups/x?page=x",
            "/admin/queues/emails?page=x",
            "https://example.com/admin/queues",
            "//example.com/admin/queues",
            "/api/v1/reports",
        ] {
            assert_eq!(LivePage::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_login_form_returns_to_the_page() {
        for url in [
            "/admin/queues",
            "/admin/queues?range=24h",
            "/admin/schedules",
            "/admin/queues/emails?state=dead&page=2",
            "/admin/queues/emails?state=dead&kind=email.welcome&q=smtp%20451&page=2",
            "/admin/queues/emails/jobs/a%20b%3F",
            "/admin/queues/webhooks/groups/ep%2F1%20x",
            "/admin/queues/webhooks/groups/ep-1?page=3",
        ] {
            assert_eq!(LivePage::parse(url).unwrap().url(), url);
        }
    }

    #[test]
    fn the_read_at_line_does_not_count_as_a_change() {
        let at =
            |time: &str| format!("<td>3</td>\n{READ_AT_LINE}Read at <time>{time}</time></p>\n");
        assert_eq!(content_key(&at("12:00:01")), content_key(&at("12:00:02")));
        assert_ne!(
            content_key(&at("12:00:01")),
            content_key(&at("12:00:01").replace('3', "4"))
        );
    }

    #[test]
    fn every_live_template_ends_with_the_read_at_line() {
        for template in [
            include_str!("templates/overview_live.html"),
            include_str!("templates/queue_live.html"),
            include_str!("templates/job_live.html"),
            include_str!("templates/group_live.html"),
            include_str!("templates/schedules_live.html"),
        ] {
            let at = template.rfind(READ_AT_LINE).expect("a Read at line");
            assert!(!template[at..].contains("<div"), "nothing live after it");
        }
    }
}
