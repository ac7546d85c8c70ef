//! The dashboard end to end in headless Chromium: an admin signs in, sees queues with jobs,
//! opens a dead job, retries it and watches it complete, pauses and resumes a queue, pauses a
//! schedule; the overview follows the queues over one Server-Sent Events stream (no polling),
//! closed while live updates are off; a customer is refused. Screenshots land in the artifacts
//! folder (see `browser::artifacts_dir`), with the measured cost of a page load.

use std::time::Duration;

use sqlx::PgPool;

use crate::{
    browser::{Browser, artifacts_dir},
    helpers::{eventually, spawn_app},
};

/// Size and server time of the page now shown, from the browser's Navigation Timing.
const PAGE_COST: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource').map(r => ({
  name: new URL(r.name).pathname, transferSize: r.transferSize, decodedBodySize: r.decodedBodySize,
}));
return {
  url: location.pathname,
  transferSize: nav.transferSize, encodedBodySize: nav.encodedBodySize, decodedBodySize: nav.decodedBodySize,
  serverTimingMs: nav.serverTiming.filter(s => s.name === 'app').map(s => s.duration)[0],
  responseMs: nav.responseEnd - nav.requestStart, domContentLoadedMs: nav.domContentLoadedEventEnd,
  resources,
};
"#;

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn admin_watches_retries_and_pauses_in_the_browser(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;

    // Arrange: emails waiting at two priorities, one dead email with two failed attempts, a
    // report waiting (no worker serves reports in this test), a scheduled webhook.
    let dead = app.make_dead_email(customer.id).await;
    for priority in [2, 5, 5] {
        app.enqueue_welcome_email(customer.id, priority).await;
    }
    let report = orderly::queue::JobSpec::new(
        "reports",
        "report.build",
        serde_json::json!({"report_id": uuid::Uuid::now_v7()}),
    );
    app.services.producer.enqueue(report).await.unwrap();
    let webhook = orderly::queue::JobSpec::new(
        "webhooks",
        "webhook.deliver",
        serde_json::json!({"delivery_id": uuid::Uuid::now_v7()}),
    )
    .delay(Duration::from_secs(3600));
    app.services.producer.enqueue(webhook).await.unwrap();
    // A nightly schedule (it does not tick during the test).
    let schedule = "maintenance:nightly_purge";
    app.services
        .schedules
        .define(&orderly::queue::schedule::ScheduleDef {
            name: schedule.to_owned(),
            recurrence: orderly::queue::schedule::Recurrence::cron("0 3 * * *", "Europe/Berlin")
                .unwrap(),
            job: orderly::queue::Job::spec(
                &orderly::jobs::MaintenanceJob::PurgeIdempotencyKeys,
                &orderly::jobs::JobSettings::default(),
            )
            .unwrap(),
            missed: orderly::queue::schedule::Missed::RunOnce,
        })
        .await
        .unwrap();

    let browser = Browser::start().await;

    // Signing in: a page load without a session lands on the login form.
    browser.goto(&app.url("/admin/queues")).await;
    assert!(browser.path().await.starts_with("/admin/login"));
    browser.screenshot("01-login").await;
    browser.sign_in(&admin.email, &admin.password).await;
    browser.find("tr[data-queue='emails']").await;
    assert_eq!(browser.path().await, "/admin/queues");

    // The overview shows the queue with its jobs.
    let waiting = browser
        .wait_for_text(
            "tr[data-queue='emails'] td[data-field='waiting']",
            "4 emails waiting",
            |t| t == "4",
        )
        .await;
    assert_eq!(waiting, "4");
    assert_eq!(
        browser
            .text("tr[data-queue='emails'] td[data-field='dead']")
            .await,
        "1"
    );
    assert!(
        browser
            .text("tr[data-queue='emails'] td.prio")
            .await
            .contains("p2 1")
    );
    assert_eq!(
        browser
            .text("tr[data-queue='webhooks'] td[data-field='scheduled']")
            .await,
        "1"
    );
    let cost = browser.run(PAGE_COST).await;
    browser.screenshot("02-overview-waiting").await;

    // A worker starts: the open page updates itself (no reload) until the emails are done.
    let worker = app.start_worker(&["emails"]).await;
    browser
        .wait_for_text(
            "tr[data-queue='emails'] td[data-field='waiting']",
            "emails processed live",
            |t| t == "0",
        )
        .await;
    browser
        .wait_for_text(
            "tr[data-queue='emails'] td[data-field='workers']",
            "the worker listed",
            |t| t == "1",
        )
        .await;
    browser.find("table.workers tbody tr").await;
    browser.screenshot("03-overview-worker").await;

    // The dead job: from the dead list to its detail page.
    browser
        .goto(&app.url("/admin/queues/emails?state=dead"))
        .await;
    browser.click(&format!("tr[data-job='{dead}'] a")).await;
    assert_eq!(
        browser.path().await,
        format!("/admin/queues/emails/jobs/{dead}")
    );
    assert_eq!(browser.text("#job-state").await, "dead");
    assert_eq!(browser.text("#job-attempts").await, "2 / 5");
    let page = browser.text("main").await;
    assert!(
        page.contains("SMTP 554 5.7.1 message rejected as spam"),
        "last error shown"
    );
    assert!(
        page.contains("SMTP 451 4.3.0 mailbox temporarily unavailable"),
        "every failed attempt shown"
    );
    assert!(page.contains("req-dashboard-test"), "request id shown");
    assert!(page.contains(&customer.id.to_string()), "payload shown");
    browser.screenshot("04-dead-job").await;

    // Retry, with confirmation, then watch it complete.
    browser.click("form.action[action$='/retry'] button").await;
    let question = browser
        .wait_for_text("#confirm-question", "the confirmation dialog", |t| {
            !t.is_empty()
        })
        .await;
    assert!(question.contains("Retry dead job"), "{question}");
    browser.screenshot("05-confirm-retry").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for_text("p.notice", "the retry notice", |t| {
            t.contains("another run")
        })
        .await;
    browser
        .wait_for_text("#job-state", "the retried job to complete", |t| {
            t == "completed"
        })
        .await;
    browser.screenshot("06-job-completed").await;

    // Pause the queue: a new job stays waiting, no worker claims it.
    browser.goto(&app.url("/admin/queues/emails")).await;
    browser
        .click("form.action[action$='/emails/pause'] button")
        .await;
    browser.click("#confirm-ok").await;
    browser.find("#queue-paused").await;
    assert!(app.services.queue.counts("emails").await.unwrap().paused);
    let held = app.enqueue_welcome_email(customer.id, 5).await;
    browser
        .wait_for_text(
            ".stats dd[data-field='waiting']",
            "the new job waiting",
            |t| t == "1",
        )
        .await;
    // Wake the worker explicitly (as an enqueue does) and check it still does not claim.
    let claimed_while_paused = app
        .services
        .queue
        .claim("emails", "probe", 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        claimed_while_paused.jobs.is_empty(),
        "a paused queue hands out no job"
    );
    assert_eq!(
        app.services
            .queue
            .job("emails", &held)
            .await
            .unwrap()
            .unwrap()
            .state,
        "ready"
    );
    browser.screenshot("07-queue-paused").await;

    // Resume: the held job runs.
    browser
        .click("form.action[action$='/emails/resume'] button")
        .await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for_text("p.notice", "the resume notice", |t| t.contains("resumed"))
        .await;
    assert!(!browser.has("#queue-paused").await);
    eventually(
        "the held job to complete",
        Duration::from_secs(60),
        || async {
            let job = app.services.queue.job("emails", &held).await.unwrap()?;
            (job.state == "completed").then_some(())
        },
    )
    .await;
    browser
        .goto(&app.url("/admin/queues/emails?state=completed"))
        .await;
    browser.find(&format!("tr[data-job='{held}']")).await;
    browser.screenshot("08-queue-completed").await;

    // Keyboard: "/" focuses the job search; searching an id opens the job.
    browser.goto(&app.url("/admin/queues")).await;
    browser.find("tr[data-queue='emails']").await;
    browser.press_key('/').await;
    let focused = browser.run("return document.activeElement.id").await;
    assert_eq!(focused, "search-id");
    browser
        .find("#search-id")
        .await
        .send_keys(&format!("{held}\u{E007}"))
        .await
        .unwrap();
    browser
        .wait_for_text("#job-state", "search to open the job", |t| t == "completed")
        .await;
    browser.goto(&app.url("/admin/queues")).await;
    browser.find("tr[data-queue='emails']").await;
    browser.screenshot("09-overview-final").await;

    // Schedules: from the navigation, pause one through the dialog and see it paused.
    browser.click("nav a[href='/admin/schedules']").await;
    let row = format!("tr[data-schedule='{schedule}']");
    assert!(
        browser
            .text(&format!("{row} td[data-field='next'] time"))
            .await
            .contains("UTC")
    );
    browser
        .click(&format!("{row} form.action[action$='/pause'] button"))
        .await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for_text("p.notice", "the schedule pause notice", |t| {
            t.contains("Schedule paused")
        })
        .await;
    browser.find(&format!("{row} .badge.paused")).await;
    assert!(
        !browser
            .has(&format!("{row} td[data-field='next'] time"))
            .await
    );
    browser.screenshot("12-schedules").await;

    std::fs::write(
        artifacts_dir().join("page-load.json"),
        serde_json::to_vec_pretty(&cost).unwrap(),
    )
    .unwrap();
    eprintln!("overview page load: {cost}");
    browser.close().await;
    worker.stop().await;
}

