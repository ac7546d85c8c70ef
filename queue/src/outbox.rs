//! The transactional outbox: a job is written to PostgreSQL in the same transaction as the change
//! that causes it, then pushed to Redis after the commit.
//!
//! - [`stage`] adds an outbox row to the caller's [`UnitOfWork`] (or to the [`Writes`] of an
//!   operation sent as one statement of its own, [`Outbox::execute`]), which writes all of them
//!   with the operation's other writes in one statement, at its end. A rolled-back order never
//!   gets its email; a committed one always does.
//! - [`Outbox::commit`] commits the unit of work and hands its staged jobs to the dispatcher, a
//!   background task that pushes everything staged meanwhile in one Redis call; a second task
//!   deletes the pushed rows, many pushes per `DELETE`, so a push never waits for PostgreSQL.
//!   The HTTP response waits for neither. A row is deleted rather than marked dispatched: a
//!   mark writes a new version of the row and of its index entries, a delete only ends the
//!   row's version, and nothing reads a pushed row again (the job lives in the queue).
//! - [`Outbox::run_relay`] runs in every worker process: it re-pushes rows left behind for
//!   longer than a grace period (the api died between commit and push, or Redis was down),
//!   claiming them with `FOR UPDATE SKIP LOCKED` so several relays share the work. The outbox id
//!   is the job id and, for the unique window ([`Outbox::with_unique_window`]), its uniqueness
//!   key, so a re-push never makes a second job: not while the job exists (enqueue is idempotent
//!   by id), nor after retention trimmed it (the key still holds). It also prunes rows that
//!   earlier versions marked dispatched (`dispatched_at`) instead of deleting, after the
//!   retention period.

use std::{sync::Arc, time::Duration};

use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    declaration::{Job, RunAt},
    error::QueueError,
    held_connection::HeldConnection,
    job::{JobSpec, Uniqueness},
    producer::Producer,
    writes::{WriteRef, Writes},
};

pub use crate::writes::StagedJob;

/// One database transaction plus the jobs it staged in the outbox.
///
/// Commit through [`UnitOfWork::commit`], which hands the staged jobs back so the caller can
/// push them to the queue right after the commit (and never after a rollback: dropping the
/// unit of work rolls back and forgets them).
///
/// A unit of work takes a connection of its own from the pool ([`UnitOfWork::begin`]), or runs
/// on one the caller holds ([`UnitOfWork::begin_on`], the `'c` borrow), for a caller with more
/// to do on that connection after a commit or rollback (trying again after a rollback, say)
/// without queueing for the pool again.
pub struct UnitOfWork<'c> {
    tx: Transaction<'c, Postgres>,
    writes: Writes,
}

/// Whatever jobs can be staged in: a [`UnitOfWork`] (a transaction), or the [`Writes`] of an
/// operation sent as one statement of its own.
pub trait Staging: Send {
    /// The writes (and staged jobs) sent at the end.
    fn writes(&mut self) -> &mut Writes;
}

impl Staging for Writes {
    fn writes(&mut self) -> &mut Writes {
        self
    }
}

impl Staging for UnitOfWork<'_> {
    fn writes(&mut self) -> &mut Writes {
        &mut self.writes
    }
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

impl UnitOfWork<'static> {
    /// Begins a transaction on a connection from `pool` (see `BEGIN_UNIT_OF_WORK`).
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: pool.begin_with(BEGIN_UNIT_OF_WORK).await?,
            writes: Writes::new(),
        })
    }
}

impl<'c> UnitOfWork<'c> {
    /// Begins a transaction on `conn`, which the caller keeps after the commit or rollback.
    pub async fn begin_on(conn: &'c mut PgConnection) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: conn.begin_with(BEGIN_UNIT_OF_WORK).await?,
            writes: Writes::new(),
        })
    }

    /// The connection to run repository calls on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Rolls back now, forgetting the staged jobs. Dropping the unit of work rolls back too,
    /// but only once its connection is next used or back in the pool: until then the
    /// transaction's locks (an idempotency key's advisory lock) are still held, and a caller
    /// that answers and moves on (a retry taking the key over) would find them taken.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }

    /// Sends the gathered [`Writes`] and the outbox rows of the staged jobs (one statement;
    /// none when there is nothing), commits, and returns every job written.
    pub async fn commit(mut self) -> Result<Vec<StagedJob>, sqlx::Error> {
        let writes = std::mem::take(&mut self.writes);
        let staged = writes.execute(&mut self.tx).await?;
        self.tx.commit().await?;
        Ok(staged)
    }
}

