//! What an operator triaging the queues needed beyond counts (issue 19), over plain HTTP and in
//! a real Chromium: ids in payloads linked to what they name (an order with its status and
//! total, a webhook endpoint with its URL), retries apart from first runs, failure rates and
//! run-time percentiles per job kind, lists filtered by kind and text with bulk actions on a
//! selection or on every match (behind the CSRF token and a confirmation), throughput over an
//! hour, a day and a week, and a layout that fits a 420 px phone. Screenshots land in the
//! artifacts folder (see `browser::artifacts_dir`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    browser::Browser,
    helpers::{TestApp, TestUser, hidden_field, new_key, order_body, spawn_app},
};

/// The page at `path`, as an admin's browser gets it (slashes as the templates escape them).
async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
    let response = app.get_with_cookie(path, cookie).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    unescape(&response.text().await.unwrap())
}

fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The element of `html` that starts with `marker`, up to `end`.
fn part<'a>(html: &'a str, marker: &str, end: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let stop = html[start..].find(end).map_or(html.len(), |i| start + i);
    &html[start..stop]
}

/// A welcome email that failed its first attempt with `error` and waits an hour for its retry.
/// Call it while no worker serves `emails` and nothing of higher priority waits there.
async fn make_retrying_email(app: &TestApp, user: Uuid, error: &str) -> String {
    let id = app.enqueue_welcome_email(user, 0).await;
    let engine = &app.services.queue;
    let claim = engine
        .claim("emails", "test-claimer", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let job = claim.jobs.into_iter().next().expect("the email is claimed");
    assert_eq!(job.id, id);
    assert!(
        engine
            .fail(&job, error, Some(Duration::from_secs(3600)))
            .await
            .unwrap()
    );
    id
}

/// A welcome email waiting an hour for its first run.
async fn enqueue_delayed_email(app: &TestApp, user: Uuid) -> String {
    let id = Uuid::now_v7().to_string();
    let spec = orderly::queue::JobSpec::new(
        "emails",
        "email.welcome",
        json!({"type": "welcome", "user_id": user}),
    )
    .with_id(id.clone())
    .delay(Duration::from_secs(3600));
    assert!(app.services.producer.enqueue(spec).await.unwrap());
    id
}

/// Places an order of one product at 12.50 EUR; returns the order's id.
async fn place_order(app: &TestApp, admin: &TestUser, customer: &TestUser) -> String {
    let product = app.create_product(admin, 1250, 10).await;
    let response = app
        .place_order(
            &customer.token,
            &new_key(),
            &order_body(product["id"].as_str().unwrap(), 1),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

/// A registered webhook endpoint's id.
async fn endpoint(app: &TestApp, admin: &TestUser, url: &str) -> String {
    let response = app
        .post_json(
            "/api/v1/webhooks",
            Some(&admin.token),
            &json!({"url": url, "events": ["order.placed"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// The id of the job of `kind` waiting (or scheduled) in `queue` whose payload names `id` under
/// `key`, once the outbox pushed it.
async fn job_naming(app: &TestApp, queue: &str, key: &str, id: &str) -> String {
    crate::helpers::eventually(
        &format!("the {queue} job naming {id}"),
        Duration::from_secs(30),
        || async {
            let page = app
                .services
                .queue
                .list(queue, orderly::queue::JobState::Ready, 0, 200)
                .await
                .unwrap();
            let groups = app
                .services
                .queue
                .groups(queue, 10)
                .await
                .unwrap()
                .top
                .into_iter()
                .map(|g| g.key);
            let mut jobs = page.jobs;
            for group in groups {
                jobs.extend(
                    app.services
                        .queue
                        .group_jobs(queue, &group, 0, 200)
                        .await
                        .unwrap()
                        .jobs,
                );
            }
            jobs.into_iter()
                .find(|job| job.payload[key] == id)
                .map(|job| job.id)
        },
    )
    .await
}

/// Writes run times for `queue` as a worker would have: `quick` attempts of 8 ms that
/// succeeded and `slow` of 3 s that failed, in the current minute.
async fn record_runtimes(app: &TestApp, queue: &str, kind: &str, quick: usize, slow: usize) {
    let recorder = orderly::queue::runtimes::RuntimeRecorder::default();
    for _ in 0..quick {
        recorder.record(kind, "completed", 8.0);
    }
    for _ in 0..slow {
        recorder.record(kind, "retried", 3_000.0);
    }
    recorder.flush(&app.services.queue, queue).await.unwrap();
}

async fn signed_in_browser(app: &TestApp, admin: &TestUser, path: &str) -> Browser {
    let browser = Browser::start().await;
    browser.goto(&app.url(path)).await;
    browser.sign_in(&admin.email, &admin.password).await;
    browser.goto(&app.url(path)).await;
    browser
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_job_page_links_payload_ids_to_what_they_name(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let hook = endpoint(&app, &admin, "https://hooks.example.com/orderly").await;
    let order = place_order(&app, &admin, &customer).await;
    let cookie = app.dashboard_session(&admin).await;

    // The order's confirmation email: the order's API URL, its status and total.
    let email = job_naming(&app, "emails", "order_id", &order).await;
    let html = page(&app, &cookie, &format!("/admin/queues/emails/jobs/{email}")).await;
    let links = part(&html, "id=\"payload-links\"", "</table>");
    assert!(
        links.contains(&format!("href=\"/api/v1/orders/{order}\"")),
        "{links}"
    );
    assert!(links.contains("placed · 12.50 EUR"), "{links}");

    // The delivery to the endpoint: the endpoint's URL, read through the webhooks service, and
    // where the delivery is listed.
    let delivery = job_naming(&app, "webhooks", "endpoint_id", &hook).await;
    let html = page(
        &app,
        &cookie,
        &format!("/admin/queues/webhooks/jobs/{delivery}"),
    )
    .await;
    let links = part(&html, "id=\"payload-links\"", "</table>");
    assert!(
        links.contains(&format!("href=\"/api/v1/webhooks/{hook}\"")),
        "{links}"
    );
    assert!(
        links.contains("https://hooks.example.com/orderly"),
        "{links}"
    );
    assert!(
        links.contains(&format!("href=\"/api/v1/webhooks/{hook}/deliveries\"")),
        "{links}"
    );

    // A report job: its API URL, nothing read.
    let report = Uuid::now_v7();
    let spec =
        orderly::queue::JobSpec::new("reports", "report.build", json!({"report_id": report}));
    let report_job = spec.id.clone();
    app.services.producer.enqueue(spec).await.unwrap();
    let html = page(
        &app,
        &cookie,
        &format!("/admin/queues/reports/jobs/{report_job}"),
    )
    .await;
    assert!(html.contains(&format!("href=\"/api/v1/reports/{report}\"")));

    // In the browser: the links sit under the payload.
    let browser =
        signed_in_browser(&app, &admin, &format!("/admin/queues/emails/jobs/{email}")).await;
    let row = browser.text("#payload-links tr[data-key='order_id']").await;
    assert!(row.contains("placed · 12.50 EUR"), "{row}");
    let href = browser
        .find("#payload-links tr[data-key='order_id'] a")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(href, format!("/api/v1/orders/{order}"));
    browser
        .run("document.getElementById('payload-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-01-payload-links-order").await;
    browser
        .goto(&app.url(&format!("/admin/queues/webhooks/jobs/{delivery}")))
        .await;
    let row = browser
        .text("#payload-links tr[data-key='endpoint_id']")
        .await;
    assert!(row.contains("https://hooks.example.com/orderly"), "{row}");
    browser
        .run("document.getElementById('payload-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-02-payload-links-endpoint").await;
    browser.close().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_shows_retries_apart_from_scheduled_jobs(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let retrying = make_retrying_email(&app, customer.id, "SMTP 451 4.3.0 try again later").await;
    let delayed = enqueue_delayed_email(&app, customer.id).await;
    let cookie = app.dashboard_session(&admin).await;

    // The overview: one scheduled, one retry, apart.
    let html = page(&app, &cookie, "/admin/queues").await;
    let row = part(&html, "data-queue=\"emails\"", "</tr>");
    assert!(
        row.contains(
            "data-field=\"scheduled\"><a href=\"/admin/queues/emails?state=scheduled\">1</a>"
        ),
        "{row}"
    );
    assert!(
        row.contains("href=\"/admin/queues/emails?state=retries\" class=\"warn\">1</a>"),
        "{row}"
    );

    // The queue page: a Retries tab listing the retry with its attempt, last error and next run.
    let html = page(&app, &cookie, "/admin/queues/emails?state=retries").await;
    assert!(html.contains("<dd data-field=\"retrying\" class=\"warn\">1</dd>"));
    let tabs = part(&html, "aria-label=\"Job lists\"", "</nav>");
    assert!(
        tabs.contains("Scheduled <span class=\"count\">1</span>"),
        "{tabs}"
    );
    assert!(
        tabs.contains("Retries <span class=\"count\">1</span>"),
        "{tabs}"
    );
    let table = part(&html, "<table class=\"jobs\"", "</table>");
    assert!(
        table.contains(&format!("data-job=\"{retrying}\"")),
        "{table}"
    );
    assert!(!table.contains(&delayed), "{table}");
    assert!(table.contains("Attempts made"), "{table}");
    assert!(
        table.contains("<td class=\"num\" data-field=\"attempts\">1 of 5</td>"),
        "{table}"
    );
    assert!(table.contains("Next run"), "{table}");
    assert!(table.contains("\">in "), "the next run is ahead: {table}");
    assert!(table.contains("SMTP 451 4.3.0 try again later"), "{table}");

    // The Scheduled tab: the first run only.
    let html = page(&app, &cookie, "/admin/queues/emails?state=scheduled").await;
    let table = part(&html, "<table class=\"jobs\"", "</table>");
    assert!(
        table.contains(&format!("data-job=\"{delayed}\"")),
        "{table}"
    );
    assert!(!table.contains(&retrying), "{table}");

    // The job page says retrying and leads back to the Retries tab.
    let html = page(
        &app,
        &cookie,
        &format!("/admin/queues/emails/jobs/{retrying}"),
    )
    .await;
    assert!(html.contains(">retrying</span>"), "{html}");
    assert!(html.contains("href=\"/admin/queues/emails?state=retries\">scheduled</a>"));

    // In the browser: the Retries tab from the overview.
    let browser = signed_in_browser(&app, &admin, "/admin/queues").await;
    browser
        .click("tr[data-queue='emails'] td[data-field='retrying'] a")
        .await;
    browser
        .find(&format!("table.jobs tr[data-job='{retrying}']"))
        .await;
    assert_eq!(browser.path().await, "/admin/queues/emails?state=retries");
    assert_eq!(
        browser.text("nav.tabs a[aria-current='page']").await,
        "Retries 1"
    );
    assert_eq!(
        browser
            .text(&format!(
                "table.jobs tr[data-job='{retrying}'] td[data-field='attempts']"
            ))
            .await,
        "1 of 5"
    );
    browser
        .run("document.querySelector('nav.tabs').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-03-retries-tab").await;
    browser.close().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_shows_run_time_percentiles_and_failure_rates_per_kind(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    // Recorded directly, as a worker's flush writes them: 95 quick sends, 5 slow failures.
    record_runtimes(&app, "emails", "email.order_confirmation", 95, 5).await;
    let cookie = app.dashboard_session(&admin).await;
    let html = page(&app, &cookie, "/admin/queues/emails").await;
    let row = part(&html, "data-kind=\"email.order_confirmation\"", "</tr>");
    assert!(row.contains("data-field=\"attempts\">100<"), "{row}");
    assert!(row.contains("data-field=\"failed\">5<"), "{row}");
    assert!(row.contains("data-field=\"failure-rate\">5.0%<"), "{row}");
    assert!(row.contains("data-field=\"p50\">7.6 ms<"), "{row}");
    assert!(row.contains("data-field=\"p99\">4.4 s<"), "{row}");
    assert!(
        row.contains("href=\"/admin/queues/emails?state=waiting&kind=email.order_confirmation\""),
        "{row}"
    );

    // The same for scripts, with a bearer token.
    let kinds: Value = app
        .get("/admin/api/queues/emails/kinds", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kinds[0]["kind"], "email.order_confirmation");
    assert_eq!(kinds[0]["attempts"], 100);
    assert_eq!(kinds[0]["failed"], 5);
    assert!((kinds[0]["p99_ms"].as_f64().unwrap() - 4_400.0).abs() < 1.0);

    // A real worker: the welcome emails it sends (three, and the one registering the customer
    // staged) show up in the table, written by its flush.
    for _ in 0..3 {
        app.enqueue_welcome_email(customer.id, 5).await;
    }
    let browser = signed_in_browser(&app, &admin, "/admin/queues/emails").await;
    let worker = app.start_worker(&["emails"]).await;
    let attempts = "#kinds tr[data-kind='email.welcome'] td[data-field='attempts']";
    browser
        .wait_for_text(attempts, "the worker's run times, live", |t| {
            t.parse::<u32>().is_ok_and(|n| n >= 3)
        })
        .await;
    assert_eq!(
        browser
            .text("#kinds tr[data-kind='email.welcome'] td[data-field='failure-rate']")
            .await,
        "0%"
    );
    assert!(
        browser
            .text("#kinds tr[data-kind='email.order_confirmation'] td[data-field='failure-rate']")
            .await
            .contains("5.0%")
    );
    browser
        .run("document.getElementById('kinds-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-04-job-kinds").await;
    browser.close().await;
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_filters_lists_and_acts_on_a_selection_or_every_match(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let engine = &app.services.queue;
    // Dead emails: three rejected as spam, two bounced.
    let mut spam = Vec::new();
    let mut bounced = Vec::new();
    for i in 0..5 {
        let id = app.enqueue_welcome_email(customer.id, 0).await;
        let claim = engine
            .claim("emails", "test-claimer", 1, Duration::from_secs(30))
            .await
            .unwrap();
        let job = claim.jobs.into_iter().next().unwrap();
        let error = if i < 3 {
            "SMTP 554 5.7.1 message rejected as spam"
        } else {
            "SMTP 550 mailbox unavailable"
        };
        assert!(engine.fail(&job, error, None).await.unwrap());
        if i < 3 { &mut spam } else { &mut bounced }.push(id);
    }
    let cookie = app.dashboard_session(&admin).await;

    // Filtered by text (case ignored) and by kind.
    let html = page(&app, &cookie, "/admin/queues/emails?state=dead&q=SPAM").await;
    let table = part(&html, "<table class=\"jobs\"", "</table>");
    assert!(spam.iter().all(|id| table.contains(id.as_str())), "{table}");
    assert!(
        !bounced.iter().any(|id| table.contains(id.as_str())),
        "{table}"
    );
    assert!(html.contains("id=\"filter-result\">3 matching of the 5 jobs in this list."));
    let html = page(
        &app,
        &cookie,
        "/admin/queues/emails?state=dead&kind=email.order_confirmation",
    )
    .await;
    assert!(html.contains("id=\"no-match\""), "{html}");

    // Bulk: the CSRF token first, then the confirmation page carrying the selection on.
    let html = page(&app, &cookie, "/admin/queues/emails?state=dead&q=spam").await;
    let csrf = hidden_field(&html, "csrf").unwrap();
    let selected = [
        ("do", "delete-selected"),
        ("state", "dead"),
        ("q", "spam"),
        ("ids", spam[0].as_str()),
        ("ids", spam[1].as_str()),
        ("return_to", "/admin/queues/emails?state=dead&q=spam"),
    ];
    let forged: Vec<(&str, &str)> = selected
        .iter()
        .copied()
        .chain([("csrf", "x"), ("confirmed", "yes")])
        .collect();
    let refused = app
        .post_form("/admin/queues/emails/bulk", &cookie, &forged)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(engine.counts("emails").await.unwrap().dead, 5);
    let unconfirmed: Vec<(&str, &str)> = selected
        .iter()
        .copied()
        .chain([("csrf", csrf.as_str())])
        .collect();
    let ask = app
        .post_form("/admin/queues/emails/bulk", &cookie, &unconfirmed)
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let question = unescape(&ask.text().await.unwrap());
    assert!(
        question.contains("Delete the 2 selected dead jobs of emails?"),
        "{question}"
    );
    assert!(question.contains(&format!("name=\"ids\" value=\"{}\"", spam[1])));
    assert_eq!(engine.counts("emails").await.unwrap().dead, 5);
    let confirmed: Vec<(&str, &str)> = unconfirmed
        .iter()
        .copied()
        .chain([("confirmed", "yes")])
        .collect();
    let done = app
        .post_form("/admin/queues/emails/bulk", &cookie, &confirmed)
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers()["location"],
        "/admin/queues/emails?state=dead&q=spam&done=bulk-delete&n=2"
    );
    assert_eq!(engine.counts("emails").await.unwrap().dead, 3);

    // Every match of a filter: the bounced ones queued again.
    let waiting_before = engine.counts("emails").await.unwrap().waiting;
    let every = app
        .post_form(
            "/admin/queues/emails/bulk",
            &cookie,
            &[
                ("do", "retry-matching"),
                ("state", "dead"),
                ("q", "mailbox unavailable"),
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", "/admin/queues/emails?state=dead"),
            ],
        )
        .await;
    assert_eq!(every.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        every.headers()["location"],
        "/admin/queues/emails?state=dead&done=bulk-retry&n=2"
    );
    let counts = engine.counts("emails").await.unwrap();
    assert_eq!((counts.dead, counts.waiting), (1, waiting_before + 2));
    let html = page(
        &app,
        &cookie,
        "/admin/queues/emails?state=dead&done=bulk-retry&n=2",
    )
    .await;
    assert!(html.contains("2 jobs queued for another run."));

    // Nothing to retry on the running list; an unknown action is a 404.
    let running = app
        .post_form(
            "/admin/queues/emails/bulk",
            &cookie,
            &[
                ("do", "retry-matching"),
                ("state", "running"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(running.status(), StatusCode::BAD_REQUEST);
    let unknown = app
        .post_form(
            "/admin/queues/emails/bulk",
            &cookie,
            &[("do", "explode-all"), ("state", "dead"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // In the browser: filter, tick, confirm in the dialog.
    let waiting: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(enqueue_delayed_email(&app, customer.id).await);
        }
        ids
    };
    let browser = signed_in_browser(&app, &admin, "/admin/queues/emails?state=scheduled").await;
    // Typing: live updates wait while the field has the focus; Enter applies the filter.
    browser.click("#filter-q").await;
    browser
        .find("#filter-q")
        .await
        .send_keys(&format!("{}\u{E007}", waiting[2]))
        .await
        .unwrap();
    browser.find("#filter-clear").await;
    assert_eq!(
        browser.path().await,
        format!(
            "/admin/queues/emails?state=scheduled&kind=&q={}",
            waiting[2]
        )
    );
    assert!(browser.has(&format!("tr[data-job='{}']", waiting[2])).await);
    assert!(!browser.has(&format!("tr[data-job='{}']", waiting[0])).await);
    browser.click("#filter-clear").await;
    browser
        .find(&format!("tr[data-job='{}']", waiting[0]))
        .await;
    // Nothing ticked: the selection's buttons are off.
    assert_eq!(
        browser
            .run("return document.querySelector(\"button[value='delete-selected']\").disabled")
            .await,
        true
    );
    for id in &waiting[..2] {
        browser
            .click(&format!("tr[data-job='{id}'] input[name='ids']"))
            .await;
    }
    browser
        .wait_for_text("#bulk-count", "the selection counted", |t| {
            t == "2 selected"
        })
        .await;
    browser.screenshot("triage-05-bulk-selection").await;
    browser.click("button[value='delete-selected']").await;
    let question = browser
        .wait_for_text("#confirm-question", "the confirmation dialog", |t| {
            !t.is_empty()
        })
        .await;
    assert!(
        question.starts_with("Delete the 2 selected scheduled jobs of emails?"),
        "{question}"
    );
    browser.screenshot("triage-06-bulk-confirm").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for_text("p.notice", "the bulk notice", |t| t == "2 jobs deleted.")
        .await;
    for id in &waiting[..2] {
        assert!(!engine.exists("emails", id).await.unwrap(), "{id} deleted");
    }
    for id in &waiting[2..] {
        assert!(engine.exists("emails", id).await.unwrap(), "{id} kept");
    }
    browser.screenshot("triage-07-bulk-done").await;
    browser.close().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_charts_throughput_over_an_hour_a_day_and_a_week(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let engine = &app.services.queue;
    for _ in 0..3 {
        app.enqueue_welcome_email(customer.id, 5).await;
    }
    let claim = engine
        .claim("emails", "test-claimer", 3, Duration::from_secs(30))
        .await
        .unwrap();
    let leases: Vec<(String, u64)> = claim.jobs.iter().map(|j| (j.id.clone(), j.lease)).collect();
    engine.ack("emails", &leases).await.unwrap();
    let cookie = app.dashboard_session(&admin).await;

    for (range, caption, bars) in [
        ("", "per minute, the last 60 minutes", 60),
        ("?range=24h", "per hour, the last 24 hours", 24),
        ("?range=7d", "per hour, the last 7 days", 168),
    ] {
        let html = page(&app, &cookie, &format!("/admin/queues{range}")).await;
        let chart = part(&html, "<figure class=\"chart\">", "</figure>");
        assert!(chart.contains(caption), "{chart}");
        assert_eq!(chart.matches("class=\"slot\"").count(), bars, "{range}");
        assert!(
            chart.contains("processed <strong>3</strong>"),
            "{range}: {chart}"
        );
        // A round maximum and time labels.
        assert!(chart.contains("<span>5</span>"), "{chart}");
        assert!(chart.contains("text-anchor="), "{chart}");
        let current = part(&html, "aria-label=\"Chart range\"", "</nav>");
        let label = match range {
            "" => "1 h",
            "?range=24h" => "24 h",
            _ => "7 d",
        };
        assert!(
            current.contains(&format!("aria-current=\"true\">{label}</a>")),
            "{current}"
        );
    }
    // A queue page takes the range too, and keeps it through its tabs and filter.
    let html = page(
        &app,
        &cookie,
        "/admin/queues/emails?state=completed&range=24h",
    )
    .await;
    let chart = part(&html, "<figure class=\"chart\">", "</figure>");
    assert_eq!(chart.matches("class=\"slot\"").count(), 24);
    assert!(chart.contains("processed <strong>3</strong>"), "{chart}");
    assert!(html.contains("href=\"/admin/queues/emails?state=dead&range=24h\""));
    assert!(html.contains("href=\"/admin/queues/emails?state=completed&range=7d\""));
    assert!(html.contains("<input type=\"hidden\" name=\"range\" value=\"24h\">"));
    let unknown = app.get_with_cookie("/admin/queues?range=1y", &cookie).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    // In the browser: the switch, and the week labelled by days.
    let browser = signed_in_browser(&app, &admin, "/admin/queues").await;
    browser
        .click("nav.ranges a[href='/admin/queues?range=7d']")
        .await;
    browser
        .wait_for_text("nav.ranges a[aria-current='true']", "the week shown", |t| {
            t == "7 d"
        })
        .await;
    assert_eq!(browser.path().await, "/admin/queues?range=7d");
    let labels = browser
        .run(
            "return Array.from(document.querySelectorAll('.chart svg.x-axis text')).map(t => t.textContent)",
        )
        .await;
    let labels: Vec<String> = serde_json::from_value(labels).unwrap();
    assert!((6..=8).contains(&labels.len()), "{labels:?}");
    let weekday = regex_like_day(&labels[1]);
    assert!(weekday, "{labels:?}");
    // The labels keep a readable size, whatever the plot's width.
    let size = browser
        .run("return parseFloat(getComputedStyle(document.querySelector('.chart svg.x-axis text')).fontSize)")
        .await;
    assert_eq!(size, 11.0);
    browser
        .run("document.getElementById('throughput-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-08-throughput-week").await;
    browser
        .click("nav.ranges a[href='/admin/queues?range=24h']")
        .await;
    browser
        .wait_for_text("nav.ranges a[aria-current='true']", "the day shown", |t| {
            t == "24 h"
        })
        .await;
    browser
        .run("document.getElementById('throughput-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-09-throughput-day").await;
    browser.close().await;
}

/// `Mon 07`: a weekday and a day of the month.
fn regex_like_day(label: &str) -> bool {
    let (day, date) = label.split_once(' ').unwrap_or(("", ""));
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&day)
        && date.len() == 2
        && date.chars().all(|c| c.is_ascii_digit())
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn dashboard_fits_a_420_px_phone(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    // Wide content: a dead job with a long error, a retry, a queue with many columns.
    let dead = app.make_dead_email(customer.id).await;
    make_retrying_email(&app, customer.id, &"a long SMTP error ".repeat(12)).await;
    record_runtimes(&app, "emails", "email.welcome", 20, 1).await;
    let browser = signed_in_browser(&app, &admin, "/admin/queues").await;
    browser
        .client
        .set_window_size(420, 900)
        .await
        .expect("a 420 px window");
    let width = browser.run("return window.innerWidth").await;
    assert!(
        width.as_f64().is_some_and(|w| w <= 420.0),
        "the viewport is at most 420 px wide: {width}"
    );
    for (path, ready, shot) in [
        (
            "/admin/queues",
            "tr[data-queue='emails']",
            "triage-10-phone-overview",
        ),
        (
            "/admin/queues/emails?state=dead",
            &*format!("tr[data-job='{dead}']"),
            "triage-11-phone-queue",
        ),
        (
            &*format!("/admin/queues/emails/jobs/{dead}"),
            "#job-state",
            "triage-12-phone-job",
        ),
    ] {
        browser.goto(&app.url(path)).await;
        browser.find(ready).await;
        let scroll_width = browser
            .run("return document.documentElement.scrollWidth")
            .await;
        assert!(
            scroll_width.as_f64().is_some_and(|w| w <= 420.0),
            "{path}: the page scrolls sideways ({scroll_width} px wide)"
        );
        browser.screenshot(shot).await;
    }
    // The queue page's wide tables scroll in their own box, not the page.
    browser
        .goto(&app.url("/admin/queues/emails?state=dead"))
        .await;
    browser.find("table.jobs").await;
    let boxed = browser
        .run(
            "const box = document.querySelector('table.jobs').parentElement; \
             return box.classList.contains('scroll') && box.scrollWidth > box.clientWidth",
        )
        .await;
    assert_eq!(boxed, true, "the job table scrolls inside its box");
    browser
        .run("document.getElementById('kinds-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("triage-13-phone-queue-kinds").await;
    browser.close().await;
}
