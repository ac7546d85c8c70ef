//! The dashboard over plain HTTP: who gets in (admins only, by cookie or bearer token), what
//! others get (a redirect, 401 or 403, never data), CSRF and confirmation on every action, and
//! the JSON read API.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{assert_error, hidden_field, set_cookie, set_cookie_header, spawn_app};

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn anonymous_visitors_are_sent_to_login_and_json_is_401(pool: PgPool) {
    let app = spawn_app(pool).await;

    let page = app.get("/admin/queues/emails?state=dead", None).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()["location"],
        "/admin/login?next=/admin/queues/emails%3Fstate%3Ddead"
    );

    for path in [
        "/admin/api/overview",
        "/admin/api/queues/emails/jobs?state=dead",
        "/admin/api/queues/emails/jobs/x",
    ] {
        let body = assert_error(app.get(path, None).await, StatusCode::UNAUTHORIZED).await;
        assert!(body.get("queues").is_none());
    }
    // An action without a session does nothing and goes to the login page.
    let action = app
        .post_form(
            "/admin/queues/emails/pause",
            "",
            &[("csrf", "x"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(action.status(), StatusCode::SEE_OTHER);
    assert!(!app.services.queue.counts("emails").await.unwrap().paused);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn customers_are_refused_everywhere(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = app.customer().await;

    // The login form refuses them and sets no session.
    let login = app
        .dashboard_login(&customer.email, &customer.password)
        .await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&login, "orderly_admin").is_none());
    assert!(login.text().await.unwrap().contains("not an administrator"));

    // A customer's own token, planted as the cookie or sent as a bearer header, gets 403.
    let cookie = format!("orderly_admin={}", customer.token);
    let page = app.get_with_cookie("/admin/queues", &cookie).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let html = page.text().await.unwrap();
    assert!(html.contains("Administrators only"));
    assert!(!html.contains("data-queue"), "no queue data for customers");
    assert_error(
        app.get_with_cookie("/admin/api/overview", &cookie).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get("/admin/api/overview", Some(&customer.token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get(
            "/admin/api/queues/emails/jobs?state=waiting",
            Some(&customer.token),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let action = app
        .post_form(
            "/admin/queues/emails/pause",
            &cookie,
            &[("csrf", "x"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(action.status(), StatusCode::FORBIDDEN);
    assert!(!app.services.queue.counts("emails").await.unwrap().paused);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn admin_login_sets_a_strict_http_only_cookie_scoped_to_admin(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;

    let wrong = app.dashboard_login(&admin.email, "not-the-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "orderly_admin").is_none());

    // A login post without the form's double-submit token is refused (login CSRF).
    let forged = app
        .client
        .post(app.url("/admin/login"))
        .form(&[
            ("email", admin.email.as_str()),
            ("password", admin.password.as_str()),
            ("csrf", "guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "orderly_admin").is_none());

    let login = app.dashboard_login(&admin.email, &admin.password).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/admin/queues");
    let header = set_cookie_header(&login, "orderly_admin").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(
            header.contains(attribute),
            "{attribute} missing in {header}"
        );
    }
    assert!(
        !header.contains("Secure"),
        "plain http here; Secure only behind https"
    );

    let cookie = format!(
        "orderly_admin={}",
        set_cookie(&login, "orderly_admin").unwrap()
    );
    let page = app.get_with_cookie("/admin/queues", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers().contains_key("server-timing"));
    let html = page.text().await.unwrap();
    for queue in orderly::jobs::QUEUES {
        assert!(
            html.contains(&format!("data-queue=\"{queue}\"")),
            "{queue} listed"
        );
    }

    // Logging out clears the cookie.
    let csrf = hidden_field(&html, "csrf").unwrap();
    let logout = app
        .post_form("/admin/logout", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie_header(&logout, "orderly_admin").unwrap();
    assert!(
        cleared.starts_with("orderly_admin=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn actions_need_the_csrf_token_the_same_origin_and_a_confirmation(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let dead = app.make_dead_email(admin.id).await;
    let cookie = app.dashboard_session(&admin).await;
    let job_path = format!("/admin/queues/emails/jobs/{dead}");
    let html = app
        .get_with_cookie(&job_path, &cookie)
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&html, "csrf").unwrap();
    let retry = format!("{job_path}/retry");
    let state = || async {
        app.services
            .queue
            .job("emails", &dead)
            .await
            .unwrap()
            .unwrap()
            .state
    };

    // No token, or another session's token: refused, nothing changes.
    for token in ["", "dGhpcyBpcyBub3QgdGhlIHRva2Vu"] {
        let response = app
            .post_form(&retry, &cookie, &[("csrf", token), ("confirmed", "yes")])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let other_session = app.dashboard_session(&admin).await;
    let response = app
        .post_form(
            &retry,
            &other_session,
            &[("csrf", &csrf), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the token is bound to its session"
    );
    assert_eq!(state().await, "dead");

    // A post that another site's page makes is refused even with a valid token.
    let cross_site = app
        .client
        .post(app.url(&retry))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("confirmed", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(state().await, "dead");

    // Without confirmation the server asks first.
    let ask = app
        .post_form(
            &retry,
            &cookie,
            &[("csrf", &csrf), ("return_to", &job_path)],
        )
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let question = ask.text().await.unwrap();
    assert!(
        question.contains("Please confirm")
            && question.contains("name=\"confirmed\" value=\"yes\"")
    );
    assert_eq!(state().await, "dead");

    // Confirmed: done, and back to the job page with a notice.
    let done = app
        .post_form(
            &retry,
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", &job_path),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers()["location"].to_str().unwrap(),
        format!("{job_path}?done=retry")
    );
    assert_eq!(state().await, "ready");

    // return_to cannot send the operator to another site.
    let pause = app
        .post_form(
            "/admin/queues/emails/pause",
            &cookie,
            &[
                ("csrf", &csrf),
                ("confirmed", "yes"),
                ("return_to", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(pause.status(), StatusCode::SEE_OTHER);
    assert_eq!(pause.headers()["location"], "/admin/queues?done=pause");
    assert!(app.services.queue.counts("emails").await.unwrap().paused);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn json_api_reads_queues_and_jobs_for_admins(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let dead = app.make_dead_email(admin.id).await;
    app.enqueue_welcome_email(admin.id, 2).await;

    let overview: Value = app
        .get("/admin/api/overview", Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    let emails = overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["counts"]["queue"] == "emails")
        .unwrap();
    assert_eq!(emails["counts"]["dead"], 1);
    assert!(emails["counts"]["waiting_by_priority"][2].as_u64().unwrap() >= 1);
    assert_eq!(emails["throughput"].as_array().unwrap().len(), 60);
    assert!(overview["outbox"]["pending"].is_u64());

    let page: Value = app
        .get(
            "/admin/api/queues/emails/jobs?state=dead",
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["jobs"][0]["id"], dead.as_str());

    let job: Value = app
        .get(
            &format!("/admin/api/queues/emails/jobs/{dead}"),
            Some(&admin.token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "dead");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["request_id"], "req-dashboard-test");
    assert_eq!(job["errors"].as_array().unwrap().len(), 2);

    assert_error(
        app.get("/admin/api/queues/nope/jobs?state=dead", Some(&admin.token))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.get(
            "/admin/api/queues/emails/jobs?state=lost",
            Some(&admin.token),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/admin/api/queues/emails/jobs/nope", Some(&admin.token))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
