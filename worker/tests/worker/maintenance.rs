//! Maintenance that runs itself: a worker defines the built-in schedules when it starts, and
//! the maintenance job removes exactly what is past its retention (expired idempotency keys,
//! dead jobs, sent-mail records and finished webhook deliveries older than their retention,
//! report files, and the original files of finished uploads).

use std::time::Duration;

use orderly::{
    queue::{JobSpec, JobState, RetryPolicy},
    testing::eventually,
};
use sqlx::PgPool;

use crate::helpers::{options, services, shop};

/// An upload row of `user_id` whose processing reached `status` `days` ago (queued and
/// processing ones were last touched then), its original file in storage; an image also has
/// its thumbnail there. Returns the id.
async fn insert_upload(
    s: &orderly::Services,
    user_id: uuid::Uuid,
    image_of: Option<uuid::Uuid>,
    status: &str,
    days: i32,
) -> uuid::Uuid {
    use orderly::uploads::incoming::{original_key, thumbnail_key};
    let id = uuid::Uuid::now_v7();
    let put = |key: String| async move {
        s.storage
            .put(&key, bytes::Bytes::from_static(b"sku,name\n"))
            .await
            .unwrap();
    };
    put(original_key(id)).await;
    let result = match image_of {
        Some(_) => {
            put(thumbnail_key(id)).await;
            serde_json::json!({ "thumbnail_key": thumbnail_key(id) })
        }
        None => serde_json::json!({ "errors_recorded": 1 }),
    };
    sqlx::query(
        "insert into uploads (id, user_id, purpose, product_id, filename, storage_key, byte_size, \
             status, rows_total, rows_ok, rows_failed, progress, error, result, completed_at, \
             cancelled_at, created_at, updated_at) \
         select $1, $2, case when $3::uuid is null then 'product_import' else 'product_image' end, \
             $3, 'file', $4, 9, $5, 6, 5, 1, 100, \
             case when $5 = 'failed' then 'bad header' end, \
             case when $5 = 'completed' then $6 end, \
             case when $5 = 'completed' then at end, case when $5 = 'cancelled' then at end, \
             at - interval '1 minute', at \
         from (select now() - make_interval(days => $7) as at) t",
    )
    .bind(id)
    .bind(user_id)
    .bind(image_of)
    .bind(original_key(id))
    .bind(status)
    .bind(result)
    .bind(days)
    .execute(&s.db)
    .await
    .unwrap();
    id
}