/// Stages `spec` in the outbox of `to`; returns the job id (a fresh UUIDv7). The row is written
/// with every other write and job of the operation in one statement, at its end (just before
/// the commit of a unit of work): an order with an email and a webhook pays no round trip for
/// them.
#[tracing::instrument(
    name = "outbox.stage",
    skip_all,
    fields(queue = %spec.queue, kind = %spec.kind, otel.kind = "producer")
)]
pub async fn stage(to: &mut impl Staging, spec: JobSpec) -> Result<Uuid, QueueError> {
    Ok(to.writes().stage(spec))
}

/// Stages `job` in the outbox of `to` as its [`Job`] declaration says, to run as `run_at` says;
/// returns the job id. See [`stage`].
pub async fn stage_job<J: Job>(
    to: &mut impl Staging,
    job: &J,
    settings: &J::Settings,
    run_at: RunAt,
) -> Result<Uuid, QueueError> {
    stage(to, job.spec_at(settings, run_at)?).await
}

/// Stages `job` in the outbox of `to`, to run now, only if the write `of` returns rows, which
/// its payload then carries in a `rows` field ([`Writes::stage_for_rows`]); returns the job id.
#[tracing::instrument(name = "outbox.stage", skip_all, fields(otel.kind = "producer"))]
pub fn stage_job_for_rows<J: Job>(
    to: &mut impl Staging,
    of: WriteRef,
    job: &J,
    settings: &J::Settings,
) -> Result<Uuid, QueueError> {
    Ok(to.writes().stage_for_rows(of, job.spec(settings)?))
}

/// Outbox backlog, for the dashboard and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutboxBacklog {
    /// Rows not yet pushed to Redis.
    pub pending: u64,
    /// Age of the oldest of them, in ms.
    pub oldest_ms: u64,
}

/// Turns a staged job into the jobs pushed in its place, each with an id of its own (see
/// [`Outbox::with_expansion`]); `None` pushes the staged job itself.
pub type Expansion = Arc<dyn Fn(&JobSpec) -> Option<Vec<StagedJob>> + Send + Sync>;

/// A job to push, and the outbox row whose push it is (an expanded row has several).
type Push = (Uuid, JobSpec);

/// Pushes staged jobs after commit and relays the ones left behind.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    producer: Producer,
    dispatch: mpsc::UnboundedSender<Message<Push>>,
    /// How long each pushed job's outbox id stays its uniqueness key.
    unique_window: Duration,
    /// Per job kind, the jobs pushed after the commit in place of a staged one.
    expansions: Arc<Vec<(String, Expansion)>>,
}

/// The unique window an [`Outbox`] starts with: far longer than the relay's grace period and
/// than a crash between a push and its delete, without keeping many keys.
pub const DEFAULT_UNIQUE_WINDOW: Duration = Duration::from_secs(15 * 60);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// Rows the relay handles per transaction.
const RELAY_BATCH: i64 = 500;

/// Begins the transaction of a scan for rows not pushed yet (the relay's, the backlog's) with
/// bitmap scans off, so the scan walks the pending index itself.
///
/// Every pushed row is deleted, and its entry stays in `outbox_pending_idx` until a vacuum. A
/// bitmap scan (what the planner picks for these few live rows) collects every such entry and
/// visits its heap page on every call, so each relay poll and each `/metrics` scrape grew with the
/// rows pushed since the last vacuum (measured in docs/performance.md). An index scan marks the
/// entries of dead rows as it passes them (once no transaction can still see the rows), and
/// later scans skip them without visiting the heap. `set local` confines this to the
/// transaction, in the same round trip as the `begin`.
const BEGIN_PENDING_SCAN: &str = "begin; set local enable_bitmapscan = off";

/// Deletes pushed rows and returns, per row, how long it waited since its commit (seconds): the
/// dispatch lag metric. `clock_timestamp()`, not `now()`, so a long transaction does not hide
/// its own wait.
///
/// Asynchronous commit ([`crate::async_commit_source`], written out in the `using` item because
/// a checked macro takes only literals; a test below keeps the two the same): a delete lost in
/// a crash leaves the row for the relay, whose re-push is idempotent.
async fn delete_pushed<'e>(db: impl PgExecutor<'e>, ids: &[Uuid]) -> Result<Vec<f64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"delete from outbox
           using (select set_config('synchronous_commit', 'off', true)) as async_commit
           where id = any($1)
           returning extract(epoch from (clock_timestamp() - created_at))::float8 as "lag!""#,
        ids,
    )
    .fetch_all(db)
    .await
}

