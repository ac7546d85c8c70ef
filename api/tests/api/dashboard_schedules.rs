//! The dashboard's schedules page over plain HTTP: every schedule with its recurrence, next and
//! last run and the outcome of its last job; "run now", pause and resume behind the CSRF token
//! and a confirmation; admins only; unknown schedules are 404.

use chrono::{DateTime, SecondsFormat};
use orderly::{
    jobs::{JobSettings, MaintenanceJob},
    queue::{
        Job,
        schedule::{Missed, Recurrence, ScheduleDef},
    },
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, hidden_field, spawn_app};

/// A cron schedule read in Berlin time.
const NIGHTLY: &str = "maintenance:nightly_purge";
/// An interval schedule.
const FREQUENT: &str = "maintenance:frequent_purge";

/// Defines [`NIGHTLY`] (03:00 in Berlin) and [`FREQUENT`] (every 90 s), both purging expired
/// idempotency keys on the `maintenance` queue.
async fn define_schedules(app: &TestApp) {
    let job = MaintenanceJob::PurgeIdempotencyKeys
        .spec(&JobSettings::default())
        .unwrap();
    for (name, recurrence) in [
        (
            NIGHTLY,
            Recurrence::cron("0 3 * * *", "Europe/Berlin").unwrap(),
        ),
        (
            FREQUENT,
            Recurrence::every(std::time::Duration::from_secs(90)),
        ),
    ] {
        app.services
            .schedules
            .define(&ScheduleDef {
                name: name.to_owned(),
                recurrence,
                job: job.clone(),
                missed: Missed::RunOnce,
            })
            .await
            .unwrap();
    }
}

/// The `<tr>` of schedule `name` in the page's HTML.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-schedule=\"{name}\""))
        .unwrap_or_else(|| panic!("{name} listed"));
    let end = html[start..].find("</tr>").expect("row ends") + start;
    &html[start..end]
}

/// One cell (`data-field`) of a row.
fn cell<'a>(row: &'a str, field: &str) -> &'a str {
    let start = row
        .find(&format!("data-field=\"{field}\""))
        .unwrap_or_else(|| panic!("{field} cell"));
    let end = row[start..].find("</td>").expect("cell ends") + start;
    &row[start..end]
}