/// Keys of the fixture's customer: `(key, expired)`.
async fn insert_keys(pool: &PgPool, user_id: uuid::Uuid, keys: &[(&str, bool)]) {
    for (key, expired) in keys {
        let expires_at = if *expired {
            "now() - interval '1 hour'"
        } else {
            "now() + interval '1 day'"
        };
        sqlx::query(&format!(
            "insert into idempotency_keys \
             (user_id, scope, key, request_hash, resource_id, locked_until, expires_at) \
             values ($1, 'orders', $2, 'h', gen_random_uuid(), now(), {expires_at})"
        ))
        .bind(user_id)
        .bind(key)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_worker_defines_the_built_in_schedules_and_maintenance_removes_only_what_is_old(
    pool: PgPool,
) {
    let s = services(
        pool.clone(),
        &[
            ("DEAD_JOB_RETENTION_DAYS", "1".into()),
            ("SENT_EMAIL_RETENTION_DAYS", "7".into()),
            ("WEBHOOK_DELIVERY_RETENTION_DAYS", "7".into()),
        ],
    );
    let fixture = shop(&s, 1).await;
    insert_keys(
        &pool,
        fixture.customer.id,
        &[("old-1", true), ("old-2", true), ("fresh", false)],
    )
    .await;
    // Two dead jobs on the email queue; one died three days ago.
    let once = RetryPolicy::once();
    s.producer
        .enqueue_many(vec![
            JobSpec::new("emails", "test.dead", serde_json::json!({}))
                .with_id("ancient")
                .with_retry(once.clone()),
            JobSpec::new("emails", "test.dead", serde_json::json!({}))
                .with_id("recent")
                .with_retry(once),
        ])
        .await
        .unwrap();
    for claimed in s
        .queue
        .claim("emails", "t", 2, Duration::from_secs(30))
        .await
        .unwrap()
        .jobs
    {
        s.queue.fail(&claimed, "gave up", None).await.unwrap();
    }
    let mut redis = s.redis.clone();
    let three_days_ago = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
    let _: () = redis::cmd("ZADD")
        .arg(s.queue.state_key("emails", JobState::Dead))
        .arg("XX")
        .arg(three_days_ago)
        .arg("ancient")
        .query_async(&mut redis)
        .await
        .unwrap();

    // Sent-mail records 10 and 2 days old; deliveries 10 days old (one delivered, one still
    // pending) and 2 days old.
    for (job_id, days) in [("mail-old", 10), ("mail-recent", 2)] {
        sqlx::query(
            "insert into sent_emails (job_id, kind, recipient, subject, sent_at) \
             values ($1, 'email.welcome', 'a@example.com', 'Welcome', now() - make_interval(days => $2))",
        )
        .bind(job_id)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }
    let endpoint = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into webhook_endpoints (id, url, events, secret) \
         values ($1, 'https://example.com/hook', array['order.placed'], 'whsec_test')",
    )
    .bind(endpoint)
    .execute(&pool)
    .await
    .unwrap();
    for (status, days) in [("delivered", 10), ("pending", 10), ("failed", 2)] {
        sqlx::query(
            "insert into webhook_deliveries (id, endpoint_id, event_type, payload, status, created_at) \
             values (gen_random_uuid(), $1, 'order.placed', '{}', $2, now() - make_interval(days => $3))",
        )
        .bind(endpoint)
        .bind(status)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }

    // Two built reports of the customer, built 40 and 2 days ago, their files in storage.
    let mut reports = Vec::new();
    for days in [40, 2] {
        let id = uuid::Uuid::now_v7();
        let key = format!("reports/{id}.csv");
        s.storage
            .put(&key, bytes::Bytes::from_static(b"order_id\n"))
            .await
            .unwrap();
        sqlx::query(
            "insert into reports (id, user_id, kind, format, from_date, to_date, status, file_key, completed_at) \
             values ($1, $2, 'my_orders', 'csv', current_date, current_date, 'ready', $3, now() - make_interval(days => $4))",
        )
        .bind(id)
        .bind(fixture.customer.id)
        .bind(&key)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
        reports.push((id, key));
    }

    // Uploads finished 40 days ago (a completed import, a completed image with its thumbnail, a
    // failed and a cancelled import), one completed 2 days ago, and a queued and a processing
    // one last touched 40 days ago.
    let user = fixture.customer.id;
    let image = Some(fixture.product.id);
    let mut old_finished = Vec::new();
    for (image_of, status) in [
        (None, "completed"),
        (image, "completed"),
        (None, "failed"),
        (None, "cancelled"),
    ] {
        old_finished.push(insert_upload(&s, user, image_of, status, 40).await);
    }
    let old_image = old_finished[1];
    let mut untouched = Vec::new();
    for (status, days) in [("completed", 2), ("queued", 40), ("processing", 40)] {
        untouched.push(insert_upload(&s, user, None, status, days).await);
    }

    let mut opts = options("maintenance", 2);
    opts.schedules = true;
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = stop.clone();
    let worker = tokio::spawn(orderly_worker::runner::run(
        s.services.clone(),
        opts,
        async move { signal.notified().await },
    ));

    assert!(
        eventually(Duration::from_secs(10), || async {
            s.schedules.list().await.map(|l| l.len()).unwrap_or(0) == 6
        })
        .await,
        "the worker defines every built-in schedule"
    );
    let names: Vec<String> = s
        .schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.def.name)
        .collect();
    assert_eq!(
        names,
        [
            "maintenance:expire_reports",
            "maintenance:expire_uploads",
            "maintenance:prune_sent_emails",
            "maintenance:prune_webhook_deliveries",
            "maintenance:purge_idempotency_keys",
            "maintenance:trim_dead_jobs"
        ]
    );

    for name in &names {
        s.schedules.run_now(name).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(15), || async {
            s.queue.counts("maintenance").await.unwrap().completed == 6
        })
        .await,
        "every maintenance job completes: {:?}",
        s.queue.counts("maintenance").await.unwrap()
    );
    let keys: Vec<String> = sqlx::query_scalar("select key from idempotency_keys order by key")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(keys, ["fresh"], "only the expired keys are purged");
    assert!(s.queue.job("emails", "ancient").await.unwrap().is_none());
    assert!(s.queue.job("emails", "recent").await.unwrap().is_some());
    let mails: Vec<String> = sqlx::query_scalar("select job_id from sent_emails order by job_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(mails, ["mail-recent"]);
    let deliveries: Vec<String> =
        sqlx::query_scalar("select status from webhook_deliveries order by status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        deliveries,
        ["failed", "pending"],
        "the old delivered one goes, the old pending one stays"
    );
    // The old report is expired: its row says so, its file is gone, a download is 410.
    let (old, old_key) = &reports[0];
    let (recent, recent_key) = &reports[1];
    let old_report = s.reports.find(*old).await.unwrap().unwrap();
    assert_eq!(old_report.status, orderly::reports::ReportStatus::Expired);
    assert_eq!(old_report.file_key, None);
    assert!(
        s.storage.read_all(old_key).await.is_err(),
        "the file is deleted"
    );
    let gone = s
        .reports
        .download(&fixture.actor, *old)
        .await
        .err()
        .unwrap();
    assert_eq!(gone.status(), axum::http::StatusCode::GONE);
    let kept = s.reports.find(*recent).await.unwrap().unwrap();
    assert_eq!(kept.status, orderly::reports::ReportStatus::Ready);
    assert!(s.storage.read_all(recent_key).await.is_ok());

    // Old finished uploads lose their original and say when; their outcome stays as it was.
    use orderly::uploads::{
        ErrorPageRequest,
        incoming::{original_key, thumbnail_key},
    };
    let expected = ["completed", "completed", "failed", "cancelled"];
    for (id, status) in old_finished.iter().zip(expected) {
        let (now_status, expired, rows_ok, rows_failed): (String, bool, i64, i64) = sqlx::query_as(
            "select status, expired_at is not null, rows_ok, rows_failed \
                 from uploads where id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(expired, "the {status} upload is expired");
        assert_eq!(
            (now_status.as_str(), rows_ok, rows_failed),
            (status, 5, 1),
            "the outcome stays"
        );
        assert!(
            s.storage.read_all(&original_key(*id)).await.is_err(),
            "the original of the {status} upload is deleted"
        );
    }
    // Reading an expired original answers 410.
    let expired = s.uploads.find(old_finished[0]).await.unwrap().unwrap();
    let gone = s.uploads.open(&expired).await.err().unwrap();
    assert_eq!(gone.status(), axum::http::StatusCode::GONE);
    assert!(
        s.storage.read_all(&thumbnail_key(old_image)).await.is_ok(),
        "an image's thumbnail is not an original: it stays"
    );
    // A retried job of an expired upload finds nothing to do.
    assert!(
        s.uploads
            .start_run(old_finished[2])
            .await
            .unwrap()
            .is_none()
    );
    // What GET /api/v1/uploads/{id} shows: still completed with its counts, and since when the
    // original is gone.
    let shown = serde_json::to_value(orderly_api::uploads::dto::UploadResponse::from(
        s.uploads
            .report(old_finished[0], ErrorPageRequest::default())
            .await
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["rows_ok"], 5);
    assert!(shown["expired_at"].is_string(), "{shown}");
    // The recent one and the unfinished old ones keep their originals.
    for id in &untouched {
        let upload = s.uploads.find(*id).await.unwrap().unwrap();
        assert_eq!(upload.expired_at, None, "{:?} upload", upload.status);
        assert!(s.storage.read_all(&original_key(*id)).await.is_ok());
    }

    stop.notify_one();
    worker.await.unwrap().unwrap();
}
