//! Two api instances behind a real HAProxy (round robin, health-checked) and three workers, on
//! one database and one Redis prefix: clients see one shop whichever instance answers. Rate
//! limits are one budget (`RATE_LIMIT_STORE=redis`), an edit through one instance is read
//! through the other at once, an idempotent retry landing on the other instance replays the first
//! response byte for byte, a dashboard session works through either, and orders spread over
//! both instances each get their confirmation from whichever worker took the job.

use std::{collections::HashMap, time::Duration};

use orderly::testing::Haproxy;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, eventually, new_key, order_body, spawn_app_with, unique_prefix};

/// Two instances of the api on one database and one Redis prefix, with `overrides`.
async fn two_instances(pool: &PgPool, overrides: &[(&str, &str)]) -> (TestApp, TestApp) {
    let prefix = unique_prefix();
    let mut settings = vec![("REDIS_PREFIX", prefix.as_str())];
    settings.extend_from_slice(overrides);
    let first = spawn_app_with(pool.clone(), &settings).await;
    let second = spawn_app_with(pool.clone(), &settings).await;
    (first, second)
}

fn port_of(app: &TestApp) -> u16 {
    app.address.rsplit(':').next().unwrap().parse().unwrap()
}

fn served_by(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn two_instances_behind_haproxy_share_one_rate_limit_budget(pool: PgPool) {
    let (first, second) = two_instances(
        &pool,
        &[
            ("RATE_LIMIT_STORE", "redis"),
            ("RATE_LIMIT_PER_MINUTE", "6"),
            ("RATE_LIMIT_BURST", "10"),
        ],
    )
    .await;
    let balancer = Haproxy::start(&[port_of(&first), port_of(&second)]);
    let customer = first.customer().await;

    let client = reqwest::Client::new();
    let mut allowed = 0;
    let mut instances = HashMap::<String, usize>::new();
    for _ in 0..30 {
        let response = client
            .get(format!("{}/api/v1/products", balancer.url()))
            .bearer_auth(&customer.token)
            .send()
            .await
            .unwrap();
        *instances.entry(served_by(&response)).or_default() += 1;
        match response.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        instances.get("api1").copied().unwrap_or(0) + instances.get("api2").copied().unwrap_or(0),
        30,
        "both instances answered, alternately: {instances:?}"
    );
    assert_eq!(instances.get("api1"), Some(&15), "{instances:?}");
    // One budget of 10 (plus at most one refilled at 6 a minute), not 10 per instance.
    assert!(
        (10..=11).contains(&allowed),
        "{allowed} of 30 requests allowed across both instances"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn two_instances_behind_haproxy_act_as_one_shop(pool: PgPool) {
    let (first, second) = two_instances(&pool, &[]).await;
    let balancer = Haproxy::start(&[port_of(&first), port_of(&second)]);
    let admin = first.admin().await;
    let customer = second.customer().await;
    let product = first.create_product(&admin, 1200, 1000).await;
    let product_id = product["id"].as_str().unwrap().to_owned();

    // An edit through one instance is what the other serves at once (its near cache is told).
    let before = second
        .get(&format!("/api/v1/products/{product_id}"), None)
        .await;
    assert_eq!(before.json::<Value>().await.unwrap()["price_cents"], 1200);
    let edited = first
        .patch_json(
            &format!("/api/v1/products/{product_id}"),
            Some(&admin.token),
            &json!({"price_cents": 1500}),
        )
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let after = second
        .get(&format!("/api/v1/products/{product_id}"), None)
        .await;
    assert_eq!(
        after.json::<Value>().await.unwrap()["price_cents"],
        1500,
        "the other instance serves the edit at once"
    );

    // An idempotent retry landing on the other instance replays the first answer exactly.
    let key = new_key();
    let placed = first
        .place_order(&customer.token, &key, &order_body(&product_id, 1))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed_body = placed.bytes().await.unwrap();
    let replayed = second
        .place_order(&customer.token, &key, &order_body(&product_id, 1))
        .await;
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(
        replayed
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(
        replayed.bytes().await.unwrap(),
        placed_body,
        "byte for byte"
    );

    // A dashboard session signed in through one instance works through the other, and
    // through the balancer whichever instance answers.
    let session = first.dashboard_session(&admin).await;
    let page = second.get_with_cookie("/admin/queues", &session).await;
    assert_eq!(page.status(), StatusCode::OK);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut dashboard_servers = Vec::new();
    for _ in 0..2 {
        let page = client
            .get(format!("{}/admin/queues", balancer.url()))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        dashboard_servers.push(served_by(&page));
    }
    dashboard_servers.sort();
    assert_eq!(dashboard_servers, ["api1", "api2"]);

    // Orders through the balancer land on both instances; three workers send every
    // confirmation exactly once.
    let workers = [
        first.start_worker(&["emails"]).await,
        second.start_worker(&["emails"]).await,
        first.start_worker(&["emails"]).await,
    ];
    let mut per_instance = HashMap::<String, usize>::new();
    for _ in 0..40 {
        let response = client
            .post(format!("{}/api/v1/orders", balancer.url()))
            .bearer_auth(&customer.token)
            .header("Idempotency-Key", new_key())
            .json(&order_body(&product_id, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        *per_instance.entry(served_by(&response)).or_default() += 1;
    }
    assert_eq!(per_instance.get("api1"), Some(&20), "{per_instance:?}");
    assert_eq!(per_instance.get("api2"), Some(&20), "{per_instance:?}");
    assert_eq!(first.order_count().await, 41);
    eventually(
        "a confirmation for each of the 41 orders",
        Duration::from_secs(60),
        || async {
            let sent: i64 = sqlx::query_scalar(
                "select count(*) from sent_emails where kind = 'email.order_confirmation'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (sent == 41).then_some(())
        },
    )
    .await;
    assert_eq!(first.stock_of(&product_id).await, 1000 - 41);
    for worker in workers {
        worker.stop().await;
    }
}
