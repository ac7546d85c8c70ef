//! [`Writes`]: the writes of one operation, gathered from the services and subscribers that
//! contribute them and sent to PostgreSQL as one statement, with the outbox rows of the jobs
//! they stage.
//!
//! Each write is one data-modifying statement (`insert ... returning ...`) written by the
//! repository that owns its table, with its own `$1, $2, ...` placeholders; [`Writes`] numbers
//! them into one statement, `with w0 as (...), w1 as (...), outbox_rows as (insert into outbox
//! ...) select ...`, so an operation costs one round trip however many tables it touches, and no
//! repository reads or writes another's table.
//!
//! Run alone ([`Writes::execute`]) the statement is its own transaction: no `BEGIN` and no
//! `COMMIT` round trip, and deferred triggers and constraints still run at its end (the stock an
//! order takes, its references). Inside a [`UnitOfWork`](crate::UnitOfWork) it runs just before
//! the commit.
//!
//! Order of the writes: the first one is written first, whole, before any other. (PostgreSQL
//! runs the writes of a `with` concurrently, in an order it does not promise; the statement
//! reads the first one before anything else, which makes that one first.) Deferred triggers run
//! in the order their rows were written, so an operation whose first write fires one (an order
//! taking its stock) has it fire before the others' (their references' checks).
//!
//! The writes of several operations may also go as one statement ([`Writes::combine`]): one
//! transaction and one commit for all of them, each operation's first write written before any
//! other write, in the order the operations were given. [`crate::GroupCommit`] does that
//! for operations sent at the same moment.
//!
//! A job may also be staged to exist only if one of the writes wrote something
//! ([`Writes::stage_for_rows`]): its payload then carries the rows that write returned. That is
//! how one event's webhook deliveries, written by the same statement, reach the queue as one job
//! without the api reading them first.

use serde_json::Value;
use sqlx::{
    Arguments, Encode, PgConnection, Postgres, Type,
    error::BoxDynError,
    postgres::{PgArguments, PgRow},
};
use uuid::Uuid;

use crate::job::JobSpec;

/// A job written to the outbox by an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedJob {
    /// The outbox row id, which is also the job id.
    pub id: Uuid,
    /// The spec, whose id is the outbox row id.
    pub spec: JobSpec,
}

/// One of the writes of a [`Writes`]: the name other parts of the statement read its returned
/// rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRef(usize);

impl WriteRef {
    /// The name of the write in the statement (`w0`, `w1`, ...).
    pub fn name(self) -> String {
        format!("w{}", self.0)
    }
}

/// A job written to the outbox only if a write returned rows, with those rows in its payload.
#[derive(Debug)]
struct RowsJob {
    of: WriteRef,
    job: StagedJob,
}

/// A value bound to a placeholder, kept until the statement is sent: the writes of several
/// operations can then be numbered into one statement ([`Writes::combine`]).
trait BoundValue: Send {
    fn add_to(self: Box<Self>, args: &mut PgArguments) -> Result<(), BoxDynError>;
}

impl<T> BoundValue for T
where
    T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send + 'static,
{
    fn add_to(self: Box<Self>, args: &mut PgArguments) -> Result<(), BoxDynError> {
        args.add(*self)
    }
}

/// One write: its SQL with placeholders numbered from `$1`, and where its values start among
/// the statement's.
#[derive(Debug, Clone, Copy)]
struct WriteSql {
    sql: &'static str,
    first_bind: usize,
}

/// The writes of one operation (or of several, [`Writes::combine`]) and the jobs they stage,
/// sent as one statement.
#[derive(Default)]
pub struct Writes {
    writes: Vec<WriteSql>,
    /// Every placeholder's value, in the statement's order.
    values: Vec<Box<dyn BoundValue>>,
    /// The first write of each operation, in the order they are written before the others.
    leads: Vec<usize>,
    staged: Vec<StagedJob>,
    for_rows: Vec<RowsJob>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("writes", &self.writes.len())
            .field("binds", &self.values.len())
            .field("operations", &self.leads.len())
            .field("staged", &self.staged.len())
            .field("staged_for_rows", &self.for_rows.len())
            .finish()
    }
}

/// A write being added: bind its placeholders in order, then [`Write::finish`].
#[must_use = "a write is added by `finish`"]
pub struct Write<'w> {
    writes: &'w mut Writes,
    sql: &'static str,
    first_bind: usize,
}

impl Write<'_> {
    /// Binds the write's next placeholder (`$1` first).
    pub fn bind<T>(self, value: T) -> Self
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send + 'static,
    {
        self.writes.values.push(Box::new(value));
        self
    }

    /// Adds the write to the statement; the handle names it for [`Writes::stage_for_rows`].
    ///
    /// # Panics
    /// If the number of values bound is not the number of placeholders in the SQL: a bug in
    /// the repository that wrote it, which every test through it shows.
    pub fn finish(self) -> WriteRef {
        let (_, placeholders) = renumber(self.sql, 0);
        assert_eq!(
            self.writes.values.len() - self.first_bind,
            placeholders,
            "a write binds one value per placeholder: {}",
            self.sql
        );
        let index = self.writes.writes.len();
        if index == 0 {
            self.writes.leads.push(0);
        }
        self.writes.writes.push(WriteSql {
            sql: self.sql,
            first_bind: self.first_bind,
        });
        WriteRef(index)
    }
}