/// The requests this page made for its live part directly (`?live=1`: the polling fallback);
/// the stream's URL carries the page only as a parameter.
const LIVE_REQUESTS: &str = r#"
const urls = performance.getEntriesByType('resource').map(r => new URL(r.name));
return { polled: urls.filter(u => u.searchParams.get('live') === '1').map(u => u.pathname + u.search) };
"#;

/// Waits, if need be, until the current minute has at least `room` left.
async fn minute_with_room(room: Duration) {
    let into_minute = Duration::from_millis(
        u64::try_from(chrono::Utc::now().timestamp_millis().rem_euclid(60_000)).unwrap_or(0),
    );
    let left = Duration::from_secs(60).saturating_sub(into_minute);
    if left < room {
        tokio::time::sleep(left + Duration::from_millis(500)).await;
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_overview_updates_over_one_stream_in_the_browser(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/admin/queues")).await;
    browser.sign_in(&admin.email, &admin.password).await;
    browser.find("tr[data-queue='emails']").await;
    // The throughput chart moves on every minute, a change the stream sends: the next steps
    // compare the page with what the stream sends, within one minute.
    minute_with_room(Duration::from_secs(15)).await;
    browser.goto(&app.url("/admin/queues")).await;
    // (Texts are read with `wait_for_text`: a live update can replace an element between
    // finding it and reading it.)
    let scheduled = "tr[data-queue='webhooks'] td[data-field='scheduled']";
    browser
        .wait_for_text(scheduled, "the overview", |t| t == "0")
        .await;
    browser
        .wait_for_text("#live-status", "the stream open", |t| t == "live")
        .await;
    // A mark on this document: it is gone if the page reloads.
    browser
        .run("window.orderlyMark = 'still here'; return null")
        .await;
    // A stream that opens on a page already showing its content leaves the live part alone:
    // paused, the live part's element marked, resumed (a new stream): the mark stays.
    browser.click("#live-toggle").await;
    browser
        .wait_for_text("#live-status", "live updates paused", |t| t == "paused")
        .await;
    let mark = format!("document.querySelector(\"{scheduled}\").orderlyMark");
    browser.run(&format!("{mark} = 1; return null")).await;
    browser.click("#live-toggle").await;
    browser
        .wait_for_text("#live-status", "the stream open again", |t| t == "live")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        browser.run(&format!("return {mark} === 1")).await,
        true,
        "the first fragment, unchanged, was not swapped in"
    );

    // A job enqueued elsewhere: the open page shows it, pushed by the server.
    let webhook = orderly::queue::JobSpec::new(
        "webhooks",
        "webhook.deliver",
        serde_json::json!({"delivery_id": uuid::Uuid::now_v7()}),
    )
    .delay(Duration::from_secs(3600));
    app.services.producer.enqueue(webhook).await.unwrap();
    browser
        .wait_for_text(scheduled, "the new job counted live", |t| t == "1")
        .await;
    assert_eq!(browser.run("return window.orderlyMark").await, "still here");
    browser
        .wait_for_text("#live-status", "the stream still open", |t| t == "live")
        .await;
    // Well past the old polling period: not one request for a live part, only the stream.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let requests = browser.run(LIVE_REQUESTS).await;
    assert_eq!(requests["polled"], serde_json::json!([]), "{requests}");
    browser.screenshot("13-overview-streamed").await;

    // Live updates off: the stream closes and the page stays as it is.
    browser.click("#live-toggle").await;
    browser
        .wait_for_text("#live-status", "live updates paused", |t| t == "paused")
        .await;
    app.services
        .producer
        .enqueue(
            orderly::queue::JobSpec::new(
                "webhooks",
                "webhook.deliver",
                serde_json::json!({"delivery_id": uuid::Uuid::now_v7()}),
            )
            .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser
        .wait_for_text(scheduled, "the paused page unchanged", |t| t == "1")
        .await;
    // On again: the stream reopens and brings the page up to date.
    browser.click("#live-toggle").await;
    browser
        .wait_for_text(scheduled, "the page caught up", |t| t == "2")
        .await;
    let requests = browser.run(LIVE_REQUESTS).await;
    assert_eq!(requests["polled"], serde_json::json!([]), "{requests}");
    browser.close().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn customers_are_refused_in_the_browser(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;
    app.enqueue_welcome_email(customer.id, 5).await;
    let browser = Browser::start().await;

    browser.goto(&app.url("/admin/login")).await;
    browser.fill("#email", &customer.email).await;
    browser.fill("#password", &customer.password).await;
    browser.click("#sign-in").await;
    let error = browser
        .wait_for_text("#login-error", "the refusal", |t| !t.is_empty())
        .await;
    assert!(error.contains("not an administrator"), "{error}");
    browser.screenshot("10-customer-refused").await;

    // Even with their own valid token planted as the session cookie: 403, no queue data.
    // (Set from the page: a script may write a cookie, only not read an HttpOnly one.)
    browser
        .run(&format!(
            "document.cookie = 'orderly_admin={}; path=/admin; samesite=strict'",
            customer.token
        ))
        .await;
    browser.goto(&app.url("/admin/queues")).await;
    assert_eq!(browser.text("#error-title").await, "Administrators only");
    assert!(!browser.has("tr[data-queue]").await);
    browser.screenshot("11-customer-forbidden").await;
    // Signing out from there clears the cookie.
    browser.click("#sign-out").await;
    browser.find("#sign-in").await;
    browser.close().await;
}
