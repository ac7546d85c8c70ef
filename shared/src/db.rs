//! The PostgreSQL pool, the embedded migrations, and the unit of work that domain operations run in.
//!
//! Repositories take `&mut PgConnection`, so a service can run several of them (and the event
//! subscribers, and the outbox) inside one [`UnitOfWork`]. The pool is created lazily: the api
//! starts, and `/health` reports PostgreSQL down, instead of refusing to start during an outage.

use std::str::FromStr;

use secrecy::ExposeSecret;
use sqlx::{
    PgConnection, PgPool, Postgres, Transaction,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{config::DatabaseConfig, queue::outbox::StagedJob};

/// A one-row `FROM` item (a string literal, for `concat!`) that switches the current transaction
/// to asynchronous commit (`synchronous_commit = off`: the commit does not wait for its WAL
/// flush).
///
/// Only for single-statement bookkeeping whose loss in a PostgreSQL crash is harmless and which
/// runs outside any business transaction: the idempotency claim and stored response (a lost one
/// is re-created by the recovery path, and the order's own synchronous commit flushes every WAL
/// record written before it anyway), the outbox `dispatched_at` mark (a lost one means one
/// idempotent re-push by the relay) and the sent-mail log (see `SentEmailService::record`). An
/// order then waits for one WAL flush, not three.
/// Used as `concat!("... from ", async_commit_source!(), " as async_commit ...")` in an
/// autocommit statement.
macro_rules! async_commit_source {
    () => {
        "(select set_config('synchronous_commit', 'off', true))"
    };
}
pub(crate) use async_commit_source;

/// Every migration of `migrations/`, compiled into the binaries.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connect options built from config, with PgBouncer's transaction mode taken into account.
pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, sqlx::Error> {
    let mut options =
        PgConnectOptions::from_str(config.url.expose_secret())?.application_name("orderly");
    if config.pgbouncer {
        // Transaction pooling hands each transaction to any server connection, so named
        // prepared statements (sqlx's statement cache) would be missing on the next one.
        options = options.statement_cache_capacity(0);
    }
    Ok(options)
}

/// A lazily connecting pool: no connection is made until the first query.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(config).connect_lazy_with(connect_options(config)?))
}

/// Pool settings from config.
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the most recently applied migration; returns its version, or `None` if none is applied.
pub async fn revert_last(pool: &PgPool) -> Result<Option<i64>, sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?;
    let applied: Vec<i64> = sqlx::query_scalar(
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

/// One database transaction plus the jobs it staged in the outbox.
///
/// Commit through [`UnitOfWork::commit`], which hands the staged jobs back so the caller can
/// push them to the queue right after the commit (and never after a rollback: dropping the
/// unit of work rolls back and forgets them).
pub struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
    staged: Vec<StagedJob>,
}

/// How a unit of work begins: a transaction whose statements run on generic plans.
///
/// A unit of work is short writes keyed by ids, and several of its statements take arrays
/// (`unnest($1::uuid[])`: the order's lines, the outbox rows, the stock taken). PostgreSQL's
/// default plan cache keeps re-planning such a prepared statement at every execution, because
/// the generic plan's estimate for an array of unknown length looks costlier than a custom
/// plan for the actual short one, so under the orders load planning becomes a visible share of
/// PostgreSQL's CPU (measured in docs/performance.md). `set local` confines this to the
/// transaction (it goes in the same round trip as the `begin`); queries elsewhere keep the
/// default.
const BEGIN_UNIT_OF_WORK: &str = "begin; set local plan_cache_mode = force_generic_plan";

impl UnitOfWork {
    /// Begins a transaction (see [`BEGIN_UNIT_OF_WORK`]).
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: pool.begin_with(BEGIN_UNIT_OF_WORK).await?,
            staged: Vec::new(),
        })
    }

    /// The connection to run repository calls on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Records a job staged in this transaction (called by the outbox).
    pub(crate) fn record_staged(&mut self, job: StagedJob) {
        self.staged.push(job);
    }

    /// Writes the staged jobs to the outbox (one statement), commits, and returns them.
    pub async fn commit(mut self) -> Result<Vec<StagedJob>, sqlx::Error> {
        if !self.staged.is_empty() {
            crate::queue::outbox::write_staged(&mut self.tx, &self.staged).await?;
        }
        self.tx.commit().await?;
        Ok(self.staged)
    }
}
