//! A partitioned queue on the dashboard (`QUEUE_PARTITIONS=emails=4`): the overview marks it,
//! the queue page shows the partitions' totals and lists each partition, the merged job list
//! holds every partition's jobs, and a job's page, reached by its id alone, names the partition
//! it is in.

use orderly::queue::{JobSpec, Partitions};
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{TestApp, spawn_app_with};

/// The page at `path`, as an admin's browser gets it (slashes as the templates escape them).
async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
    let response = app.get_with_cookie(path, cookie).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap().replace("&#x2f;", "/")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_dashboard_shows_a_partitioned_queue_whole_and_by_partition(pool: PgPool) {
    let app = spawn_app_with(pool, &[("QUEUE_PARTITIONS", "emails=4")]).await;
    let admin = app.admin().await;
    let cookie = app.dashboard_session(&admin).await;
    let engine = &app.services.queue;
    // Whatever the app staged on its own (the admin's welcome email) plus 40 more.
    let jobs: Vec<JobSpec> = (0..40)
        .map(|n| JobSpec::new("emails", "email.test", serde_json::json!({ "n": n })))
        .collect();
    engine.enqueue(&jobs).await.unwrap();
    let waiting = engine.counts("emails").await.unwrap().waiting;
    assert!(waiting >= 40);
    let per_partition = engine.partition_counts("emails").await.unwrap();
    assert_eq!(per_partition.len(), 4);

    let overview = page(&app, &cookie, "/admin/queues").await;
    assert!(
        overview.contains(r#"data-field="partitions" title="Split into partitions (QUEUE_PARTITIONS)">4 partitions</span>"#),
        "{overview}"
    );

    let queue = page(&app, &cookie, "/admin/queues/emails").await;
    assert!(queue.contains(r#"id="queue-partitions""#));
    assert!(queue.contains(&format!(r#"<dd data-field="waiting">{waiting}</dd>"#)));
    for partition in &per_partition {
        let row = format!(
            r#"<tr data-partition="{}"><th scope="row">{}</th><td class="num" data-field="waiting">{}</td>"#,
            partition.queue, partition.queue, partition.waiting
        );
        assert!(queue.contains(&row), "{row} in {queue}");
    }
    // The waiting list merges the partitions: its first page is full.
    assert!(queue.matches("/admin/queues/emails/jobs/").count() >= 20);

    // A job in another partition than the first, reached by its id.
    let partitions = Partitions::new([("emails".to_owned(), 4)]);
    let far = jobs
        .iter()
        .find(|job| partitions.partition_for("emails", &job.id) != "emails")
        .unwrap();
    let job_page = page(
        &app,
        &cookie,
        &format!("/admin/queues/emails/jobs/{}", far.id),
    )
    .await;
    let partition = partitions.partition_for("emails", &far.id);
    assert!(
        job_page.contains(&format!(
            r#"<dd class="mono" id="job-partition">{partition}</dd>"#
        )),
        "{job_page}"
    );
}
