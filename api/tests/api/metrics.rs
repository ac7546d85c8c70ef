//! `/metrics` on the api and on a worker: the scrape is valid Prometheus text, the numbers
//! move when jobs run, cache reads are counted by the tier that answered them, an order's
//! stages are timed, and per-group series stay bounded (the ten largest backlogs named, the
//! rest summed). (nextest runs every test in a process of its own, so the process-wide recorder
//! holds only this test's numbers.)

use std::{collections::HashMap, time::Duration};

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{eventually, new_key, order_body, spawn_app, spawn_app_with};

/// One scrape, parsed: `name{labels}` (labels sorted) → value. Panics on any line that is not
/// valid text exposition format, and on samples whose metric has no `# TYPE`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("TYPE names a metric");
            let kind = parts.next().expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels: Vec<&str> = if body.is_empty() {
                    Vec::new()
                } else {
                    split_labels(body)
                };
                for label in &labels {
                    let (key, quoted) = label
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "label name in {line:?}"
                    );
                    assert!(
                        quoted.starts_with('"') && quoted.ends_with('"'),
                        "label value in {line:?}"
                    );
                }
                labels.sort_unstable();
                (name, format!("{{{}}}", labels.join(",")))
            }
            None => (series, String::new()),
        };
        assert!(name.starts_with("orderly_"), "unprefixed metric {name}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.contains(*base))
            })
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE line");
        samples.insert(format!("{name}{labels}"), value);
    }
    samples
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