impl Outbox {
    /// Starts the dispatcher (must be called inside a tokio runtime).
    pub fn new(pool: PgPool, producer: Producer) -> Self {
        let (dispatch, rx) = mpsc::unbounded_channel();
        let (pushed, pushed_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_deleter(pool.clone(), pushed_rx));
        let dispatcher = Dispatcher {
            producer: producer.clone(),
            pushed,
        };
        tokio::spawn(run_dispatcher(dispatcher, rx));
        Self {
            pool,
            producer,
            dispatch,
            unique_window: DEFAULT_UNIQUE_WINDOW,
            expansions: Arc::new(Vec::new()),
        }
    }

    /// After a commit, pushes the jobs `expand` makes of a staged job of kind `kind` instead of
    /// that job (its row is deleted once they are pushed). Only the push right after the
    /// commit expands: the relay pushes the staged job itself, whose handler must then do
    /// what `expand` does. That is for a job whose only work is to queue others (one per
    /// webhook delivery of an event): in the common case they reach the queue without a worker
    /// running it first, and after a crash they still do, through it.
    ///
    /// Each job made gets the staged job's request id and trace context, and its own id as
    /// its uniqueness key for the unique window, so the same jobs made again (by the handler,
    /// after a crash between the push and the row's delete) are not queued twice.
    pub fn with_expansion(
        mut self,
        kind: impl Into<String>,
        expand: impl Fn(&JobSpec) -> Option<Vec<StagedJob>> + Send + Sync + 'static,
    ) -> Self {
        let mut expansions = (*self.expansions).clone();
        expansions.push((kind.into(), Arc::new(expand)));
        self.expansions = Arc::new(expansions);
        self
    }

    /// Sets how long a pushed job's outbox id stays its uniqueness key in Redis
    /// ([`DEFAULT_UNIQUE_WINDOW`] unless set).
    ///
    /// Every push (after commit, and the relay's re-push) carries the outbox id as the job's
    /// uniqueness key, so a row pushed twice makes one job even once retention has trimmed the
    /// first: the guard by id lasts only as long as the finished job is kept, the key lasts the
    /// window. The window bounds what the guard costs: one small key per job pushed within the
    /// last window, each expiring on its own (so about push rate × window keys, whatever the
    /// backlog or retention). Past the window, a row pushed again after its job was also
    /// trimmed would make a second job, so the window must outlast the longest a pushed row can
    /// stay undeleted (the relay's grace period, or a PostgreSQL outage that keeps the deletes
    /// from being written). A job that declares its own key ([`Job::unique`]) keeps that one.
    pub fn with_unique_window(mut self, window: Duration) -> Self {
        self.unique_window = window;
        self
    }

    /// Gives `spec` outbox id `id` as its uniqueness key for the unique window, unless it has a
    /// key of its own.
    fn guard(&self, id: Uuid, spec: &mut JobSpec) {
        if spec.unique.is_none() {
            spec.unique = Some(Uniqueness::new(id.to_string(), self.unique_window));
        }
    }

    /// The pool the outbox's statements run on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Commits `uow`, then schedules its staged jobs for an immediate push.
    pub async fn commit(&self, uow: UnitOfWork<'_>) -> Result<(), QueueError> {
        let staged = uow.commit().await?;
        self.dispatch_after_commit(staged);
        Ok(())
    }

    /// Sends `writes` as one statement on `conn`, its own transaction (`conn` must not be in
    /// one), then schedules the jobs it wrote for an immediate push, like [`Outbox::commit`].
    pub async fn execute(&self, conn: &mut PgConnection, writes: Writes) -> Result<(), QueueError> {
        let staged = writes.execute(conn).await?;
        self.dispatch_after_commit(staged);
        Ok(())
    }

    /// Pushes `jobs` now, straight to the queue, each keyed by its id for the unique window as
    /// the outbox keys its own pushes: for jobs whose ids the caller derives from rows that
    /// already exist (a job per webhook delivery, id = the delivery's), so pushing them again
    /// after a crash makes no second job. Returns once Redis has them.
    pub async fn push_now(&self, jobs: Vec<StagedJob>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let request_id = super::correlation::current();
        let traceparent = super::trace::current();
        let specs = jobs
            .into_iter()
            .map(|job| self.keyed(job, request_id.as_deref(), traceparent.as_deref()))
            .collect();
        self.producer.enqueue_many(specs).await?;
        Ok(())
    }

