//! Partitioned queues against the real Redis: jobs spread over the partitions by their
//! partition key, every read and action by queue name covers all partitions (counts, merged
//! listings, a job by id, cancel, events, pause, purge, actions on many ids), a group stays in
//! one partition, ids stay idempotent, and queue-wide limits are shared between partitions so
//! the whole holds. Workers claiming in rotation are tested in the worker crate; partitions on
//! several cluster nodes in `cluster`.

use std::{collections::HashSet, time::Duration};

use orderly_queue::{
    CancelOutcome, JobGroup, JobSpec, JobState, Partitions, QueueEngine, QueueLimits,
    inspect::{JobFilter, JobList},
};

use crate::helpers::{TestEngine, engine, job};

const LEASE: Duration = Duration::from_secs(30);

fn partitioned(e: &TestEngine, count: u16) -> QueueEngine {
    e.engine
        .clone()
        .with_partitions(Partitions::new([("q".to_owned(), count)]))
}

/// Sizes of each partition's ready set, read past the engine.
async fn ready_per_partition(e: &TestEngine, engine: &QueueEngine) -> Vec<u64> {
    let mut redis = orderly_queue::testing::connection(e.url.as_str());
    let mut sizes = Vec::new();
    for partition in engine.partitions("q") {
        let size: u64 = redis::cmd("ZCARD")
            .arg(engine.state_key(&partition, JobState::Ready))
            .query_async(&mut redis)
            .await
            .unwrap();
        sizes.push(size);
    }
    sizes
}

