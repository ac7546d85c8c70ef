//! Job groups on the dashboard: the Groups section of the `webhooks` queue page (per-endpoint
//! limits, backlogs, the open breaker with its last error), the group and job pages, an ordered
//! group waiting for its head's retry, and closing a breaker by hand behind the CSRF token and a
//! confirmation, over plain HTTP and in a real browser. (The per-group series of `/metrics` are
//! tested in `metrics`.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    browser::Browser,
    helpers::{TestApp, hidden_field, spawn_app},
};

const BREAKER_ERROR: &str = "HTTP 503 from the endpoint: down for maintenance";

/// The page at `path`, as an admin's browser gets it (slashes as the templates escape them).
async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
    let response = app.get_with_cookie(path, cookie).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap().replace("&#x2f;", "/")
}

/// The element of `html` that starts with `marker`, up to `end`.
fn part<'a>(html: &'a str, marker: &str, end: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let stop = html[start..].find(end).map_or(html.len(), |i| start + i);
    &html[start..stop]
}

/// A registered webhook endpoint's id (its deliveries are grouped by it).
async fn endpoint(app: &TestApp, admin_token: &str, url: &str) -> String {
    let response = app
        .post_json(
            "/api/v1/webhooks",
            Some(admin_token),
            &json!({"url": url, "events": ["order.placed"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_queue_page_shows_groups_and_an_admin_closes_a_breaker(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let endpoint = endpoint(&app, &admin.token, "https://hooks.example.com/orderly").await;
    let engine = &app.services.queue;

    // Arrange: three deliveries to the endpoint, whose breaker opens after five failures in a
    // row (the default per-endpoint limits), then two to another group. No worker runs.
    let failing = app.enqueue_grouped_webhooks(&endpoint, 3).await;
    app.open_webhook_breaker(&endpoint, BREAKER_ERROR).await;
    app.enqueue_grouped_webhooks("ep-2", 2).await;
    let counts = engine.counts("webhooks").await.unwrap();
    assert_eq!(
        (
            counts.waiting,
            counts.waiting_in_groups,
            counts.open_breakers
        ),
        (5, 5, 1)
    );

    let cookie = app.dashboard_session(&admin).await;
    let html = page(&app, &cookie, "/admin/queues/webhooks").await;

    // The queue's numbers count the grouped jobs, the list says where they are.
    assert!(
        html.contains(r#"<dd data-field="waiting">5</dd>"#),
        "{html}"
    );
    assert!(html.contains(r#"<dd data-field="waiting-in-groups">5</dd>"#));
    assert!(
        html.contains("id=\"grouped-note\""),
        "the waiting list points to the groups"
    );
    assert!(html.contains("No job waits outside the groups."));
    assert!(
        html.contains(r#"id="queue-breakers""#),
        "a badge says a breaker is open"
    );

    // The per-endpoint limits.
    let limits = part(&html, r#"id="group-limits""#, "</dl>");
    assert!(limits.contains("at most 4"), "{limits}");
    assert!(
        limits.contains(
            "opens after 5 failed attempts in a row; cool-down 30s, doubling up to 30m 00s"
        ),
        "{limits}"
    );
    assert!(limits.contains("unordered"), "{limits}");

    // The groups by backlog: the endpoint (with its URL), held by its open breaker, then ep-2.
    let top = part(&html, r#"id="groups-top""#, "</table>");
    let first = part(top, &format!(r#"data-group="{endpoint}""#), "</tr>");
    assert!(
        first.contains(r#"<td class="num" data-field="waiting">3</td>"#),
        "{first}"
    );
    assert!(
        first.contains("https://hooks.example.com/orderly"),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            r#"href="/admin/queues/webhooks/groups/{endpoint}""#
        )),
        "{first}"
    );
    assert!(first.contains("its breaker is open"), "{first}");
    assert!(first.contains("breaker-open"), "{first}");
    let second = part(top, r#"data-group="ep-2""#, "</tr>");
    assert!(
        second.contains(r#"data-field="waiting">2</td>"#),
        "{second}"
    );
    assert!(second.contains(">ready<"), "{second}");
    assert!(
        top.find(&endpoint) < top.find("ep-2"),
        "the largest backlog first"
    );

    // The open breaker, with its failures, last error and the button.
    let breaker = part(&html, &format!(r#"data-breaker="{endpoint}""#), "</tr>");
    assert!(
        breaker.contains(r#"data-field="failures">5</td>"#),
        "{breaker}"
    );
    assert!(breaker.contains(BREAKER_ERROR), "{breaker}");
    assert!(
        breaker.contains("UTC</time>"),
        "reopen time shown: {breaker}"
    );
    let close = format!("/admin/queues/webhooks/groups/{endpoint}/close-breaker");
    assert!(
        breaker.contains(&format!(r#"action="{close}""#)),
        "{breaker}"
    );
    assert!(breaker.contains("Close breaker"));

    // The group's page: its status and its waiting jobs, next to run first.
    let group_path = format!("/admin/queues/webhooks/groups/{endpoint}");
    let group = page(&app, &cookie, &group_path).await;
    assert!(group.contains(r#"id="group-state">waiting<"#), "{group}");
    assert!(group.contains(r#"<dd id="group-waiting">3</dd>"#));
    assert!(group.contains(BREAKER_ERROR));
    assert!(group.contains("https://hooks.example.com/orderly"));
    for id in &failing {
        assert!(
            group.contains(&format!(r#"data-job="{id}""#)),
            "{id} listed"
        );
    }
    // A key that holds a slash is one path segment.
    app.enqueue_grouped_webhooks("tenant/7", 1).await;
    let slashed = page(&app, &cookie, "/admin/queues/webhooks/groups/tenant%2F7").await;
    assert!(
        slashed.contains(r#"<dd id="group-waiting">1</dd>"#),
        "{slashed}"
    );

    // The job page names the group and links to it.
    let job = page(
        &app,
        &cookie,
        &format!("/admin/queues/webhooks/jobs/{}", failing[0]),
    )
    .await;
    assert!(
        job.contains(&format!(r#"<a class="mono" href="{group_path}""#)),
        "{job}"
    );

    // The JSON read API has the same.
    let groups: Value = app
        .get("/admin/api/queues/webhooks/groups", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(groups["waiting"], 6);
    assert_eq!(groups["open_breakers"][0]["key"], endpoint.as_str());
    let detail: Value = app
        .get(
            &format!("/admin/api/queues/webhooks/groups/{endpoint}"),
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["group"]["breaker"]["state"], "open");
    assert_eq!(detail["jobs"]["total"], 3);

    // Closing it: refused without the session's CSRF token or without a session at all.
    let csrf = hidden_field(&html, "csrf").unwrap();
    let forged = app
        .post_form(&close, &cookie, &[("csrf", "x"), ("confirmed", "yes")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let anonymous = app
        .post_form(&close, "", &[("csrf", &csrf), ("confirmed", "yes")])
        .await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert!(
        anonymous.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/admin/login")
    );
    // Not confirmed yet: the server asks first.
    let ask = app
        .post_form(
            &close,
            &cookie,
            &[("csrf", &csrf), ("return_to", "/admin/queues/webhooks")],
        )
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    assert!(
        ask.text()
            .await
            .unwrap()
            .contains("Close the breaker of endpoint")
    );
    let still = engine.group("webhooks", &endpoint).await.unwrap();
    assert_eq!(
        still.breaker.unwrap().state,
        "open",
        "nothing closed it yet"
    );

    // Confirmed: closed, back to the queue page with a notice; the jobs may run again.
    let done = app
        .post_form(
            &close,
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", "/admin/queues/webhooks"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers()["location"],
        "/admin/queues/webhooks?done=close-breaker"
    );
    let status = engine.group("webhooks", &endpoint).await.unwrap();
    assert!(status.breaker.is_none(), "{status:?}");
    assert_eq!(status.state, "ready");
    assert_eq!(engine.counts("webhooks").await.unwrap().open_breakers, 0);
    let after = page(&app, &cookie, "/admin/queues/webhooks?done=close-breaker").await;
    assert!(after.contains("Breaker closed"), "the notice");
    assert!(after.contains(r#"id="no-breakers""#), "no breaker listed");
    assert!(!after.contains(r#"id="queue-breakers""#));

    // Closing it again changes nothing, and says so.
    let again = app
        .post_form(
            &close,
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", &group_path),
            ],
        )
        .await;
    assert_eq!(
        again.headers()["location"].to_str().unwrap(),
        format!("{group_path}?done=breaker-unchanged")
    );
    app.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_ordered_group_waiting_for_its_head_says_so(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let engine = &app.services.queue;
    let specs: Vec<orderly::queue::JobSpec> = (0..2)
        .map(|i| {
            orderly::queue::JobSpec::new(
                "webhooks",
                "webhook.deliver",
                json!({"delivery_id": uuid::Uuid::now_v7()}),
            )
            .with_id(format!("ordered-{i}"))
            .in_group(orderly::queue::JobGroup::ordered("ep-ordered"))
        })
        .collect();
    engine.enqueue(&specs).await.unwrap();
    // The head fails and will be retried in ten minutes: the job behind it waits too.
    let claim = engine
        .claim("webhooks", "test-claimer", 2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        claim.jobs.len(),
        1,
        "an ordered group runs one job at a time"
    );
    assert_eq!(claim.jobs[0].id, "ordered-0");
    assert!(
        engine
            .fail(&claim.jobs[0], "HTTP 500", Some(Duration::from_secs(600)))
            .await
            .unwrap()
    );

    let cookie = app.dashboard_session(&admin).await;
    let html = page(&app, &cookie, "/admin/queues/webhooks").await;
    let row = part(&html, r#"data-group="ep-ordered""#, "</tr>");
    assert!(row.contains(">waiting<"), "{row}");
    assert!(
        row.contains("UTC — the job at its head is retrying"),
        "{row}"
    );
    let group = page(&app, &cookie, "/admin/queues/webhooks/groups/ep-ordered").await;
    assert!(group.contains("the job at its head is retrying"), "{group}");
    let head = group
        .find(r#"data-job="ordered-0""#)
        .expect("the head listed");
    let next = group
        .find(r#"data-job="ordered-1""#)
        .expect("the next listed");
    assert!(head < next, "the retrying head keeps its place");
    let job = page(&app, &cookie, "/admin/queues/webhooks/jobs/ordered-1").await;
    assert!(job.contains(r#"id="job-ordered""#), "{job}");

    // A job outside the group runs and completes: its page reads its retry policy as a
    // schedule and names the worker that ran it, not as the lease holder.
    let done = orderly::queue::JobSpec::new(
        "webhooks",
        "webhook.deliver",
        json!({"delivery_id": uuid::Uuid::now_v7()}),
    )
    .with_id("done-1")
    .with_retry(orderly::queue::RetryPolicy::schedule(&[
        Duration::from_secs(5),
        Duration::from_secs(300),
    ]));
    engine.enqueue(&[done]).await.unwrap();
    let claim = engine
        .claim("webhooks", "test-finisher", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claim.jobs[0].id, "done-1");
    let lease = (claim.jobs[0].id.clone(), claim.jobs[0].lease);
    assert_eq!(engine.ack("webhooks", &[lease]).await.unwrap(), [true]);
    let job = page(&app, &cookie, "/admin/queues/webhooks/jobs/done-1").await;
    assert!(
        job.contains("3 attempts: retries after 5s, 5m 00s"),
        "{job}"
    );
    assert!(!job.contains("Lease holder"), "{job}");
    let last = part(&job, r#"id="job-last-worker""#, "</dd>");
    assert!(last.contains("test-finisher"), "{last}");
    app.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_admin_closes_a_breaker_in_the_browser(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    app.enqueue_grouped_webhooks("ep-browser", 2).await;
    app.open_webhook_breaker("ep-browser", BREAKER_ERROR).await;

    let browser = Browser::start().await;
    browser.goto(&app.url("/admin/queues/webhooks")).await;
    browser.sign_in(&admin.email, &admin.password).await;
    browser.goto(&app.url("/admin/queues/webhooks")).await;

    // The Groups section: the group's backlog and its open breaker with the last error.
    let row = "#groups-top tr[data-group='ep-browser']";
    browser
        .wait_for_text(
            &format!("{row} td[data-field='waiting']"),
            "the backlog",
            |t| t == "2",
        )
        .await;
    assert!(
        browser
            .text(&format!("{row} td[data-field='state']"))
            .await
            .contains("its breaker is open")
    );
    let breaker = "#breakers tr[data-breaker='ep-browser']";
    assert!(browser.text(breaker).await.contains(BREAKER_ERROR));
    browser
        .run("document.getElementById('groups-title').scrollIntoView(); return null")
        .await;
    browser.screenshot("14-groups-breaker-open").await;

    // Close it through the confirmation dialog.
    browser
        .click(&format!(
            "{breaker} form.action[action$='/close-breaker'] button"
        ))
        .await;
    let question = browser
        .wait_for_text("#confirm-question", "the confirmation dialog", |t| {
            !t.is_empty()
        })
        .await;
    assert!(
        question.contains("Close the breaker of endpoint ep-browser"),
        "{question}"
    );
    browser.click("#confirm-ok").await;
    browser
        .wait_for_text("p.notice", "the close notice", |t| {
            t.contains("Breaker closed")
        })
        .await;
    browser.find("#no-breakers").await;
    assert!(!browser.has(breaker).await);
    let status = app
        .services
        .queue
        .group("webhooks", "ep-browser")
        .await
        .unwrap();
    assert!(status.breaker.is_none(), "{status:?}");
    browser.screenshot("15-groups-breaker-closed").await;

    // The group's page, from the Groups section.
    browser
        .click(&format!(
            "{row} a[href='/admin/queues/webhooks/groups/ep-browser']"
        ))
        .await;
    browser
        .wait_for_text("#group-state", "the group page", |t| t == "ready")
        .await;
    assert_eq!(browser.text("#group-waiting").await, "2");
    browser.find("table.jobs tbody tr").await;
    browser.screenshot("16-group-page").await;
    browser.close().await;
}