/// The schedules page as `cookie` sees it, expecting 200, with the template's escapes of `/`
/// and `&` undone (so assertions read like the page does).
async fn page(app: &TestApp, cookie: &str) -> String {
    let response = app.get_with_cookie("/admin/schedules", cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    response
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

fn action_path(name: &str, action: &str) -> String {
    format!("/admin/schedules/{}/{action}", name.replace(':', "%3A"))
}

/// Jobs on the `maintenance` queue, in any state.
async fn maintenance_jobs(app: &TestApp) -> u64 {
    let counts = app.services.queue.counts("maintenance").await.unwrap();
    counts.waiting + counts.scheduled + counts.active + counts.completed + counts.dead
}

async fn paused(app: &TestApp, name: &str) -> bool {
    app.services
        .schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.def.name == name)
        .expect("schedule")
        .paused
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_page_lists_every_schedule_with_its_next_run(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    define_schedules(&app).await;
    let cookie = app.dashboard_session(&admin).await;

    let html = page(&app, &cookie).await;

    assert!(
        html.contains("href=\"/admin/schedules\" aria-current=\"page\""),
        "the navigation links the page and marks it current"
    );
    let nightly = row(&html, NIGHTLY);
    let recurrence = cell(nightly, "recurrence");
    assert!(recurrence.contains("0 3 * * *") && recurrence.contains("Europe/Berlin"));
    assert!(nightly.contains(">maintenance</a>"), "queue, linked");
    assert!(
        nightly.contains("maintenance.purge_idempotency_keys"),
        "kind"
    );
    // The next run is the next 03:00 in Berlin, as the engine computes it.
    let next_ms = app
        .services
        .schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.def.name == NIGHTLY)
        .unwrap()
        .next_tick_ms
        .expect("a next tick");
    let next = DateTime::from_timestamp_millis(next_ms).unwrap();
    let next_cell = cell(nightly, "next");
    assert!(
        next_cell.contains(&format!(
            "datetime=\"{}\"",
            next.to_rfc3339_opts(SecondsFormat::Millis, true)
        )),
        "{next_cell}"
    );
    assert!(next_cell.contains("(in "), "relative time too: {next_cell}");
    // 03:00 in Berlin is 01:00 or 02:00 UTC, by the season.
    let utc = next.format("%H:%M").to_string();
    assert!(utc == "01:00" || utc == "02:00", "{utc}");
    assert!(cell(nightly, "last-run").contains("never"));
    assert!(!nightly.contains("badge paused"));
    assert!(nightly.contains(">Run now</button>") && nightly.contains(">Pause</button>"));

    let frequent = row(&html, FREQUENT);
    assert!(cell(frequent, "recurrence").contains("every 90 s"));
    assert!(cell(frequent, "next").contains("<time datetime="));

    // The JSON twin lists the same, by name.
    let json: Value = app
        .get("/admin/api/schedules", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["def"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [FREQUENT, NIGHTLY]);
    assert_eq!(json[1]["next_tick_ms"], next_ms);
    assert_eq!(json[1]["paused"], false);
    assert_eq!(json[1]["last_job_state"], Value::Null);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn run_now_enqueues_the_job_and_shows_it_as_the_last_run(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    define_schedules(&app).await;
    let cookie = app.dashboard_session(&admin).await;
    let csrf = hidden_field(&page(&app, &cookie).await, "csrf").unwrap();
    let run_now = action_path(NIGHTLY, "run-now");
    assert_eq!(maintenance_jobs(&app).await, 0);

    // Unconfirmed: the server asks first and enqueues nothing.
    let ask = app
        .post_form(
            &run_now,
            &cookie,
            &[("csrf", &csrf), ("return_to", "/admin/schedules")],
        )
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let question = ask.text().await.unwrap();
    assert!(question.contains("Please confirm") && question.contains(NIGHTLY));
    assert_eq!(maintenance_jobs(&app).await, 0);

    let done = app
        .post_form(
            &run_now,
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", "/admin/schedules"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers()["location"],
        "/admin/schedules?done=schedule-run"
    );
    assert_eq!(maintenance_jobs(&app).await, 1, "one job enqueued");
    let view = app
        .services
        .schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.def.name == NIGHTLY)
        .unwrap();
    let job_id = view.last_job_id.expect("the job run now is the last");
    let job = app
        .services
        .queue
        .job("maintenance", &job_id)
        .await
        .unwrap()
        .expect("job stored");
    assert_eq!(job.kind, "maintenance.purge_idempotency_keys");

    // The page shows it as the last run, with its outcome linking to the job.
    let html = page(&app, &cookie).await;
    let nightly = row(&html, NIGHTLY);
    assert!(cell(nightly, "last-run").contains("<time datetime="));
    let outcome = cell(nightly, "outcome");
    assert!(outcome.contains(">waiting</span>"), "{outcome}");
    assert!(
        outcome.contains(&format!(
            "href=\"/admin/queues/maintenance/jobs/{}\"",
            job_id.replace(':', "%3A")
        )),
        "{outcome}"
    );
    assert!(cell(row(&html, FREQUENT), "outcome").contains("—"));
    let notice = app
        .get_with_cookie("/admin/schedules?done=schedule-run", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(notice.contains("class=\"notice\""));
    let json: Value = app
        .get("/admin/api/schedules", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json[1]["last_job_id"], job_id.as_str());
    assert_eq!(json[1]["last_job_state"], "ready");

    // Once the queue no longer keeps the job, the outcome says so without a link.
    assert!(
        app.services
            .queue
            .delete("maintenance", &job_id)
            .await
            .unwrap()
    );
    let html = page(&app, &cookie).await;
    let outcome = cell(row(&html, NIGHTLY), "outcome");
    assert!(outcome.contains("finished (no longer kept)"), "{outcome}");
    assert!(!outcome.contains("href="));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn pause_hides_the_next_run_and_resume_brings_it_back(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    define_schedules(&app).await;
    let cookie = app.dashboard_session(&admin).await;
    let csrf = hidden_field(&page(&app, &cookie).await, "csrf").unwrap();
    let confirmed = [
        ("csrf", csrf.as_str()),
        ("confirmed", "yes"),
        ("return_to", "/admin/schedules"),
    ];

    let pause = app
        .post_form(&action_path(FREQUENT, "pause"), &cookie, &confirmed)
        .await;
    assert_eq!(pause.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        pause.headers()["location"],
        "/admin/schedules?done=schedule-pause"
    );
    assert!(paused(&app, FREQUENT).await);
    let html = page(&app, &cookie).await;
    let frequent = row(&html, FREQUENT);
    assert!(frequent.contains("badge paused"));
    let next = cell(frequent, "next");
    assert!(next.contains("paused") && !next.contains("<time"), "{next}");
    assert!(frequent.contains(">Resume</button>") && !frequent.contains(">Pause</button>"));
    assert!(
        cell(row(&html, NIGHTLY), "next").contains("<time"),
        "the other schedule runs on"
    );

    let resume = app
        .post_form(&action_path(FREQUENT, "resume"), &cookie, &confirmed)
        .await;
    assert_eq!(resume.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resume.headers()["location"],
        "/admin/schedules?done=schedule-resume"
    );
    assert!(!paused(&app, FREQUENT).await);
    let html = page(&app, &cookie).await;
    let frequent = row(&html, FREQUENT);
    assert!(!frequent.contains("badge paused"));
    assert!(cell(frequent, "next").contains("<time datetime="));
    assert!(frequent.contains(">Pause</button>"));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn only_admins_see_and_act_on_schedules(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    define_schedules(&app).await;
    let forms = [("csrf", "x"), ("confirmed", "yes")];

    // Anonymous: to the login form, nothing done.
    let anonymous = app.get("/admin/schedules", None).await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.headers()["location"],
        "/admin/login?next=/admin/schedules"
    );
    let action = app
        .post_form(&action_path(FREQUENT, "pause"), "", &forms)
        .await;
    assert_eq!(action.status(), StatusCode::SEE_OTHER);
    assert_error(
        app.get("/admin/api/schedules", None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // A customer: 403, no schedule data, nothing done.
    let cookie = format!("orderly_admin={}", customer.token);
    let page = app.get_with_cookie("/admin/schedules", &cookie).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let html = page.text().await.unwrap();
    assert!(html.contains("Administrators only"));
    assert!(!html.contains("data-schedule") && !html.contains(FREQUENT));
    for action in ["pause", "run-now"] {
        let response = app
            .post_form(&action_path(FREQUENT, action), &cookie, &forms)
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    assert_error(
        app.get("/admin/api/schedules", Some(&customer.token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    assert!(!paused(&app, FREQUENT).await);
    assert_eq!(maintenance_jobs(&app).await, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn schedule_actions_need_the_csrf_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    define_schedules(&app).await;
    let cookie = app.dashboard_session(&admin).await;

    for action in ["pause", "run-now"] {
        let path = action_path(NIGHTLY, action);
        let missing = app.post_form(&path, &cookie, &[("confirmed", "yes")]).await;
        assert_eq!(missing.status(), StatusCode::FORBIDDEN);
        let wrong = app
            .post_form(
                &path,
                &cookie,
                &[
                    ("csrf", "dGhpcyBpcyBub3QgdGhlIHRva2Vu"),
                    ("confirmed", "yes"),
                ],
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    }
    assert!(!paused(&app, NIGHTLY).await);
    assert_eq!(maintenance_jobs(&app).await, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn unknown_schedules_and_actions_are_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    define_schedules(&app).await;
    let cookie = app.dashboard_session(&admin).await;
    let csrf = hidden_field(&page(&app, &cookie).await, "csrf").unwrap();
    let confirmed = [("csrf", csrf.as_str()), ("confirmed", "yes")];

    for action in ["run-now", "pause", "resume"] {
        let response = app
            .post_form(
                &action_path("no-such-schedule", action),
                &cookie,
                &confirmed,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let html = response.text().await.unwrap();
        assert!(html.contains("No such schedule"), "{html}");
    }
    let response = app
        .post_form(&action_path(NIGHTLY, "explode"), &cookie, &confirmed)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(maintenance_jobs(&app).await, 0);
    assert!(!paused(&app, NIGHTLY).await);
}