async fn scrape(client: &reqwest::Client, url: &str) -> HashMap<String, f64> {
    let response = client.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse(&response.text().await.unwrap())
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn scrapes_parse_and_move_when_jobs_run(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let metrics_url = app.url("/metrics");

    // Three emails waiting at priority 5 and one dead, no worker yet.
    let dead = app.make_dead_email(admin.id).await;
    for _ in 0..3 {
        app.enqueue_welcome_email(admin.id, 5).await;
    }
    let before = scrape(&app.client, &metrics_url).await;
    let waiting_p5 = r#"orderly_queue_jobs{priority="5",queue="emails",state="waiting"}"#;
    assert!(value(&before, waiting_p5) >= 3.0, "3 waiting at priority 5");
    assert_eq!(
        value(
            &before,
            r#"orderly_queue_jobs{priority="all",queue="emails",state="dead"}"#
        ),
        1.0
    );
    assert!(before.contains_key(r#"orderly_queue_oldest_waiting_seconds{queue="emails"}"#));
    assert_eq!(
        value(&before, r#"orderly_workers_live{queue="emails"}"#),
        0.0
    );
    assert!(before.contains_key("orderly_outbox_pending"));

    // A customer's registration goes through the outbox: the dispatch lag is recorded.
    app.customer().await;
    let worker = app.start_worker(&["emails"]).await;
    app.services
        .queue
        .retry_dead("emails", &dead)
        .await
        .unwrap();

    // Wait until the worker has run everything (4 emails + the registration's welcome email).
    eventually("emails to complete", Duration::from_secs(60), || async {
        let counts = app.services.queue.counts("emails").await.unwrap();
        (counts.waiting == 0 && counts.active == 0 && counts.completed >= 5).then_some(())
    })
    .await;
    // Heartbeats come every few seconds: wait for the first to be visible.
    let after = eventually(
        "the worker's heartbeat",
        Duration::from_secs(30),
        || async {
            let samples = scrape(&app.client, &metrics_url).await;
            (value(&samples, r#"orderly_workers_live{queue="emails"}"#) == 1.0).then_some(samples)
        },
    )
    .await;

    assert_eq!(value(&after, waiting_p5), 0.0, "queue depth went down");
    assert_eq!(
        value(
            &after,
            r#"orderly_queue_jobs{priority="all",queue="emails",state="dead"}"#
        ),
        0.0
    );
    assert!(
        value(
            &after,
            r#"orderly_queue_jobs{priority="all",queue="emails",state="completed"}"#
        ) >= 5.0
    );
    assert_eq!(
        value(
            &after,
            r#"orderly_queue_oldest_waiting_seconds{queue="emails"}"#
        ),
        0.0
    );
    let completed =
        r#"orderly_jobs_total{kind="email.welcome",outcome="completed",queue="emails"}"#;
    assert!(
        value(&after, completed) >= 5.0,
        "job outcomes counted: {}",
        value(&after, completed)
    );
    assert!(
        value(
            &after,
            r#"orderly_job_duration_seconds_count{kind="email.welcome",outcome="completed",queue="emails"}"#
        ) >= 5.0
    );
    assert!(
        value(
            &after,
            r#"orderly_outbox_dispatch_lag_seconds_count{path="commit"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            r#"orderly_http_requests_total{method="GET",route="/metrics",status="200"}"#
        ) >= 1.0,
        "HTTP requests counted by route and status"
    );

    // The worker's own endpoint: liveness and the same job counters.
    let from_worker = scrape(&app.client, &format!("{}/metrics", worker.metrics_address)).await;
    let up: Vec<f64> = from_worker
        .iter()
        .filter(|(series, _)| series.starts_with("orderly_worker_up{"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(up, [1.0], "one live worker process");
    assert!(value(&from_worker, completed) >= 5.0);
    assert!(
        from_worker
            .contains_key(r#"orderly_queue_jobs{priority="5",queue="emails",state="waiting"}"#)
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn retries_and_dead_jobs_are_counted_by_kind(pool: PgPool) {
    // Nothing listens on port 1: every email send fails and is retried with backoff.
    let app = spawn_app_with(pool, &[("SMTP_URL", "smtp://127.0.0.1:1")]).await;
    let admin = app.admin().await;
    app.enqueue_welcome_email(admin.id, 5).await;
    // A payload no handler can read dies at once.
    let broken = orderly::queue::JobSpec::new(
        "emails",
        "email.broken",
        serde_json::json!({"type": "no_such_email"}),
    );
    app.services.producer.enqueue(broken).await.unwrap();

    let worker = app.start_worker(&["emails"]).await;
    let retried = r#"orderly_job_retries_total{kind="email.welcome",queue="emails"}"#;
    let samples = eventually(
        "a retry and a dead job to be counted",
        Duration::from_secs(60),
        || async {
            let samples = scrape(&app.client, &app.url("/metrics")).await;
            // The gauges are read at scrape time and the counters when jobs end: wait for both.
            (value(&samples, retried) >= 1.0
                && value(
                    &samples,
                    r#"orderly_jobs_total{kind="email.broken",outcome="dead",queue="emails"}"#,
                ) == 1.0
                && value(
                    &samples,
                    r#"orderly_queue_jobs{priority="all",queue="emails",state="dead"}"#,
                ) >= 1.0)
                .then_some(samples)
        },
    )
    .await;
    assert!(
        value(
            &samples,
            r#"orderly_jobs_total{kind="email.welcome",outcome="retried",queue="emails"}"#
        ) >= 1.0
    );
    worker.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn cache_reads_are_counted_by_where_they_were_answered(pool: PgPool) {
    let app = spawn_app(pool).await;
    let cache = app.services.cache.clone();
    eventually(
        "the near cache tracks Redis",
        Duration::from_secs(10),
        || std::future::ready(cache.near_is_live().then_some(())),
    )
    .await;
    let admin = app.admin().await;
    let created: serde_json::Value = app
        .create_product_with(
            &admin,
            &serde_json::json!({"sku": "METRIC-1", "name": "Counted", "price_cents": 100,
                "currency": "EUR", "stock": 1}),
        )
        .await;
    let path = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    // Creating it stored it in Redis: Redis, then the near cache, twice.
    for _ in 0..3 {
        assert_eq!(app.get(&path, None).await.status(), StatusCode::OK);
    }
    // A product nobody created: a miss, then PostgreSQL.
    let unknown = format!("/api/v1/products/{}", uuid::Uuid::now_v7());
    assert_eq!(
        app.get(&unknown, None).await.status(),
        StatusCode::NOT_FOUND
    );
    let samples = scrape(&app.client, &app.url("/metrics")).await;
    assert_eq!(value(&samples, "orderly_cache_near_live"), 1.0);
    assert!(value(&samples, r#"orderly_cache_reads_total{tier="miss"}"#) >= 1.0);
    assert!(value(&samples, r#"orderly_cache_reads_total{tier="redis"}"#) >= 1.0);
    assert!(value(&samples, r#"orderly_cache_reads_total{tier="near"}"#) >= 2.0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_orders_stages_are_timed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product: serde_json::Value = app
        .create_product_with(
            &admin,
            &serde_json::json!({"sku": "STAGES-1", "name": "Timed", "price_cents": 100,
                "currency": "EUR", "stock": 10}),
        )
        .await;
    let product_id = product["id"].as_str().unwrap();
    for _ in 0..2 {
        let placed = app
            .place_order(&customer.token, &new_key(), &order_body(product_id, 1))
            .await;
        assert_eq!(placed.status(), StatusCode::CREATED);
    }
    // Refused for want of stock: its stages are not an order's.
    let refused = app
        .place_order(&customer.token, &new_key(), &order_body(product_id, 100))
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);

    let samples = scrape(&app.client, &app.url("/metrics")).await;
    let count = |series: &str| value(&samples, series);
    // Every order is priced, refused or not; only placed ones are written and read back.
    assert_eq!(
        count(r#"orderly_order_stage_seconds_count{stage="quote"}"#),
        3.0
    );
    for stage in ["write", "stock_read"] {
        let series = format!(r#"orderly_order_stage_seconds_count{{stage="{stage}"}}"#);
        assert_eq!(count(&series), 2.0, "{series}");
        let sum = format!(r#"orderly_order_stage_seconds_sum{{stage="{stage}"}}"#);
        assert!(count(&sum) > 0.0, "{sum}");
    }
    // Orders of one product go through the group commit (on by default): each waited in its
    // line, and each of its statements was timed, the refused order's (which failed) too.
    let statements = count(r#"orderly_group_commit_statements_total{outcome="committed"}"#)
        + count(r#"orderly_group_commit_statements_total{outcome="failed"}"#);
    assert_eq!(statements, 3.0);
    // Both per order.
    assert_eq!(count("orderly_group_commit_wait_seconds_count"), 3.0);
    assert_eq!(count("orderly_group_commit_statement_seconds_count"), 3.0);
    assert!(count("orderly_group_commit_statement_seconds_sum") > 0.0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn queue_limits_show_in_metrics_and_on_the_dashboard(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("QUEUE_RATE_LIMITS", "emails=40/s,webhooks=600/m"),
            ("QUEUE_CONCURRENCY_LIMITS", "reports=2"),
        ],
    )
    .await;
    let samples = scrape(&app.client, &app.url("/metrics")).await;
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_rate_limit_per_second{queue="emails"}"#
        ),
        40.0
    );
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_rate_limit_per_second{queue="webhooks"}"#
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_concurrency_limit{queue="reports"}"#
        ),
        2.0
    );
    assert!(!samples.contains_key(r#"orderly_queue_concurrency_limit{queue="emails"}"#));

    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let overview = app
        .get_with_cookie("/admin/queues", &cookie)
        .await
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(overview.contains("at most 40/s"), "{overview}");
    assert!(overview.contains("at most 2 running"));
    app.stop().await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn group_series_name_the_ten_largest_backlogs_and_sum_the_rest(pool: PgPool) {
    let app = spawn_app(pool).await;
    let engine = &app.services.queue;
    // Twelve groups on the webhooks queue, g01 with 2 waiting jobs up to g12 with 24 (even
    // backlogs: taking one job below makes no tie): 156 jobs.
    for i in 1..=12 {
        app.enqueue_grouped_webhooks(&format!("g{i:02}"), 2 * i)
            .await;
    }
    // One job runs (claims rotate between groups: whichever group is first in turn).
    let claim = engine
        .claim("webhooks", "test-claimer", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let running = engine
        .job("webhooks", &claim.jobs[0].id)
        .await
        .unwrap()
        .unwrap()
        .group
        .unwrap();

    let samples = scrape(&app.client, &app.url("/metrics")).await;
    let group_series = |samples: &HashMap<String, f64>, name: &str| -> Vec<String> {
        samples
            .keys()
            .filter(|s| s.starts_with(&format!("{name}{{")) && s.contains("queue=\"webhooks\""))
            .cloned()
            .collect()
    };
    assert_eq!(
        group_series(&samples, "orderly_queue_group_waiting").len(),
        11,
        "10 named groups and _other"
    );
    assert_eq!(
        group_series(&samples, "orderly_queue_group_running").len(),
        10
    );
    // What the engine holds, largest backlog first: the expected series.
    let mut backlogs: Vec<(String, u64)> = (1..=12u64)
        .map(|i| {
            let key = format!("g{i:02}");
            let n = 2 * i - u64::from(key == running);
            (key, n)
        })
        .collect();
    backlogs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (key, n) in &backlogs[..10] {
        let labels = format!(r#"{{group="{key}",queue="webhooks"}}"#);
        assert_eq!(
            samples.get(&format!("orderly_queue_group_waiting{labels}")),
            Some(&(*n as f64)),
            "{key} waiting"
        );
        assert_eq!(
            samples.get(&format!("orderly_queue_group_running{labels}")),
            Some(&if *key == running { 1.0 } else { 0.0 }),
            "{key} running"
        );
    }
    let others: u64 = backlogs[10..].iter().map(|(_, n)| n).sum();
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_group_waiting{group="_other",queue="webhooks"}"#
        ),
        others as f64
    );
    for (key, _) in &backlogs[10..] {
        assert!(
            !samples
                .keys()
                .any(|s| s.contains(&format!("group=\"{key}\""))),
            "{key} is summed in _other"
        );
    }
    // The queue's waiting gauge counts the grouped jobs; no breaker is open.
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_jobs{priority="grouped",queue="webhooks",state="waiting"}"#
        ),
        155.0
    );
    let waiting_in_all: f64 = samples
        .iter()
        .filter(|(s, _)| {
            s.starts_with("orderly_queue_jobs{")
                && s.contains("queue=\"webhooks\"")
                && s.contains("state=\"waiting\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        waiting_in_all, 155.0,
        "summing over priorities counts every job"
    );
    assert_eq!(
        value(&samples, r#"orderly_queue_breakers_open{queue="webhooks"}"#),
        0.0
    );
    assert!(samples.contains_key(r#"orderly_queue_breakers_open{queue="emails"}"#));
    // A queue without groups or group limits has no group series.
    assert!(
        !samples
            .keys()
            .any(|s| s.contains("orderly_queue_group_waiting{") && s.contains("queue=\"emails\""))
    );

    // Later: only g99, whose breaker opened. A group gone from the top is gone from the scrape
    // (never reported with a stale value), and the open breaker is counted.
    engine.obliterate("webhooks").await.unwrap();
    app.enqueue_grouped_webhooks("g99", 1).await;
    app.open_webhook_breaker("g99", "HTTP 503").await;
    let samples = scrape(&app.client, &app.url("/metrics")).await;
    assert_eq!(
        value(&samples, r#"orderly_queue_breakers_open{queue="webhooks"}"#),
        1.0
    );
    let mut series = group_series(&samples, "orderly_queue_group_waiting");
    series.sort();
    assert_eq!(
        series,
        [
            r#"orderly_queue_group_waiting{group="_other",queue="webhooks"}"#,
            r#"orderly_queue_group_waiting{group="g99",queue="webhooks"}"#,
        ]
    );
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_group_waiting{group="g99",queue="webhooks"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            r#"orderly_queue_group_waiting{group="_other",queue="webhooks"}"#
        ),
        0.0
    );
    app.stop().await;
}
