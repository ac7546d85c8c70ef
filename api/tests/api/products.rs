//! The catalogue over HTTP: admin create (201, duplicate SKU 409, invalid fields 422), public
//! listing with keyset pagination and the `q` search, inactive products hidden from everyone but
//! admins, PATCH, soft DELETE, and the Redis read-through cache: a product or a catalogue page is
//! served from Redis after the first read (shown by tampering with the cached entry) and an admin
//! edit makes the next read fresh again. The near cache in front of Redis: a product read twice
//! is kept in the process, and any change under the cache prefix in Redis (a tampered entry, an
//! edit through another api instance) drops it; when its change feed from Redis is cut, it
//! forgets everything and serves from Redis until the feed is back; a Redis that refuses
//! tracking leaves every read to Redis.

use std::{collections::HashSet, time::Duration};

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestUser, assert_error, eventually, spawn_app, spawn_app_with};

pub(crate) fn product(sku: &str, name: &str) -> Value {
    json!({"sku": sku, "name": name, "description": "A thing", "price_cents": 1299, "currency": "EUR", "stock": 10})
}

pub(crate) fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("id")
}

/// Every page of `GET /products?<query>` with `limit`, following `next_cursor`.
async fn walk_pages(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    limit: u32,
) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/products?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = app.get(&path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
    pages
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|p| id_of(p).to_owned()).collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn admin_creates_a_product(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let response = app
        .post_json(
            "/api/v1/products",
            Some(&admin.token),
            &product("MUG-001", "Coffee mug"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["sku"], "MUG-001");
    assert_eq!(created["name"], "Coffee mug");
    assert_eq!(created["price_cents"], 1299);
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["stock"], 10);
    assert_eq!(created["active"], true);

    let fetched: Value = app
        .get(&format!("/api/v1/products/{}", id_of(&created)), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn duplicate_sku_is_409(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    app.create_product_with(&admin, &product("DUP-1", "First"))
        .await;
    let response = app
        .post_json(
            "/api/v1/products",
            Some(&admin.token),
            &product("DUP-1", "Second"),
        )
        .await;
    let body = assert_error(response, StatusCode::CONFLICT).await;
    assert!(body["message"].as_str().unwrap().contains("sku"), "{body}");

    // Renaming another product onto a taken SKU is the same conflict.
    let other = app
        .create_product_with(&admin, &product("DUP-2", "Other"))
        .await;
    let response = app
        .patch_json(
            &format!("/api/v1/products/{}", id_of(&other)),
            Some(&admin.token),
            &json!({"sku": "DUP-1"}),
        )
        .await;
    assert_error(response, StatusCode::CONFLICT).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn invalid_product_fields_are_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let cases = [
        ("sku", json!("has spaces")),
        ("sku", json!("")),
        ("name", json!("")),
        ("price_cents", json!(-1)),
        ("currency", json!("eu")),
        ("currency", json!("eur")),
        ("stock", json!(-5)),
    ];
    for (field, value) in cases {
        let mut body = product("OK-1", "Fine");
        body[field] = value.clone();
        let response = app
            .post_json("/api/v1/products", Some(&admin.token), &body)
            .await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let details = error["details"]
            .as_array()
            .unwrap_or_else(|| panic!("no details for {field}={value}: {error}"));
        assert!(
            details.iter().any(|d| d["field"] == field),
            "{field}={value}: {error}"
        );
    }
    let count: i64 = sqlx::query_scalar("select count(*) from products")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn listing_pages_through_the_whole_catalogue_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(id_of(&app.create_product(&admin, 100 + i, 1).await).to_owned());
    }

    let pages = walk_pages(&app, None, "", 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "a product appeared twice"
    );
    // Creation order (UUIDv7 ids), nothing missing.
    assert_eq!(seen, created);

    // A page size that divides the catalogue exactly still ends.
    let pages = walk_pages(&app, None, "", 7).await;
    assert_eq!(ids(&pages[0]), created);
    assert!(pages.iter().skip(1).all(Vec::is_empty));

    assert_error(
        app.get("/api/v1/products?limit=0", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(
        app.get("/api/v1/products?limit=101", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(
        app.get("/api/v1/products?cursor=bogus", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn q_searches_name_and_sku(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    app.create_product_with(&admin, &product("TEA-001", "Blue Teapot"))
        .await;
    app.create_product_with(&admin, &product("MUG-RED-1", "Red cup"))
        .await;
    app.create_product_with(&admin, &product("PLATE-1", "Plate"))
        .await;
    app.create_product_with(&admin, &product("PCT-1", "100% cotton towel"))
        .await;

    let search = |q: &'static str| {
        let app = &app;
        async move {
            let pages = walk_pages(app, None, &format!("q={q}"), 100).await;
            pages
                .concat()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search("teapot").await,
        ["TEA-001"],
        "name, case-insensitive"
    );
    assert_eq!(
        search("mug-red").await,
        ["MUG-RED-1"],
        "sku, case-insensitive"
    );
    assert_eq!(search("tea").await, ["TEA-001"]);
    // `%` is matched literally, not as a wildcard.
    assert_eq!(search("100%25").await, ["PCT-1"]);
    assert!(search("nothing-like-this").await.is_empty());
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn inactive_products_are_visible_to_admins_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let customer = app.customer().await;
    let visible = app
        .create_product_with(&admin, &product("ON-1", "On sale"))
        .await;
    let mut hidden_body = product("OFF-1", "Withdrawn");
    hidden_body["active"] = json!(false);
    let hidden = app.create_product_with(&admin, &hidden_body).await;
    let hidden_path = format!("/api/v1/products/{}", id_of(&hidden));

    for token in [None, Some(customer.token.as_str())] {
        let listed = walk_pages(&app, token, "", 100).await.concat();
        assert_eq!(ids(&listed), [id_of(&visible)]);
        assert_error(app.get(&hidden_path, token).await, StatusCode::NOT_FOUND).await;
    }
    let listed = walk_pages(&app, Some(&admin.token), "", 100).await.concat();
    assert_eq!(ids(&listed), [id_of(&visible), id_of(&hidden)]);
    let response = app.get(&hidden_path, Some(&admin.token)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn patch_changes_only_the_given_fields(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("EDIT-1", "Before"))
        .await;
    let path = format!("/api/v1/products/{}", id_of(&created));

    let response = app
        .patch_json(
            &path,
            Some(&admin.token),
            &json!({"name": "After", "price_cents": 999}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["name"], "After");
    assert_eq!(updated["price_cents"], 999);
    assert_eq!(updated["sku"], "EDIT-1");
    assert_eq!(updated["stock"], 10);
    let fetched: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(fetched, updated);

    assert_error(
        app.patch_json(&path, Some(&admin.token), &json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(
        app.patch_json(&path, Some(&admin.token), &json!({"price_cents": -1}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let missing = format!("/api/v1/products/{}", uuid::Uuid::now_v7());
    assert_error(
        app.patch_json(&missing, Some(&admin.token), &json!({"name": "x"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn delete_withdraws_the_product_but_keeps_the_row(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("GONE-1", "Soon gone"))
        .await;
    let path = format!("/api/v1/products/{}", id_of(&created));
    // Read once so the product is cached: the delete must not leave a stale active copy.
    assert_eq!(app.get(&path, None).await.status(), StatusCode::OK);

    let response = app.delete(&path, Some(&admin.token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let deleted: Value = response.json().await.unwrap();
    assert_eq!(deleted["active"], false);

    assert_error(app.get(&path, None).await, StatusCode::NOT_FOUND).await;
    let as_admin: Value = app
        .get(&path, Some(&admin.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(as_admin["active"], false);
    let rows: i64 = sqlx::query_scalar("select count(*) from products")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let missing = format!("/api/v1/products/{}", uuid::Uuid::now_v7());
    assert_error(
        app.delete(&missing, Some(&admin.token)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// Rewrites the JSON stored under `key` with `edit`, keeping its TTL.
async fn tamper(app: &TestApp, key: &str, edit: impl FnOnce(&mut Value)) {
    let mut redis = app.redis();
    let raw: Vec<u8> = redis.get(key).await.expect("cached entry");
    let mut value: Value = serde_json::from_slice(&raw).expect("cached JSON");
    edit(&mut value);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(serde_json::to_vec(&value).unwrap())
        .arg("KEEPTTL")
        .query_async(&mut redis)
        .await
        .expect("cache entry rewritten");
}

pub(crate) async fn rename(app: &TestApp, admin: &TestUser, id: &str, name: &str) {
    let response = app
        .patch_json(
            &format!("/api/v1/products/{id}"),
            Some(&admin.token),
            &json!({"name": name}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn product_reads_are_served_from_redis_until_an_admin_edit(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("CACHE-1", "Original"))
        .await;
    let id = id_of(&created);
    let path = format!("/api/v1/products/{id}");
    let key = format!("{}:cache:product:{id}", app.prefix);

    let first: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(first["name"], "Original");
    let cached: bool = app.redis().exists(&key).await.unwrap();
    assert!(cached, "{key} not written by the first read");

    tamper(&app, &key, |p| p["name"] = json!("Tampered in Redis")).await;
    let second: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(
        second["name"], "Tampered in Redis",
        "the second read did not come from Redis"
    );

    rename(&app, &admin, id, "Renamed").await;
    let third: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(
        third["name"], "Renamed",
        "the edit did not invalidate the cached product"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn catalogue_pages_are_served_from_redis_until_an_admin_edit(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("PAGE-1", "Listed"))
        .await;
    let pattern = format!("{}:cache:products:page:*", app.prefix);

    let first: Value = app
        .get("/api/v1/products", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"][0]["name"], "Listed");
    let keys: Vec<String> = app.redis().keys(&pattern).await.unwrap();
    assert_eq!(keys.len(), 1, "expected one cached page, found {keys:?}");

    tamper(&app, &keys[0], |page| {
        page["items"][0]["name"] = json!("Tampered page")
    })
    .await;
    let second: Value = app
        .get("/api/v1/products", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["items"][0]["name"], "Tampered page",
        "the second read did not come from Redis"
    );

    // Any catalogue edit moves the pages to a new generation.
    rename(&app, &admin, id_of(&created), "Relisted").await;
    let third: Value = app
        .get("/api/v1/products", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        third["items"][0]["name"], "Relisted",
        "the edit did not invalidate cached pages"
    );
}

/// Waits (up to 10 s) until `condition` holds; the near cache learns of changes from Redis
/// asynchronously, so tests wait for the notice instead of sleeping a guessed time.
pub(crate) async fn until(what: &str, condition: impl Fn() -> bool) {
    eventually(what, Duration::from_secs(10), || {
        std::future::ready(condition().then_some(()))
    })
    .await
}

/// Waits until `app`'s near cache tracks Redis, then has an admin create a product; returns its
/// path and its cache key.
async fn tracked_product(app: &TestApp, sku: &str, name: &str) -> (String, String) {
    let cache = app.services.cache.clone();
    until("the near cache tracks Redis", || cache.near_is_live()).await;
    let admin = app.admin().await;
    let created = app.create_product_with(&admin, &product(sku, name)).await;
    let id = id_of(&created);
    (format!("/api/v1/products/{id}"), format!("product:{id}"))
}

pub(crate) async fn name_of(app: &TestApp, path: &str) -> String {
    let body: Value = app.get(path, None).await.json().await.unwrap();
    body["name"].as_str().expect("name").to_owned()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_product_read_twice_is_kept_in_process_until_redis_reports_a_change(pool: PgPool) {
    let app = spawn_app(pool).await;
    let cache = app.services.cache.clone();
    let (path, cache_key) = tracked_product(&app, "NEAR-1", "Original").await;
    let redis_key = format!("{}:cache:{cache_key}", app.prefix);

    // Creating the product stored it in Redis; the first read takes it from there and keeps it
    // near.
    assert!(!cache.near_holds(&cache_key));
    assert_eq!(name_of(&app, &path).await, "Original");
    assert!(
        cache.near_holds(&cache_key),
        "a Redis hit was not kept near"
    );

    // A write nobody announced (an operator with redis-cli): Redis's own notice drops the copy.
    tamper(&app, &redis_key, |p| p["name"] = json!("Tampered in Redis")).await;
    until("Redis's invalidation reaches the near cache", || {
        !cache.near_holds(&cache_key)
    })
    .await;
    assert_eq!(name_of(&app, &path).await, "Tampered in Redis");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_edit_through_one_api_instance_reaches_the_near_cache_of_another(pool: PgPool) {
    let reader = spawn_app(pool.clone()).await;
    let editor = spawn_app_with(pool, &[("REDIS_PREFIX", reader.prefix.as_str())]).await;
    let cache = reader.services.cache.clone();
    until("the near cache tracks Redis", || cache.near_is_live()).await;
    let admin = editor.admin().await;
    let created = editor
        .create_product_with(&admin, &product("NEAR-2", "Before"))
        .await;
    let id = id_of(&created);
    let path = format!("/api/v1/products/{id}");
    let cache_key = format!("product:{id}");
    let page_path = "/api/v1/products";

    assert_eq!(name_of(&reader, &path).await, "Before");
    assert_eq!(name_of(&reader, &path).await, "Before");
    assert!(cache.near_holds(&cache_key));
    // Pages too: the page and its generation are kept near after the second read.
    for _ in 0..2 {
        let page: Value = reader.get(page_path, None).await.json().await.unwrap();
        assert_eq!(page["items"][0]["name"], "Before");
    }
    assert!(cache.near_holds("gen:products:pages"));

    rename(&editor, &admin, id, "After").await;
    until("the edit's invalidation reaches the other instance", || {
        !cache.near_holds(&cache_key) && !cache.near_holds("gen:products:pages")
    })
    .await;
    assert_eq!(name_of(&reader, &path).await, "After");
    let page: Value = reader.get(page_path, None).await.json().await.unwrap();
    assert_eq!(page["items"][0]["name"], "After", "a stale page was served");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_near_cache_forgets_everything_while_its_change_feed_is_down(pool: PgPool) {
    let app = spawn_app(pool).await;
    let cache = app.services.cache.clone();
    let (path, cache_key) = tracked_product(&app, "NEAR-3", "Kept").await;
    name_of(&app, &path).await;
    name_of(&app, &path).await;
    assert!(cache.near_holds(&cache_key));

    // Cut the feed the way a network failure would: Redis drops the tracking connection.
    let first_feed = cache
        .near_tracking_client_id()
        .expect("a tracking connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(first_feed)
        .query_async(&mut app.redis())
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // Whatever was kept is gone the moment the loss is noticed (changes made while the feed was
    // down would never be reported), and the cache tracks again on a new connection.
    until("a new tracking connection", || {
        cache
            .near_tracking_client_id()
            .is_some_and(|id| id != first_feed)
    })
    .await;
    assert!(
        !cache.near_holds(&cache_key),
        "an entry kept from before the outage survived it"
    );
    assert_eq!(name_of(&app, &path).await, "Kept");
    assert_eq!(name_of(&app, &path).await, "Kept");
    assert!(
        cache.near_holds(&cache_key),
        "not kept near after the feed came back"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn with_the_near_cache_off_every_read_goes_to_redis(pool: PgPool) {
    let app = spawn_app_with(pool, &[("CACHE_NEAR_MAX_BYTES", "0")]).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("NEAR-4", "Plain"))
        .await;
    let id = id_of(&created);
    let path = format!("/api/v1/products/{id}");
    name_of(&app, &path).await;
    name_of(&app, &path).await;
    assert!(!app.services.cache.near_is_live());
    assert!(!app.services.cache.near_holds(&format!("product:{id}")));
    let redis_key = format!("{}:cache:product:{id}", app.prefix);
    tamper(&app, &redis_key, |p| p["name"] = json!("Tampered")).await;
    assert_eq!(name_of(&app, &path).await, "Tampered");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_redis_that_refuses_tracking_leaves_every_read_to_redis(pool: PgPool) {
    // A Redis account that may not run CLIENT (as some managed services configure it): the near
    // cache can never start, and the api must work exactly as without one.
    let user = format!("orderly-test-{}", uuid::Uuid::new_v4().simple());
    let mut admin_redis = redis::Client::open(crate::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">refused-tracking-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-client")
        .query_async(&mut admin_redis)
        .await
        .unwrap();
    let url = crate::helpers::redis_url().replacen(
        "redis://",
        &format!("redis://{user}:refused-tracking-password@"),
        1,
    );
    let app = spawn_app_with(pool, &[("REDIS_URL", url.as_str())]).await;
    let admin = app.admin().await;
    let created = app
        .create_product_with(&admin, &product("NEAR-5", "Refused"))
        .await;
    let id = id_of(&created);
    let path = format!("/api/v1/products/{id}");
    for _ in 0..3 {
        assert_eq!(name_of(&app, &path).await, "Refused");
    }
    assert!(!app.services.cache.near_is_live());
    assert!(!app.services.cache.near_holds(&format!("product:{id}")));
    let redis_key = format!("{}:cache:product:{id}", app.prefix);
    tamper(&app, &redis_key, |p| p["name"] = json!("Tampered")).await;
    assert_eq!(name_of(&app, &path).await, "Tampered");
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin_redis)
        .await
        .unwrap();
}