/// `sql` with each placeholder `$n` made `$(n + offset)`, and the highest `n`: how many values
/// it binds. Placeholders are the only `$` a write may hold (no dollar-quoted strings).
fn renumber(sql: &str, offset: usize) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut highest = 0;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(&(_, d)) = chars.peek()
            && d.is_ascii_digit()
        {
            digits.push(d);
            chars.next();
        }
        let n: usize = digits
            .parse()
            .unwrap_or_else(|_| panic!("a `$` in a write must be a placeholder: {sql}"));
        highest = highest.max(n);
        out.push('$');
        out.push_str(&(n + offset).to_string());
    }
    (out, highest)
}

impl Writes {
    /// No writes and no jobs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.staged.is_empty() && self.for_rows.is_empty()
    }

    /// Starts adding a write: one data-modifying statement (`insert ... returning ...`) with
    /// placeholders `$1, $2, ...` of its own, which [`Write::bind`] fills in order. What it
    /// returns is what [`Writes::stage_for_rows`] carries.
    pub fn write(&mut self, sql: &'static str) -> Write<'_> {
        let first_bind = self.values.len();
        Write {
            writes: self,
            sql,
            first_bind,
        }
    }

    /// Stages `spec` to be written to the outbox by this statement; returns the job id (a fresh
    /// UUIDv7, also the outbox row's id). See [`crate::outbox::stage`].
    pub fn stage(&mut self, spec: JobSpec) -> Uuid {
        let job = prepare(spec);
        let id = job.id;
        self.staged.push(job);
        id
    }

    /// Stages `spec` to be written only if the write `of` returns at least one row, with those
    /// rows (as JSON objects, one field per returned column) in its payload's `rows` field; the
    /// payload must be a JSON object. Returns the job id it has if it is written.
    pub fn stage_for_rows(&mut self, of: WriteRef, spec: JobSpec) -> Uuid {
        let job = prepare(spec);
        let id = job.id;
        self.for_rows.push(RowsJob { of, job });
        id
    }

    /// The writes and jobs of several operations as one: sent, they are one statement and one
    /// transaction, which commits all of them or none. Each operation's first write is written
    /// before any other write, in the order of `operations` (the first write of each is what
    /// the module doc says the first write of one is for: a deferred trigger it fires runs
    /// before the others', and the operations' triggers run in this order).
    pub fn combine(operations: impl IntoIterator<Item = Writes>) -> Writes {
        let mut combined = Writes::new();
        for operation in operations {
            let write_offset = combined.writes.len();
            let bind_offset = combined.values.len();
            combined
                .leads
                .extend(operation.leads.iter().map(|lead| lead + write_offset));
            combined
                .writes
                .extend(operation.writes.into_iter().map(|write| WriteSql {
                    sql: write.sql,
                    first_bind: write.first_bind + bind_offset,
                }));
            combined.values.extend(operation.values);
            combined.staged.extend(operation.staged);
            combined
                .for_rows
                .extend(operation.for_rows.into_iter().map(|rows| RowsJob {
                    of: WriteRef(rows.of.0 + write_offset),
                    job: rows.job,
                }));
        }
        combined
    }

    /// Sends the writes and the outbox rows as one statement on `conn` (its own transaction
    /// unless `conn` is in one) and returns the jobs written: every one staged with
    /// [`Writes::stage`], and those staged with [`Writes::stage_for_rows`] whose write returned
    /// rows, with those rows in their payload.
    pub async fn execute(mut self, conn: &mut PgConnection) -> Result<Vec<StagedJob>, sqlx::Error> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.statement()?;
        let mut args = PgArguments::default();
        for value in std::mem::take(&mut self.values) {
            value.add_to(&mut args).map_err(sqlx::Error::Encode)?;
        }
        let rows: Vec<PgRow> = sqlx::query_with(&sql, args).fetch_all(conn).await?;
        let mut written = self.staged;
        for row in rows {
            use sqlx::Row;
            let id: Uuid = row.try_get("id")?;
            let spec: sqlx::types::Json<JobSpec> = row.try_get("spec")?;
            written.push(StagedJob { id, spec: spec.0 });
        }
        Ok(written)
    }

    /// The whole statement; binds the outbox rows' values after the writes'.
    fn statement(&mut self) -> Result<String, sqlx::Error> {
        let mut sql = String::with_capacity(self.writes.len() * 256 + 512);
        sql.push_str("with ");
        for (index, write) in self.writes.iter().enumerate() {
            if index > 0 {
                sql.push_str(", ");
            }
            let (renumbered, _) = renumber(write.sql, write.first_bind);
            sql.push_str(&format!("w{index} as ({renumbered})"));
        }
        // Reads each operation's first write whole, in order, before anything else (see the
        // module doc): uncorrelated conditions are checked once, in the order written, before
        // the scan they guard.
        let gates: Vec<String> = self
            .leads
            .iter()
            .map(|lead| format!("(select count(*) from w{lead})"))
            .collect();
        let has_jobs = !self.staged.is_empty() || !self.for_rows.is_empty();
        if has_jobs {
            if !self.writes.is_empty() {
                sql.push_str(", ");
            }
            sql.push_str("outbox_rows as (insert into outbox (id, queue, kind, spec) ");
            let mut arms = Vec::new();
            if !self.staged.is_empty() {
                let ids: Vec<Uuid> = self.staged.iter().map(|job| job.id).collect();
                let queues: Vec<String> = self
                    .staged
                    .iter()
                    .map(|job| job.spec.queue.clone())
                    .collect();
                let kinds: Vec<String> = self
                    .staged
                    .iter()
                    .map(|job| job.spec.kind.clone())
                    .collect();
                let specs: Vec<Value> = self
                    .staged
                    .iter()
                    .map(|job| serde_json::to_value(&job.spec))
                    .collect::<Result<_, _>>()
                    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let first = self.values.len() + 1;
                self.bind(ids);
                self.bind(queues);
                self.bind(kinds);
                self.bind(specs);
                arms.push(format!(
                    "select * from unnest(${}::uuid[], ${}::text[], ${}::text[], ${}::jsonb[])",
                    first,
                    first + 1,
                    first + 2,
                    first + 3
                ));
            }
            let for_rows = std::mem::take(&mut self.for_rows);
            for RowsJob { of, job } in &for_rows {
                let spec = serde_json::to_value(&job.spec)
                    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let first = self.values.len() + 1;
                self.bind(job.id);
                self.bind(job.spec.queue.clone());
                self.bind(job.spec.kind.clone());
                self.bind(spec);
                let write = of.name();
                arms.push(format!(
                    "select ${first}::uuid, ${}::text, ${}::text, \
                     jsonb_set(${}::jsonb, '{{payload,rows}}', \
                               (select jsonb_agg(to_jsonb(r)) from {write} as r)) \
                     where exists (select 1 from {write})",
                    first + 1,
                    first + 2,
                    first + 3
                ));
            }
            sql.push_str(&arms.join(" union all "));
            sql.push_str(" returning id, spec)");
            let rows_ids: Vec<Uuid> = for_rows.iter().map(|rows| rows.job.id).collect();
            self.bind(rows_ids);
            let gate: String = gates
                .iter()
                .map(|gate| format!("{gate} >= 0 and "))
                .collect();
            sql.push_str(&format!(
                " select id, spec from outbox_rows where {gate}id = any(${}::uuid[])",
                self.values.len()
            ));
        } else {
            // Returns no row: every gate is true but the last.
            sql.push_str(&format!(
                " select null::uuid as id, null::jsonb as spec where {} < 0",
                gates.join(" >= 0 and ")
            ));
        }
        Ok(sql)
    }

    fn bind<T>(&mut self, value: T)
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send + 'static,
    {
        self.values.push(Box::new(value));
    }
}

