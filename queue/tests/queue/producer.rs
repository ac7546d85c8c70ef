//! The producer's group commit: concurrent callers are sent together, and every caller still
//! gets the answer for its own jobs.

use std::collections::HashSet;

use futures::future::join_all;
use orderly_queue::Producer;

use crate::helpers::{engine, job};

#[tokio::test]
async fn concurrent_callers_each_get_their_own_answer() {
    let e = engine().await;
    let producer = Producer::new(e.engine.clone());
    // Jobs 0..150 exist before the burst, so their second enqueue must say "already there".
    let existing: Vec<_> = (0..150)
        .map(|i| job("alpha", &format!("j{i}"), 5))
        .collect();
    assert!(
        producer
            .enqueue_many(existing)
            .await
            .unwrap()
            .iter()
            .all(|added| *added)
    );

    // 600 callers at once: one job each on two queues, some repeating an existing id, and some
    // callers sending three jobs in one call, so groups mix sizes, queues and outcomes.
    let calls = (0..600).map(|i| {
        let producer = producer.clone();
        async move {
            if i % 10 == 0 {
                let jobs = vec![
                    job("beta", &format!("b{i}-0"), 1),
                    job("alpha", &format!("j{}", i % 150), 5),
                    job("beta", &format!("b{i}-1"), 9),
                ];
                (i, producer.enqueue_many(jobs).await.unwrap())
            } else {
                let queue = if i % 2 == 0 { "alpha" } else { "beta" };
                // Callers 100..300 repeat ids the first burst wrote (j0..j149 on alpha).
                let id = if (100..300).contains(&i) && queue == "alpha" {
                    format!("j{}", i % 150)
                } else {
                    format!("c{i}")
                };
                (i, vec![producer.enqueue(job(queue, &id, 3)).await.unwrap()])
            }
        }
    });
    let answers = join_all(calls).await;

    let mut expected_alpha: HashSet<String> = (0..150).map(|i| format!("j{i}")).collect();
    let mut expected_beta = HashSet::new();
    for (i, answer) in answers {
        if i % 10 == 0 {
            assert_eq!(answer, vec![true, false, true], "caller {i}");
            expected_beta.insert(format!("b{i}-0"));
            expected_beta.insert(format!("b{i}-1"));
        } else if i % 2 == 0 && (100..300).contains(&i) {
            assert_eq!(answer, vec![false], "caller {i} repeated an existing id");
        } else {
            assert_eq!(answer, vec![true], "caller {i}");
            let queue = if i % 2 == 0 {
                &mut expected_alpha
            } else {
                &mut expected_beta
            };
            queue.insert(format!("c{i}"));
        }
    }
    let alpha = e.counts("alpha").await.unwrap();
    let beta = e.counts("beta").await.unwrap();
    assert_eq!(alpha.waiting as usize, expected_alpha.len());
    assert_eq!(beta.waiting as usize, expected_beta.len());
    for id in &expected_beta {
        let detail = e.job("beta", id).await.unwrap();
        assert!(detail.is_some(), "job {id} missing from beta");
    }
}
