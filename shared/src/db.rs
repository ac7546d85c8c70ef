//! The PostgreSQL pool and the embedded migrations.
//!
//! Repositories take `&mut PgConnection`, so a service can run several of them (and the event
//! subscribers, and the outbox) inside one unit of work (`queue::UnitOfWork`: a transaction plus
//! the jobs it stages); a repository's writes can also be added to an operation's
//! `queue::Writes`, sent with the operation's other writes and outbox rows as one statement (an
//! order). The pool is created lazily: the api starts, and `/health` reports
//! PostgreSQL down, instead of refusing to start during an outage.
//!
//! Statements are checked at compile time (`sqlx::query!` and friends) against the prepared
//! data in `.sqlx/`; the few whose text is built at run time say why. Statements that switch themselves to asynchronous commit (the
//! idempotency keys and the sent-mail log, whose loss in a PostgreSQL crash is harmless: a lost
//! one is re-created by the recovery path, or the mail checked again) write out the `from` item
//! of `orderly_queue::async_commit_source!()`, since a checked macro takes only literals; the
//! test below keeps the copies in step with the macro.

use std::{str::FromStr, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseConfig;

/// Every migration of `migrations/`, compiled into the binaries.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connect options built from config (the statement cache stays on: see `DATABASE_PGBOUNCER`
/// in the config for why turning it off would not help behind a PgBouncer).
pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(config.url.expose_secret())?.application_name("orderly"))
}

/// A lazily connecting pool: no connection is made until the first query.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(config).connect_lazy_with(connect_options(config)?))
}

/// A pooled connection idle for longer than this is pinged before it is handed out.
///
/// sqlx pings every connection it hands out by default: one extra round trip per acquire,
/// and placing an order acquires several times (its transaction, the shared read of the stock
/// it took, the batched deletes of its pushed outbox rows), which under load doubled the
/// order's round trips for connections that had been idle for microseconds. A connection that has sat idle
/// for longer is the one a PostgreSQL restart or a dropped socket may have killed meanwhile,
/// so the check stays where it finds something; a connection that dies while in use fails that
/// request (503) and is discarded.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pool settings from config.
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the most recently applied migration; returns its version, or `None` if none is applied.
pub async fn revert_last(pool: &PgPool) -> Result<Option<i64>, sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?;
    let applied: Vec<i64> = sqlx::query_scalar!(
        "select version from _sqlx_migrations where success order by version desc limit 2",
    )
    .fetch_all(&mut *conn)
    .await
    .or_else(|e| match e {
        // No migrations table yet: nothing has been applied.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        other => Err(other),
    })?;
    drop(conn);
    let Some(&last) = applied.first() else {
        return Ok(None);
    };
    let target = applied.get(1).copied().unwrap_or(0);
    MIGRATOR.undo(pool, target).await?;
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    #[test]
    fn async_commit_statements_use_the_queue_crates_fragment() {
        let fragment = orderly_queue::async_commit_source!();
        for (file, source) in [
            ("emails/repository.rs", include_str!("emails/repository.rs")),
            (
                "idempotency/repository.rs",
                include_str!("idempotency/repository.rs"),
            ),
        ] {
            assert!(source.contains(fragment), "{file} lost {fragment}");
        }
    }
}