/// Gives `spec` a fresh id, the caller's request id and the current span's trace context.
fn prepare(mut spec: JobSpec) -> StagedJob {
    let id = Uuid::now_v7();
    // This span's context rather than the one the spec was built in: the job's run then hangs
    // under the staging of its outbox row, beside the row's push.
    stamp(
        &mut spec,
        id,
        crate::correlation::current().as_deref(),
        crate::trace::current().as_deref(),
    );
    StagedJob { id, spec }
}

/// Gives `spec` the job id `id`, `request_id` unless it has one of its own, and `traceparent`
/// (the span the job continues) when there is one.
pub(crate) fn stamp(
    spec: &mut JobSpec,
    id: Uuid,
    request_id: Option<&str>,
    traceparent: Option<&str>,
) {
    spec.id = id.to_string();
    if spec.request_id.is_none() {
        spec.request_id = request_id.map(str::to_owned);
    }
    if let Some(traceparent) = traceparent {
        spec.traceparent = Some(traceparent.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_the_whole_statement() {
        assert_eq!(
            renumber("values ($1, $2, $10)", 3),
            ("values ($4, $5, $13)".to_owned(), 10)
        );
        assert_eq!(renumber("select 1", 3), ("select 1".to_owned(), 0));
    }

    #[test]
    #[should_panic(expected = "one value per placeholder")]
    fn a_write_must_bind_each_placeholder() {
        let mut writes = Writes::new();
        let _ = writes
            .write("insert into t (a, b) values ($1, $2) returning a")
            .bind(1_i32)
            .finish();
    }
}