    /// `job`'s spec with its id, `request_id` (unless it has its own), `traceparent` (the span
    /// it continues, whatever the spec was built in), and its id as its uniqueness key for the
    /// unique window.
    fn keyed(
        &self,
        mut job: StagedJob,
        request_id: Option<&str>,
        traceparent: Option<&str>,
    ) -> JobSpec {
        crate::writes::stamp(&mut job.spec, job.id, request_id, traceparent);
        self.guard(job.id, &mut job.spec);
        job.spec
    }

    fn dispatch_after_commit(&self, staged: Vec<StagedJob>) {
        let mut pushes: Vec<Push> = Vec::with_capacity(staged.len());
        for mut job in staged {
            let expanded = self
                .expansions
                .iter()
                .find(|(kind, _)| *kind == job.spec.kind)
                .and_then(|(_, expand)| expand(&job.spec));
            match expanded {
                Some(made) => {
                    for made in made {
                        let spec = self.keyed(
                            made,
                            job.spec.request_id.as_deref(),
                            job.spec.traceparent.as_deref(),
                        );
                        pushes.push((job.id, spec));
                    }
                }
                None => {
                    self.guard(job.id, &mut job.spec);
                    pushes.push((job.id, job.spec));
                }
            }
        }
        if !pushes.is_empty() {
            // If the dispatcher is gone (shutdown), the relay picks these rows up.
            let _ = self.dispatch.send(Message::Work(pushes));
        }
    }

