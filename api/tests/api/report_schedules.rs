//! Report schedules over HTTP (`/api/v1/reports/schedules`, admins only): create, list, read,
//! change, pause and delete, each mirrored as the engine schedule `report:<id>`; input errors
//! in the one error shape naming the field; the reports a schedule made listed by
//! `GET /api/v1/reports?schedule_id=`; reconciliation of the engine with the rows; and a pause
//! from the dashboard going through the row.

use orderly::{
    queue::schedule::{CronSchedule, Recurrence, ScheduleView},
    reports::{ReportSchedule, ScheduledRun},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, hidden_field, spawn_app};

const SCHEDULES: &str = "/api/v1/reports/schedules";

fn weekly() -> Value {
    json!({"kind": "sales", "format": "csv", "cron": "0 6 * * MON",
           "timezone": "Europe/Berlin", "period": "previous_week"})
}

/// Creates a schedule as `token`, asserting 201; returns its JSON.
async fn create(app: &TestApp, token: &str, body: &Value) -> Value {
    let response = app.post_json(SCHEDULES, Some(token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{body}");
    response.json().await.unwrap()
}

/// An IANA time zone (as the engine's cron parser reads it).
fn zone(name: &str) -> impl chrono::TimeZone<Offset: std::fmt::Display> {
    CronSchedule::parse("0 0 * * *", name).unwrap().time_zone()
}

fn id_of(schedule: &Value) -> Uuid {
    schedule["id"].as_str().unwrap().parse().unwrap()
}

/// The engine's view of schedule `id`, if the engine has it.
async fn engine(app: &TestApp, id: Uuid) -> Option<ScheduleView> {
    let name = ReportSchedule::engine_name(id);
    app.services
        .schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.def.name == name)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn admins_manage_schedules_and_the_engine_mirrors_them(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let created = create(&app, &admin.token, &weekly()).await;
    let id = id_of(&created);
    assert_eq!(created["owner_id"], admin.id.to_string());
    assert_eq!(created["kind"], "sales");
    assert_eq!(created["format"], "csv");
    assert_eq!(created["cron"], "0 6 * * MON");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["period"], "previous_week");
    assert_eq!(created["paused"], false);
    assert_eq!(created["last_run_at"], Value::Null);
    assert_eq!(
        created["reports_url"],
        format!("/api/v1/reports?schedule_id={id}")
    );
    // The next run is a Monday at 06:00 in Berlin.
    let next: chrono::DateTime<chrono::Utc> =
        created["next_run_at"].as_str().unwrap().parse().unwrap();
    let local = next.with_timezone(&zone("Europe/Berlin"));
    assert_eq!(local.format("%a %H:%M").to_string(), "Mon 06:00");

    // Mirrored in the engine: its recurrence, and a `report.scheduled` job on `reports`.
    let mirrored = engine(&app, id).await.expect("defined in the engine");
    assert_eq!(
        mirrored.def.recurrence,
        Recurrence::cron("0 6 * * MON", "Europe/Berlin").unwrap()
    );
    assert_eq!(mirrored.def.job.queue, "reports");
    assert_eq!(mirrored.def.job.kind, "report.scheduled");
    assert_eq!(mirrored.def.job.payload, json!({"schedule_id": id}));
    assert!(!mirrored.paused);

    // Listed and read.
    let second = create(
        &app,
        &admin.token,
        &json!({"kind": "my_orders", "cron": "0 0 7 1 * *", "period": "previous_month"}),
    )
    .await;
    assert_eq!(second["timezone"], "UTC", "the default time zone");
    let list: Value = app
        .get(SCHEDULES, Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            second["id"].as_str().unwrap(),
            created["id"].as_str().unwrap()
        ]
    );
    let page: Value = app
        .get(&format!("{SCHEDULES}?limit=1"), Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], second["id"]);
    let read = app
        .get(&format!("{SCHEDULES}/{id}"), Some(&admin.token))
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["next_run_at"], created["next_run_at"]);

    // Paused: no next run, paused in the engine too.
    let path = format!("{SCHEDULES}/{id}");
    let paused = app
        .patch_json(&path, Some(&admin.token), &json!({"paused": true}))
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let paused: Value = paused.json().await.unwrap();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next_run_at"], Value::Null);
    assert!(engine(&app, id).await.unwrap().paused);

    // Resumed with a new expression, time zone and period: redefined in the engine.
    let changed = app
        .patch_json(
            &path,
            Some(&admin.token),
            &json!({"paused": false, "cron": "30 7 * * *", "timezone": "America/New_York",
                    "period": "previous_day"}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["paused"], false);
    assert_eq!(changed["period"], "previous_day");
    assert_eq!(changed["kind"], "sales", "unchanged fields stay");
    let next: chrono::DateTime<chrono::Utc> =
        changed["next_run_at"].as_str().unwrap().parse().unwrap();
    let local = next.with_timezone(&zone("America/New_York"));
    assert_eq!(local.format("%H:%M").to_string(), "07:30");
    let mirrored = engine(&app, id).await.unwrap();
    assert!(!mirrored.paused);
    assert_eq!(
        mirrored.def.recurrence,
        Recurrence::cron("30 7 * * *", "America/New_York").unwrap()
    );
    let stored: (String, String, String, bool) = sqlx::query_as(
        "select cron, time_zone, period, paused from report_schedules where id = $1",
    )
    .bind(id)
    .fetch_one(&app.services.db)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "30 7 * * *".into(),
            "America/New_York".into(),
            "previous_day".into(),
            false
        )
    );

    // Deleted: gone from the rows and from the engine.
    let deleted = app.delete(&path, Some(&admin.token)).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get(&path, Some(&admin.token)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.delete(&path, Some(&admin.token)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.patch_json(&path, Some(&admin.token), &json!({"paused": true}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(engine(&app, id).await.is_none());
    assert!(engine(&app, id_of(&second)).await.is_some());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn bad_input_is_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let with = |field: &str, value: &str| {
        let mut body = weekly();
        body[field] = json!(value);
        body
    };
    for (body, field) in [
        (with("cron", "0 6 * *"), "cron"),
        (with("cron", "0 25 * * *"), "cron"),
        (with("cron", "*/10 * * * *"), "cron"),
        (with("timezone", "Berlin/Nowhere"), "timezone"),
        (with("period", "fortnightly"), "period"),
        (with("kind", "everything"), "kind"),
        (with("format", "pdf"), "format"),
    ] {
        let response = app.post_json(SCHEDULES, Some(&admin.token), &body).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error["details"][0]["field"], field, "{body}: {error}");
    }
    let missing = app
        .post_json(SCHEDULES, Some(&admin.token), &json!({"kind": "sales"}))
        .await;
    assert_error(missing, StatusCode::UNPROCESSABLE_ENTITY).await;

    let id = id_of(&create(&app, &admin.token, &weekly()).await);
    let path = format!("{SCHEDULES}/{id}");
    for (body, field) in [
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"cron": "every monday"}), "cron"),
        (json!({"period": "yesterday"}), "period"),
    ] {
        let response = app.patch_json(&path, Some(&admin.token), &body).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error["details"][0]["field"], field, "{body}: {error}");
    }
    let unknown = app
        .patch_json(&path, Some(&admin.token), &json!({"owner_id": admin.id}))
        .await;
    assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Nothing changed.
    let read: Value = app
        .get(&path, Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["timezone"], "Europe/Berlin");
    assert_eq!(read["period"], "previous_week");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn customers_get_403_and_strangers_401(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let id = id_of(&create(&app, &admin.token, &weekly()).await);
    let path = format!("{SCHEDULES}/{id}");

    for token in [Some(customer.token.as_str()), None] {
        let status = if token.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_error(app.post_json(SCHEDULES, token, &weekly()).await, status).await;
        assert_error(app.get(SCHEDULES, token).await, status).await;
        assert_error(app.get(&path, token).await, status).await;
        assert_error(
            app.patch_json(&path, token, &json!({"paused": true})).await,
            status,
        )
        .await;
        assert_error(app.delete(&path, token).await, status).await;
    }
    assert!(!engine(&app, id).await.unwrap().paused, "nothing changed");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_reports_list_shows_a_schedules_reports_and_each_users_own(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let id = id_of(&create(&app, &admin.token, &weekly()).await);

    // Two runs of the schedule (the second run twice: still one report for it).
    let monday: chrono::DateTime<chrono::Utc> = "2026-03-30T04:00:00Z".parse().unwrap();
    let next_monday: chrono::DateTime<chrono::Utc> = "2026-04-06T04:00:00Z".parse().unwrap();
    let schedules = &app.services.report_schedules;
    for at in [monday, next_monday, next_monday] {
        schedules
            .run(id, ScheduledRun { at, manual: false })
            .await
            .unwrap();
    }
    // A report the customer asked for, and one the admin asked for.
    for token in [&customer.token, &admin.token] {
        let response = app
            .post_json(
                "/api/v1/reports",
                Some(token),
                &json!({"kind": "my_orders", "from": "2026-01-01", "to": "2026-01-31"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    let of_schedule: Value = app
        .get(
            &format!("/api/v1/reports?schedule_id={id}"),
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .unwrap();
    let items = of_schedule["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{of_schedule}");
    // Newest first; each a whole week in Berlin, Monday to Sunday.
    assert_eq!(
        (items[0]["from"].as_str(), items[0]["to"].as_str()),
        (Some("2026-03-30"), Some("2026-04-05"))
    );
    assert_eq!(
        (items[1]["from"].as_str(), items[1]["to"].as_str()),
        (Some("2026-03-23"), Some("2026-03-29"))
    );
    assert!(items.iter().all(|r| r["schedule_id"] == id.to_string()
        && r["kind"] == "sales"
        && r["status"] == "queued"));

    // Admins see every report; a customer only their own.
    let all: Value = app
        .get("/api/v1/reports", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    let own: Value = app
        .get("/api/v1/reports", Some(&customer.token))
        .await
        .json()
        .await
        .unwrap();
    let own = own["items"].as_array().unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["schedule_id"], Value::Null);
    let none: Value = app
        .get(
            &format!("/api/v1/reports?schedule_id={id}"),
            Some(&customer.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));

    // Paginated like every list.
    let first: Value = app
        .get("/api/v1/reports?limit=3", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest: Value = app
        .get(
            &format!("/api/v1/reports?limit=3&cursor={cursor}"),
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_error(
        app.get("/api/v1/reports?limit=0", Some(&admin.token)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(
        app.get("/api/v1/reports", None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn reconciliation_brings_the_engine_back_in_line_with_the_rows(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let kept = id_of(&create(&app, &admin.token, &weekly()).await);
    let paused = id_of(&create(&app, &admin.token, &weekly()).await);
    let services = &app.services;
    // Drift, as a crash between a row and the engine would leave it: one schedule missing from
    // the engine, one paused in its row only, and an engine schedule whose row is gone.
    services
        .schedules
        .remove(&ReportSchedule::engine_name(kept))
        .await
        .unwrap();
    sqlx::query("update report_schedules set paused = true where id = $1")
        .bind(paused)
        .execute(&services.db)
        .await
        .unwrap();
    let orphan = Uuid::now_v7();
    let mut def = engine(&app, paused).await.unwrap().def;
    def.name = ReportSchedule::engine_name(orphan);
    services.schedules.define(&def).await.unwrap();

    let done = services.report_schedules.reconcile().await.unwrap();
    assert_eq!((done.mirrored, done.removed), (2, 1));
    assert!(engine(&app, kept).await.is_some());
    assert!(engine(&app, paused).await.unwrap().paused);
    assert!(engine(&app, orphan).await.is_none());
    // In line now: a second pass changes nothing.
    let again = services.report_schedules.reconcile().await.unwrap();
    assert_eq!((again.mirrored, again.removed), (0, 0));
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn pausing_a_report_schedule_on_the_dashboard_pauses_its_row(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let id = id_of(&create(&app, &admin.token, &weekly()).await);
    let cookie = app.dashboard_session(&admin).await;
    let html = app
        .get_with_cookie("/admin/schedules", &cookie)
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&html, "csrf").unwrap();
    let name = ReportSchedule::engine_name(id);
    let pause = format!("/admin/schedules/{}/pause", name.replace(':', "%3A"));
    let done = app
        .post_form(
            &pause,
            &cookie,
            &[
                ("csrf", csrf.as_str()),
                ("confirmed", "yes"),
                ("return_to", "/admin/schedules"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let read: Value = app
        .get(&format!("{SCHEDULES}/{id}"), Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["paused"], true, "the row is paused");
    assert!(engine(&app, id).await.unwrap().paused);
    // So reconciliation keeps it paused.
    app.services.report_schedules.reconcile().await.unwrap();
    assert!(engine(&app, id).await.unwrap().paused);
}
