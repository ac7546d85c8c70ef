//! Migrations are reversible: on an empty database every migration applies, every one reverts
//! one at a time (newest first) until nothing is left, and they all apply again.

use sqlx::PgPool;

async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select table_name::text from information_schema.tables \
         where table_schema = 'public' and table_name <> '_sqlx_migrations' order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables listed")
}

async fn applied_versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
        .fetch_all(pool)
        .await
        .expect("versions listed")
}

#[sqlx::test(migrations = false)]
async fn migrations_apply_revert_one_by_one_and_apply_again(pool: PgPool) {
    let all_versions: Vec<i64> = orderly::db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    assert!(!all_versions.is_empty());

    // Nothing applied yet: nothing to revert.
    assert_eq!(
        orderly::db::revert_last(&pool)
            .await
            .expect("revert on empty"),
        None
    );

    orderly::db::migrate(&pool).await.expect("first apply");
    let created = tables(&pool).await;
    for table in [
        "users",
        "products",
        "orders",
        "order_items",
        "idempotency_keys",
        "outbox",
    ] {
        assert!(
            created.iter().any(|t| t == table),
            "{table} missing after migrate: {created:?}"
        );
    }
    assert_eq!(applied_versions(&pool).await, all_versions);

    // Newest first, one per call.
    let mut reverted = Vec::new();
    while let Some(version) = orderly::db::revert_last(&pool).await.expect("revert") {
        reverted.push(version);
        let remaining = applied_versions(&pool).await;
        assert!(
            remaining.iter().all(|v| *v < version),
            "reverting {version} left {remaining:?}"
        );
        assert!(
            reverted.len() <= all_versions.len(),
            "revert_last never returned None"
        );
    }
    let mut expected_order = all_versions.clone();
    expected_order.reverse();
    assert_eq!(reverted, expected_order);
    assert!(
        tables(&pool).await.is_empty(),
        "tables left: {:?}",
        tables(&pool).await
    );
    let helper_functions: i64 =
        sqlx::query_scalar("select count(*) from pg_proc where proname = 'set_updated_at'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        helper_functions, 0,
        "0001's down migration should drop set_updated_at()"
    );

    orderly::db::migrate(&pool).await.expect("second apply");
    assert_eq!(tables(&pool).await, created);
    assert_eq!(applied_versions(&pool).await, all_versions);
}