    /// Waits until every dispatch handed over so far has finished (graceful shutdown), at most
    /// `timeout`. Anything committed later is still pushed, or relayed by a worker.
    pub async fn drain(&self, timeout: Duration) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.dispatch.send(Message::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(timeout, finished).await;
        }
    }

    /// Pushes rows left behind for longer than `grace`, oldest first, at most `RELAY_BATCH` per
    /// transaction, and deletes them; returns how many were pushed.
    // Debug, not info: it runs on every poll of every worker, and an exported trace per empty
    // poll would bury the real ones. A poll that finds rows gets an `outbox.relay` span.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn relay_once(&self, grace: Duration) -> Result<usize, QueueError> {
        let mut tx = self.pool.begin_with(BEGIN_PENDING_SCAN).await?;
        let rows = sqlx::query!(
            r#"select id, spec as "spec: sqlx::types::Json<JobSpec>" from outbox
               where dispatched_at is null and created_at < now() - make_interval(secs => $1)
               order by created_at limit $2 for update skip locked"#,
            grace.as_secs_f64(),
            RELAY_BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let specs: Vec<JobSpec> = rows
            .into_iter()
            .map(|row| {
                let mut spec = row.spec.0;
                spec.id = row.id.to_string();
                self.guard(row.id, &mut spec);
                spec
            })
            .collect();
        let span = tracing::info_span!(
            parent: None,
            "outbox.relay",
            jobs = specs.len(),
            otel.kind = "producer"
        );
        crate::trace::link_all(
            &span,
            specs.iter().filter_map(|spec| spec.traceparent.as_deref()),
        );
        self.producer.enqueue_many(specs).instrument(span).await?;
        let lags = delete_pushed(&mut *tx, &ids).await?;
        tx.commit().await?;
        crate::metrics::outbox_dispatched("relay", &lags);
        tracing::info!(relayed = ids.len(), "relayed outbox rows left behind");
        Ok(ids.len())
    }

    /// Deletes rows marked dispatched more than `retention` ago, in bounded batches; returns how
    /// many. Only earlier versions marked rows (this one deletes them once pushed), so this
    /// clears what they left, including during a rolling deploy.
    pub async fn prune(&self, retention: Duration) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query!(
                "delete from outbox where id in (select id from outbox \
                 where dispatched_at < now() - make_interval(secs => $1) limit 10000)",
                retention.as_secs_f64(),
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < 10_000 {
                return Ok(total);
            }
        }
    }

    /// Rows not pushed yet and the age of the oldest.
    pub async fn backlog(&self) -> Result<OutboxBacklog, QueueError> {
        let mut tx = self.pool.begin_with(BEGIN_PENDING_SCAN).await?;
        let row = sqlx::query!(
            r#"select count(*) as "pending!",
                      (extract(epoch from (now() - min(created_at))) * 1000)::float8 as oldest_ms
               from outbox where dispatched_at is null"#,
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(OutboxBacklog {
            pending: u64::try_from(row.pending).unwrap_or(0),
            oldest_ms: row.oldest_ms.map(|ms| ms.max(0.0) as u64).unwrap_or(0),
        })
    }

    /// The relay loop: every `every`, re-push rows older than `grace`; prune once a minute.
    pub async fn run_relay(
        self,
        every: Duration,
        grace: Duration,
        retention: Duration,
        stop: CancellationToken,
    ) {
        let mut last_prune = tokio::time::Instant::now();
        loop {
            loop {
                match self.relay_once(grace).await {
                    Ok(n) if n as i64 == RELAY_BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay failed; retrying");
                        break;
                    }
                }
            }
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                match self.prune(retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "pruned dispatched outbox rows"),
                    Err(error) => tracing::warn!(%error, "outbox prune failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// What the dispatcher and the deleter receive: work (staged jobs; ids of pushed rows), or a
/// flush to answer once everything sent before it is done.
enum Message<T> {
    Work(Vec<T>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// `first` and whatever else is queued already, up to about `limit` items: the work, and the
/// flushes among it.
fn gather<T>(
    first: Message<T>,
    rx: &mut mpsc::UnboundedReceiver<Message<T>>,
    limit: usize,
) -> (Vec<T>, Vec<tokio::sync::oneshot::Sender<()>>) {
    let mut work = Vec::new();
    let mut flushes = Vec::new();
    let mut next = Some(first);
    while let Some(message) = next.take() {
        match message {
            Message::Work(items) => work.extend(items),
            Message::Flush(done) => flushes.push(done),
        }
        if work.len() < limit {
            next = rx.try_recv().ok();
        }
    }
    (work, flushes)
}

struct Dispatcher {
    producer: Producer,
    pushed: mpsc::UnboundedSender<Message<Uuid>>,
}

/// Pushes staged jobs to Redis, everything that queued up during the previous push in one push.
/// Deleting the pushed rows is the deleter's job, so a push never waits for PostgreSQL (the
/// delete's round trip, and its wait for a pooled connection, would hold back every job staged
/// meanwhile).
async fn run_dispatcher(dispatcher: Dispatcher, mut rx: mpsc::UnboundedReceiver<Message<Push>>) {
    while let Some(first) = rx.recv().await {
        let (staged, flushes) = gather(first, &mut rx, 1000);
        if !staged.is_empty() {
            dispatcher.push(staged).await;
        }
        // After this batch's ids, so a flush is answered once they are deleted.
        for done in flushes {
            let _ = dispatcher.pushed.send(Message::Flush(done));
        }
    }
}

impl Dispatcher {
    async fn push(&self, staged: Vec<Push>) {
        let count = staged.len();
        // One push carries the jobs of many requests: with tracing on it is a span of its own
        // (a trace of its own), linked to where each job was staged.
        let span = if crate::trace::enabled() {
            let span = tracing::info_span!(
                parent: None,
                "outbox.push",
                jobs = count,
                otel.kind = "producer"
            );
            crate::trace::link_all(
                &span,
                staged
                    .iter()
                    .filter_map(|(_, spec)| spec.traceparent.as_deref()),
            );
            span
        } else {
            tracing::Span::none()
        };
        let (mut ids, specs): (Vec<Uuid>, Vec<JobSpec>) = staged.into_iter().unzip();
        // An expanded row is pushed as several jobs and deleted once.
        ids.dedup();
        let pushed = self.producer.enqueue_many(specs).instrument(span).await;
        if let Err(error) = pushed {
            // The rows stay; the relay pushes them once Redis is back.
            tracing::warn!(%error, jobs = count, "push after commit failed; the outbox relay will retry");
            return;
        }
        let _ = self.pushed.send(Message::Work(ids));
    }
}

/// Deletes pushed rows, everything pushed meanwhile in one `DELETE`, on a connection held
/// across the gaps between pushes ([`HeldConnection`]). A row pushed but not yet deleted (the
/// process dies in between) is pushed again by the relay, which the engine ignores by id.
async fn run_deleter(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Message<Uuid>>) {
    let mut conn = HeldConnection::new(pool);
    while let Some(first) = conn.next(&mut rx).await {
        let (ids, flushes) = gather(first, &mut rx, 5000);
        if !ids.is_empty() {
            let deleted = async { delete_pushed(conn.get().await?, &ids).await }.await;
            match deleted {
                Ok(lags) => crate::metrics::outbox_dispatched("commit", &lags),
                Err(error) => {
                    conn.give_back();
                    tracing::warn!(%error, rows = ids.len(), "deleting pushed outbox rows failed")
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn delete_pushed_uses_the_async_commit_fragment() {
        assert!(include_str!("outbox.rs").contains(crate::async_commit_source!()));
    }
}
