//! A report's cancel and live events over HTTP (no worker runs: the build never starts, which is
//! what lets each test choose the moment): cancelling a queued report, the refusals in the one
//! error shape, an event stream that ends with the cancelled report, and the dashboard's cancel
//! action on the report's job, which cancels the report too.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, hidden_field, spawn_app};

async fn request_report(app: &TestApp, token: &str) -> String {
    let today = chrono::Utc::now().date_naive();
    let response = app
        .post_json(
            "/api/v1/reports",
            Some(token),
            &json!({"kind": "my_orders", "from": today, "to": today}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Reads server-sent events from `response` until the stream ends: `(event, id, data)`.
async fn all_events(mut response: reqwest::Response) -> Vec<(String, Option<String>, Value)> {
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("the stream goes on or ends")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.split("\n\n")
        .filter_map(|block| {
            let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (!data.is_empty()).then(|| (name, id, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_queued_report_is_cancelled_and_its_follower_sees_the_end(pool: PgPool) {
    let app = spawn_app(pool).await;
    let owner = app.customer().await;
    let id = request_report(&app, &owner.token).await;

    // A follower connected while it waits: the stream stays open until the cancel.
    let follower = app
        .client
        .get(app.url(&format!("/api/v1/reports/{id}/events")))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(follower.status(), StatusCode::OK);
    assert_eq!(
        follower.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = tokio::spawn(all_events(follower));

    // Strangers and the anonymous cannot cancel it.
    let stranger = app.customer().await;
    let path = format!("/api/v1/reports/{id}/cancel");
    assert_error(
        app.post_json(&path, Some(&stranger.token), &json!({}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.post_json(&path, None, &json!({})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let response = app.post_json(&path, Some(&owner.token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_string());

    let events = events.await.unwrap();
    let (name, _, report) = events.last().expect("a final event");
    assert_eq!(name, "cancelled", "{events:?}");
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["id"], id.as_str());

    // Over: a second cancel is refused in the one error shape, and a late follower gets the
    // end at once.
    let body = assert_error(
        app.post_json(&path, Some(&owner.token), &json!({})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    let late = app
        .client
        .get(app.url(&format!("/api/v1/reports/{id}/events")))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    let late = all_events(late).await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].0, "cancelled");
    assert_eq!(
        app.get(
            &format!("/api/v1/reports/{id}/download"),
            Some(&owner.token)
        )
        .await
        .status(),
        StatusCode::CONFLICT
    );
    app.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn events_of_someone_elses_report_are_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let owner = app.customer().await;
    let id = request_report(&app, &owner.token).await;
    let stranger = app.customer().await;
    assert_error(
        app.get(
            &format!("/api/v1/reports/{id}/events"),
            Some(&stranger.token),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn cancelling_a_report_job_on_the_dashboard_cancels_the_report(pool: PgPool) {
    let app = spawn_app(pool).await;
    let owner = app.customer().await;
    let id = request_report(&app, &owner.token).await;
    let job_id: uuid::Uuid = sqlx::query_scalar("select job_id from reports where id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.services.db)
        .await
        .unwrap();
    // The outbox pushes the job right after the request's commit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app
        .services
        .queue
        .job("reports", &job_id.to_string())
        .await
        .unwrap()
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "the job was pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let job_page = format!("/admin/queues/reports/jobs/{job_id}");
    // The template escapes `/` in attribute values.
    let html = app
        .get_with_cookie(&job_page, &cookie)
        .await
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        html.contains(&format!("{job_page}/cancel")),
        "the waiting job offers Cancel"
    );
    let csrf = hidden_field(&html, "csrf").unwrap();
    let response = app
        .post_form(
            &format!("{job_page}/cancel"),
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", &job_page),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let job = app
        .services
        .queue
        .job("reports", &job_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, "cancelled");
    assert!(job.cancel_reason.unwrap().contains("dashboard"));
    let report: Value = app
        .get(&format!("/api/v1/reports/{id}"), Some(&owner.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "cancelled", "{report}");
    let page = app
        .get_with_cookie(&job_page, &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("state-cancelled"), "the job page shows it");
    app.stop().await;
}
