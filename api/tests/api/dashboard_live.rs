//! The dashboard's live updates over plain HTTP: `GET /admin/live?page=…` streams a page's live
//! part as Server-Sent Events, sends it again when the queues change (and not while they do
//! not), follows a job's progress as it is reported, refuses visitors who are not admins and
//! pages that are not the dashboard's, and ends when the api shuts down.

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::time::{Instant, timeout};

use crate::helpers::{TestApp, spawn_app};

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads events off a streaming response.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
    ended: bool,
}

impl EventReader {
    async fn open(app: &TestApp, cookie: &str, page: &str) -> Self {
        let response = stream(app, cookie, page).await;
        assert_eq!(response.status(), StatusCode::OK, "stream of {page}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next event within `limit`; `None` when none came (or the stream ended: see `ended`).
    async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("", _)) | None => {} // a comment (keep-alive)
                        Some((field, value)) => {
                            let value = value.strip_prefix(' ').unwrap_or(value);
                            match field {
                                "event" => event.event = value.to_owned(),
                                "id" => event.id = Some(value.to_owned()),
                                "data" => data.push(value.to_owned()),
                                _ => {}
                            }
                        }
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.response.chunk(),
            )
            .await
            .ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The first `fragment` event within `limit` whose HTML satisfies `wanted`.
    async fn fragment_where(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no wanted fragment within {limit:?}"));
            if event.event == "fragment" && wanted(&event.data) {
                return event.data;
            }
        }
    }
}

async fn stream(app: &TestApp, cookie: &str, page: &str) -> reqwest::Response {
    app.client
        .get(app.url("/admin/live"))
        .query(&[("page", page)])
        .header("cookie", cookie)
        .send()
        .await
        .expect("stream request")
}

/// The number in `field`'s cell of `queue`'s row on the overview.
fn cell(html: &str, queue: &str, field: &str) -> Option<String> {
    let row = &html[html.find(&format!("data-queue=\"{queue}\""))?..];
    let cell = &row[row.find(&format!("data-field=\"{field}\""))?..];
    let end = cell.find("</td>")?;
    let text = &cell[..end];
    let text = text.rsplit_once("\">").map_or(text, |(_, t)| t);
    Some(text.trim_end_matches("</a>").trim().to_owned())
}