#[tokio::test]
async fn every_read_and_action_by_queue_name_covers_every_partition() {
    let e = engine().await;
    let q = partitioned(&e, 4);
    assert_eq!(q.partitions("q"), ["q", "q~1", "q~2", "q~3"]);
    let jobs: Vec<JobSpec> = (0..200)
        .map(|i| job("q", &format!("j{i:03}"), (i % 3) as u8 * 3).with_events())
        .collect();
    assert!(q.enqueue(&jobs).await.unwrap().iter().all(|added| *added));
    // The same ids again: each meets itself in its partition.
    assert!(q.enqueue(&jobs).await.unwrap().iter().all(|added| !added));

    let sizes = ready_per_partition(&e, &q).await;
    assert_eq!(sizes.iter().sum::<u64>(), 200);
    assert!(sizes.iter().all(|n| *n >= 25), "spread: {sizes:?}");
    // An engine that does not know of the partitions sees partition 0 only.
    assert_eq!(e.counts("q").await.unwrap().waiting, sizes[0]);

    let counts = q.counts("q").await.unwrap();
    assert_eq!((counts.queue.as_str(), counts.waiting), ("q", 200));
    assert_eq!(
        counts.waiting_by_priority[0] + counts.waiting_by_priority[3],
        134
    );
    let parts = q.partition_counts("q").await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.waiting).collect::<Vec<_>>(),
        sizes,
        "{parts:?}"
    );
    let (summaries, _) = q.summaries(&["q"], 5).await.unwrap();
    assert_eq!(summaries[0].counts.waiting, 200);
    assert_eq!(summaries[0].partitions.len(), 4);
    assert_eq!(
        summaries[0]
            .throughput
            .iter()
            .map(|m| m.enqueued)
            .sum::<u64>(),
        200
    );

    // A listing merges the partitions in the list's order (priority first), page by page.
    let mut seen = HashSet::new();
    let mut last_priority = 0;
    for page in 0..4 {
        let listed = q.list("q", JobState::Ready, page * 50, 50).await.unwrap();
        assert_eq!((listed.total, listed.jobs.len()), (200, 50));
        for job in &listed.jobs {
            assert!(job.priority >= last_priority, "priority order across pages");
            last_priority = job.priority;
            assert_eq!(job.queue, "q");
            assert!(job.partition.as_deref().is_some_and(|p| p.starts_with('q')));
            assert!(seen.insert(job.id.clone()), "{} listed twice", job.id);
        }
    }
    assert_eq!(seen.len(), 200);

    // A job by id, wherever it is.
    let (far, far_partition) = jobs
        .iter()
        .map(|j| {
            (
                j.id.clone(),
                Partitions::new([("q".to_owned(), 4)]).partition_for("q", &j.id),
            )
        })
        .find(|(_, p)| p != "q")
        .unwrap();
    let detail = q
        .job("q", &far)
        .await
        .unwrap()
        .expect("found in its partition");
    assert_eq!(detail.partition.as_deref(), Some(far_partition.as_str()));
    assert_eq!(detail.state, "ready");
    assert!(q.exists("q", &far).await.unwrap());
    assert!(!q.exists("q", "nope").await.unwrap());
    assert!(q.job("q", "nope").await.unwrap().is_none());

    // Cancel by id, and the job's event stream, found in its partition.
    assert_eq!(
        q.cancel("q", &far, "not needed").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        q.cancel("q", "nope", "x").await.unwrap(),
        CancelOutcome::NotFound
    );
    let events = q.job_events("q", &far, None, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["queued", "cancelled"]
    );
    assert!(q.retry_cancelled("q", &far).await.unwrap());
    assert_eq!(q.counts("q").await.unwrap().waiting, 200);

    // A filter scans every partition.
    let filter = JobFilter {
        text: Some("j00".to_owned()),
        ..JobFilter::default()
    };
    let scan = q
        .scan_jobs("q", JobList::State(JobState::Ready), &filter, 0, 50)
        .await
        .unwrap();
    assert_eq!((scan.matched, scan.jobs.len()), (10, 10));
    assert!(scan.complete);
    let matching = q
        .matching_ids("q", JobList::State(JobState::Ready), &filter)
        .await
        .unwrap();
    assert_eq!(matching.ids.len(), 10);
    assert_eq!(q.delete_jobs("q", &matching.ids).await.unwrap(), 10);
    assert!(q.delete("q", "j100").await.unwrap());
    assert_eq!(q.counts("q").await.unwrap().waiting, 189);

    // Pause holds every partition; resume frees them all.
    q.pause("q").await.unwrap();
    assert!(
        q.partition_counts("q")
            .await
            .unwrap()
            .iter()
            .all(|p| p.paused)
    );
    for partition in q.partitions("q") {
        assert!(
            q.claim(&partition, "w", 10, LEASE)
                .await
                .unwrap()
                .jobs
                .is_empty()
        );
    }
    q.resume("q").await.unwrap();

    // Claims from each partition; the job names the partition it came from, and its acks,
    // failures and retries go there.
    let mut claimed = 0;
    for partition in q.partitions("q") {
        let claim = q.claim(&partition, "w", 1000, LEASE).await.unwrap();
        assert!(claim.jobs.iter().all(|job| job.queue == partition));
        for job in &claim.jobs[..3] {
            assert!(q.fail(job, "boom", None).await.unwrap());
        }
        let leases: Vec<_> = claim.jobs[3..]
            .iter()
            .map(|job| (job.id.clone(), job.lease))
            .collect();
        assert!(
            q.ack(&partition, &leases)
                .await
                .unwrap()
                .iter()
                .all(|ok| *ok)
        );
        claimed += claim.jobs.len();
    }
    assert_eq!(claimed, 189);
    let counts = q.counts("q").await.unwrap();
    assert_eq!(
        (counts.dead, counts.completed, counts.waiting),
        (12, 177, 0)
    );
    let dead = q.list("q", JobState::Dead, 0, 100).await.unwrap();
    assert_eq!(dead.jobs.len(), 12);
    assert!(q.retry_dead("q", &dead.jobs[0].id).await.unwrap());
    assert_eq!(q.retry_all_dead("q").await.unwrap(), 11);
    assert_eq!(q.counts("q").await.unwrap().waiting, 12);
    assert_eq!(q.purge_completed("q").await.unwrap(), 177);
    q.obliterate("q").await.unwrap();
    assert_eq!(ready_per_partition(&e, &q).await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn a_group_lives_in_one_partition_and_its_limits_hold() {
    let e = engine().await;
    let limits = QueueLimits {
        group: orderly_queue::GroupLimits {
            concurrency: Some(1),
            ..Default::default()
        },
        ..QueueLimits::default()
    };
    let q = partitioned(&e, 4).with_limits([("q".to_owned(), limits)]);
    let jobs: Vec<JobSpec> = (0..40)
        .map(|i| {
            job("q", &format!("g{i:02}"), 5).in_group(JobGroup::new(format!("shop-{}", i % 2)))
        })
        .collect();
    q.enqueue(&jobs).await.unwrap();
    for group in ["shop-0", "shop-1"] {
        let partition = q.group_partition("q", group);
        let status = q.group("q", group).await.unwrap();
        assert_eq!(status.waiting, 20, "{group} is whole in {partition}");
        let page = q.group_jobs("q", group, 0, 50).await.unwrap();
        assert_eq!(page.jobs.len(), 20);
        assert!(
            page.jobs
                .iter()
                .all(|j| j.partition.as_deref() == Some(partition.as_str()))
        );
    }
    let overview = q.groups("q", 10).await.unwrap();
    assert_eq!((overview.groups_with_backlog, overview.waiting), (2, 40));
    // One running job per group, whichever partitions they are in.
    let mut running = 0;
    for partition in q.partitions("q") {
        running += q
            .claim(&partition, "w", 100, LEASE)
            .await
            .unwrap()
            .jobs
            .len();
    }
    assert_eq!(running, 2);
}

#[tokio::test]
async fn queue_wide_limits_are_shared_so_the_whole_holds() {
    let e = engine().await;
    let limits = QueueLimits {
        concurrency: Some(6),
        ..QueueLimits::default()
    };
    let q = partitioned(&e, 4).with_limits([("q".to_owned(), limits)]);
    assert_eq!(q.limits("q"), limits, "the whole queue's limits, as shown");
    let jobs: Vec<JobSpec> = (0..400).map(|i| job("q", &format!("c{i:03}"), 5)).collect();
    q.enqueue(&jobs).await.unwrap();
    let mut per_partition = Vec::new();
    for partition in q.partitions("q") {
        per_partition.push(
            q.claim(&partition, "w", 100, LEASE)
                .await
                .unwrap()
                .jobs
                .len(),
        );
    }
    assert_eq!(per_partition, [2, 2, 1, 1], "a cap of 6 shared by 4");
    assert_eq!(q.counts("q").await.unwrap().active, 6);
}
