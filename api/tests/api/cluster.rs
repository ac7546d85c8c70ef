//! The api on a Redis Cluster (`REDIS_MODE=cluster`, three primaries): `/health` reaches every
//! primary; two instances' near caches track every primary, so an edit through one instance
//! reaches the other wherever the product's cache key lives, also after its slot moved to
//! another node; and a rate limit is one budget across both instances.

use std::collections::HashSet;

use orderly::queue::testing::ClusterRedis;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::{
    helpers::{TestApp, spawn_app_with, unique_prefix},
    products::{id_of, name_of, product, rename, until},
};

/// Two api instances on `cluster`, one key prefix, with `overrides`.
async fn two_instances(
    pool: &PgPool,
    cluster: &ClusterRedis,
    overrides: &[(&str, &str)],
) -> (TestApp, TestApp) {
    let prefix = unique_prefix();
    let seeds = cluster.seeds();
    let mut settings = vec![
        ("REDIS_MODE", "cluster"),
        ("REDIS_URL", seeds.as_str()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    settings.extend_from_slice(overrides);
    let first = spawn_app_with(pool.clone(), &settings).await;
    let second = spawn_app_with(pool.clone(), &settings).await;
    (first, second)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn edits_reach_the_other_instance_wherever_the_cache_keys_live(pool: PgPool) {
    let cluster = ClusterRedis::start(3);
    let (reader, editor) = two_instances(&pool, &cluster, &[]).await;
    for app in [&reader, &editor] {
        let health = app.get("/health", None).await;
        assert_eq!(health.status(), StatusCode::OK);
        let health: Value = health.json().await.unwrap();
        assert_eq!(health["checks"]["redis"]["status"], "up", "{health}");
    }
    let cache = reader.services.cache.clone();
    until("the near cache tracks every primary", || {
        cache.near_is_live()
    })
    .await;
    let admin = editor.admin().await;

    // Products until their cache keys cover every node.
    let mut on_nodes = HashSet::new();
    let mut products = Vec::new();
    for n in 0.. {
        let created = editor
            .create_product_with(&admin, &product(&format!("CL-{n}"), "Before"))
            .await;
        let id = id_of(&created).to_owned();
        let node = cluster.node_of(&format!("{}:cache:product:{id}", reader.prefix));
        if on_nodes.insert(node) {
            products.push(id);
        }
        if on_nodes.len() == 3 {
            break;
        }
        assert!(n < 200, "200 products and still a node without one");
    }

    let read_edit_read = async |id: &str, name: &str| {
        let path = format!("/api/v1/products/{id}");
        let cache_key = format!("product:{id}");
        name_of(&reader, &path).await;
        name_of(&reader, &path).await;
        assert!(cache.near_holds(&cache_key), "{id} is kept near");
        rename(&editor, &admin, id, name).await;
        until("the edit's invalidation reaches the other instance", || {
            !cache.near_holds(&cache_key)
        })
        .await;
        assert_eq!(name_of(&reader, &path).await, name);
    };
    for id in &products {
        read_edit_read(id, "After").await;
    }

    // Move the first product's slot (its cache entry with it) to another node: the node that
    // takes it over reports its changes like the one that gave it up.
    let key = format!("{}:cache:product:{}", reader.prefix, products[0]);
    let admin_handle = cluster.admin();
    let to = (cluster.node_of(&key) + 1) % 3;
    let moved = tokio::task::spawn_blocking(move || admin_handle.move_slot_of(&key, to, 10))
        .await
        .unwrap();
    assert!(moved >= 1, "the cache entry moved");
    read_edit_read(&products[0], "Moved").await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_rate_limit_is_one_budget_across_instances(pool: PgPool) {
    let cluster = ClusterRedis::start(3);
    let (first, second) = two_instances(
        &pool,
        &cluster,
        &[
            ("RATE_LIMIT_STORE", "redis"),
            ("RATE_LIMIT_PER_MINUTE", "6"),
            ("RATE_LIMIT_BURST", "10"),
        ],
    )
    .await;
    let customer = first.customer().await;
    let mut allowed = 0;
    for n in 0..30 {
        let app = if n % 2 == 0 { &first } else { &second };
        let response = app.get("/api/v1/products", Some(&customer.token)).await;
        match response.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (10..=11).contains(&allowed),
        "{allowed} of 30 requests allowed across both instances"
    );
}