fn delayed_webhook() -> orderly::queue::JobSpec {
    orderly::queue::JobSpec::new(
        "webhooks",
        "webhook.deliver",
        serde_json::json!({"delivery_id": uuid::Uuid::now_v7()}),
    )
    .delay(Duration::from_secs(3600))
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_overview_streams_its_numbers_when_they_change(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;

    // The page's live part arrives at once, with the page's numbers.
    let mut overview = EventReader::open(&app, &cookie, "/admin/queues?live=1").await;
    let first = overview
        .next(Duration::from_secs(5))
        .await
        .expect("the first fragment");
    assert_eq!(first.event, "fragment");
    assert_eq!(
        cell(&first.data, "webhooks", "scheduled").as_deref(),
        Some("0")
    );
    assert!(!first.data.contains("<html"), "the live part only");
    let first_id = first.id.expect("fragments carry an id");

    // A job enqueued elsewhere: the new count arrives within a few seconds, unasked.
    app.services
        .producer
        .enqueue(delayed_webhook())
        .await
        .unwrap();
    let changed = overview
        .fragment_where(Duration::from_secs(5), |html| {
            cell(html, "webhooks", "scheduled").as_deref() == Some("1")
        })
        .await;
    assert!(changed.contains("data-queue=\"emails\""));

    // Nothing changes: nothing is sent (the signal is read every second; give it a few). The
    // throughput chart moves on every minute, which is a change: the window stays inside one.
    let into_minute = chrono::Utc::now().timestamp_millis().rem_euclid(60_000);
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(61_500 - into_minute).unwrap_or(0),
        ))
        .await;
        while overview.next(Duration::from_millis(500)).await.is_some() {}
    }
    let quiet = overview.next(Duration::from_secs(3)).await;
    assert!(
        quiet.is_none(),
        "nothing sent while nothing changed: {quiet:?}"
    );
    assert!(!overview.ended);

    // A reconnect that already shows the current content is not sent it again; one that shows
    // older content is.
    let reconnect = |last_id: String| {
        let request = app
            .client
            .get(app.url("/admin/live"))
            .query(&[("page", "/admin/queues?live=1")])
            .header("cookie", &cookie)
            .header("last-event-id", last_id);
        async move {
            EventReader {
                response: request.send().await.unwrap(),
                buffer: String::new(),
                ended: false,
            }
        }
    };
    let mut stale = reconnect(first_id).await;
    let resent = stale.next(Duration::from_secs(5)).await.expect("resent");
    assert_eq!(
        cell(&resent.data, "webhooks", "scheduled").as_deref(),
        Some("1")
    );
    let mut current = reconnect(resent.id.unwrap()).await;
    assert!(current.next(Duration::from_secs(2)).await.is_none());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_job_page_streams_progress_as_it_is_reported(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let engine = &app.services.queue;

    // A report build with an event stream, claimed as a worker would.
    let spec = orderly::queue::JobSpec::new(
        "reports",
        "report.build",
        serde_json::json!({"report_id": uuid::Uuid::now_v7()}),
    )
    .with_events();
    let id = spec.id.clone();
    app.services.producer.enqueue(spec).await.unwrap();
    let claim = engine
        .claim("reports", "probe", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let job = &claim.jobs[0];
    assert_eq!(job.id, id);

    let page = format!("/admin/queues/reports/jobs/{id}?live=1");
    let mut stream = EventReader::open(&app, &cookie, &page).await;
    let first = stream
        .fragment_where(Duration::from_secs(5), |_| true)
        .await;
    assert!(first.contains("id=\"job-state\">running<"), "{first}");
    assert!(!first.contains("job-progress"));

    // Progress changes no queue count: only the job's own event stream says it moved.
    let reported = Instant::now();
    let progress = serde_json::json!({"fraction": 0.5, "note": "4200 rows", "at": 0}).to_string();
    assert!(
        engine
            .annotate("reports", &id, job.lease, "progress", &progress)
            .await
            .unwrap()
    );
    let shown = stream
        .fragment_where(Duration::from_secs(5), |html| html.contains("job-progress"))
        .await;
    assert!(shown.contains("50% · 4200 rows"), "{shown}");
    assert!(
        reported.elapsed() < Duration::from_secs(2),
        "progress shown within {:?}",
        reported.elapsed()
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn only_admins_get_a_stream(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;

    // No session: the login form, which then returns to the page (not to the stream).
    let anonymous = stream(&app, "", "/admin/queues/emails?state=dead&live=1").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.headers()["location"],
        "/admin/login?next=/admin/queues/emails%3Fstate%3Ddead"
    );

    // A customer's own token as the cookie: the 403 page, no data.
    let cookie = format!("orderly_admin={}", customer.token);
    let refused = stream(&app, &cookie, "/admin/queues?live=1").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = refused.text().await.unwrap();
    assert!(html.contains("Administrators only"));
    assert!(!html.contains("data-queue"));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn only_the_dashboards_own_pages_stream(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;

    for page in [
        "https://example.com/admin/queues",
        "//example.com/admin/queues",
        "http://127.0.0.1:6379/",
        "/admin/api/overview",
        "/admin/live?page=/admin/queues",
        "/admin/queues/emails/pause",
        "/api/v1/reports",
        "",
    ] {
        let response = stream(&app, &cookie, page).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{page}");
        let html = response.text().await.unwrap();
        assert!(html.contains("No such page"), "{page}: {html}");
    }
    let missing = app.get_with_cookie("/admin/live", &cookie).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A page of ours that does not exist answers as that page would.
    let queue = stream(&app, &cookie, "/admin/queues/nope?live=1").await;
    assert_eq!(queue.status(), StatusCode::NOT_FOUND);
    assert!(queue.text().await.unwrap().contains("No such queue"));
    let job = stream(&app, &cookie, "/admin/queues/emails/jobs/nope?live=1").await;
    assert_eq!(job.status(), StatusCode::NOT_FOUND);
    assert!(job.text().await.unwrap().contains("No such job"));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn open_streams_end_when_the_api_shuts_down(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let mut overview = EventReader::open(&app, &cookie, "/admin/queues?live=1").await;
    let mut schedules = EventReader::open(&app, &cookie, "/admin/schedules?live=1").await;
    overview
        .next(Duration::from_secs(5))
        .await
        .expect("fragment");
    schedules
        .next(Duration::from_secs(5))
        .await
        .expect("fragment");

    // The grace period is 30 s; open dashboards do not hold the shutdown for it.
    timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the api stops without waiting for open dashboards");
    assert!(overview.next(Duration::from_secs(5)).await.is_none());
    assert!(overview.ended, "the stream ended");
    assert!(schedules.next(Duration::from_secs(5)).await.is_none());
    assert!(schedules.ended, "the stream ended");
}
