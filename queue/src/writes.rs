//! [`Writes`]: the writes of one operation, gathered from the services and subscribers that
//! contribute them and sent to PostgreSQL as one statement, with the outbox rows of the jobs
//! they stage.
//!
//! Each write is one data-modifying statement written by the repository that owns its table,
//! set-based: every placeholder is a column, an array holding one value per row to write
//! (`insert ... select ... from unnest($1::uuid[], $2::text[]) ... returning ...`). [`Writes`]
//! numbers them into one statement, `with w0 as (...), w1 as (...), outbox_rows as (insert into
//! outbox ...) select ...`, so an operation costs one round trip however many tables it
//! touches, and no repository reads or writes another's table.
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
//! transaction and one commit for all of them. The same write (the same SQL) of every operation
//! becomes one part of the statement, its columns the operations' columns one after another, so
//! the statement's text depends on which writes the operations make and not on how many
//! operations there are: PostgreSQL plans it once per connection and keeps the plan, however
//! large the group ([`crate::GroupCommit`] sends operations that arrive together this way). A
//! write must therefore be row by row: each row of its columns is written as if alone (an
//! `insert` from `unnest`, or an `update` of rows no other operation updates). Each operation's
//! first write is written before any other write (a later write the same as a first write is
//! written with it), and the operations' rows of one write in the order the operations were
//! given.
//!
//! A job may also be staged to exist only if one of the writes wrote something for its
//! operation ([`Writes::stage_for_rows`]): its payload then carries those rows. That is how one
//! event's webhook deliveries, written by the same statement, reach the queue as one job without
//! the api reading them first. Since a write's rows may be several operations', such a write
//! returns a key column that says whose each row is ([`Write::finish_keyed`]).

use std::any::Any;

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

/// The rows one operation's write returns: which write, and the value of the key column that
/// marks the rows as this operation's ([`Write::finish_keyed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRef {
    write: usize,
    key_column: &'static str,
    key: Uuid,
}

/// A job written to the outbox only if a write returned rows for its operation, with those rows
/// in its payload.
#[derive(Debug)]
struct RowsJob {
    of: WriteRef,
    job: StagedJob,
}

/// One column of a write: a value per row, bound as one array. The columns of the same write
/// from several operations are appended into one ([`Writes::combine`]).
trait Column: Any + Send {
    fn rows(&self) -> usize;
    /// Appends `other`'s values; `other` is the same column of the same write, so of this type.
    fn append(&mut self, other: Box<dyn Column>);
    fn add_to(self: Box<Self>, args: &mut PgArguments) -> Result<(), BoxDynError>;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T> Column for Vec<T>
where
    T: Send + 'static,
    Vec<T>: for<'q> Encode<'q, Postgres> + Type<Postgres>,
{
    fn rows(&self) -> usize {
        self.len()
    }

    fn append(&mut self, other: Box<dyn Column>) {
        let other = other
            .into_any()
            .downcast::<Vec<T>>()
            .expect("the same column of the same write has the same type in every operation");
        self.extend(*other);
    }

    fn add_to(self: Box<Self>, args: &mut PgArguments) -> Result<(), BoxDynError> {
        args.add(*self)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// One operation's part of a write: its SQL (placeholders numbered from `$1`) and its columns.
struct WriteSql {
    sql: &'static str,
    columns: Vec<Box<dyn Column>>,
}

/// The writes of one operation (or of several, [`Writes::combine`]) and the jobs they stage,
/// sent as one statement.
#[derive(Default)]
pub struct Writes {
    writes: Vec<WriteSql>,
    /// The first write of each operation, in the order they are written before the others.
    leads: Vec<usize>,
    staged: Vec<StagedJob>,
    for_rows: Vec<RowsJob>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("writes", &self.writes.len())
            .field("operations", &self.leads.len())
            .field("staged", &self.staged.len())
            .field("staged_for_rows", &self.for_rows.len())
            .finish()
    }
}

/// A write being added: bind its columns in placeholder order, then [`Write::finish`] (or
/// [`Write::finish_keyed`]).
#[must_use = "a write is added by `finish`"]
pub struct Write<'w> {
    writes: &'w mut Writes,
    sql: &'static str,
    columns: Vec<Box<dyn Column>>,
}

impl Write<'_> {
    /// Binds the write's next placeholder (`$1` first) to a column: one value per row, every
    /// column of the write as long as the others.
    pub fn bind<T>(mut self, column: Vec<T>) -> Self
    where
        T: Send + 'static,
        Vec<T>: for<'q> Encode<'q, Postgres> + Type<Postgres>,
    {
        self.columns.push(Box::new(column));
        self
    }

    /// Adds the write to the statement.
    ///
    /// # Panics
    /// If the number of columns bound is not the number of placeholders in the SQL, or the
    /// columns differ in length: a bug in the repository that wrote it, which every test
    /// through it shows.
    pub fn finish(self) {
        let _ = self.add();
    }

    /// Adds the write to the statement, which returns a uuid column `key_column` holding `key`
    /// in each row it writes for this operation (and another value in any other's); the handle
    /// names those rows for [`Writes::stage_for_rows`]. `key_column` is a plain lower-case
    /// identifier.
    ///
    /// # Panics
    /// As [`Write::finish`], and if `key_column` is not such an identifier.
    pub fn finish_keyed(self, key_column: &'static str, key: Uuid) -> WriteRef {
        assert!(
            !key_column.is_empty()
                && key_column
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "a key column is a plain identifier: {key_column}"
        );
        WriteRef {
            write: self.add(),
            key_column,
            key,
        }
    }

    fn add(self) -> usize {
        let (_, placeholders) = renumber(self.sql, 0);
        assert!(
            placeholders > 0,
            "a write's rows come from its columns: {}",
            self.sql
        );
        assert_eq!(
            self.columns.len(),
            placeholders,
            "a write binds one column per placeholder: {}",
            self.sql
        );
        assert!(
            self.columns
                .windows(2)
                .all(|pair| pair[0].rows() == pair[1].rows()),
            "a write's columns hold one value per row each: {}",
            self.sql
        );
        let index = self.writes.writes.len();
        if index == 0 {
            self.writes.leads.push(0);
        }
        self.writes.writes.push(WriteSql {
            sql: self.sql,
            columns: self.columns,
        });
        index
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

/// One part of the statement: a write every operation that makes it shares, with their columns
/// appended in the order of the operations.
struct Part {
    sql: &'static str,
    columns: Vec<Box<dyn Column>>,
}

/// The jobs staged for the rows of one part, picked by the same key column: one arm of the
/// outbox insert, each job with its operation's key.
struct RowsArm {
    part: usize,
    key_column: &'static str,
    jobs: Vec<StagedJob>,
    keys: Vec<Uuid>,
}

/// The statement to send: its text and its arguments, built together, numbering placeholders as
/// it binds.
struct Statement {
    sql: String,
    args: PgArguments,
    binds: usize,
}

impl Statement {
    /// Binds `value` and returns its placeholder number.
    fn bind<T>(&mut self, value: T) -> Result<usize, sqlx::Error>
    where
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,
    {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.binds += 1;
        Ok(self.binds)
    }

    /// Binds a write's column, as [`Statement::bind`] does a value.
    fn bind_column(&mut self, column: Box<dyn Column>) -> Result<usize, sqlx::Error> {
        column.add_to(&mut self.args).map_err(sqlx::Error::Encode)?;
        self.binds += 1;
        Ok(self.binds)
    }

    /// Binds the outbox columns of `jobs` (ids, queues, kinds, specs) and returns their
    /// placeholder numbers.
    fn bind_jobs(&mut self, jobs: &[StagedJob]) -> Result<[usize; 4], sqlx::Error> {
        let specs: Vec<Value> = jobs
            .iter()
            .map(|job| serde_json::to_value(&job.spec))
            .collect::<Result<_, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        Ok([
            self.bind(jobs.iter().map(|job| job.id).collect::<Vec<_>>())?,
            self.bind(
                jobs.iter()
                    .map(|job| job.spec.queue.clone())
                    .collect::<Vec<_>>(),
            )?,
            self.bind(
                jobs.iter()
                    .map(|job| job.spec.kind.clone())
                    .collect::<Vec<_>>(),
            )?,
            self.bind(specs)?,
        ])
    }
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

    /// Starts adding a write: one data-modifying statement, row by row (see the module doc),
    /// whose placeholders `$1, $2, ...` are columns that [`Write::bind`] fills in order. What it
    /// returns is what [`Writes::stage_for_rows`] carries.
    pub fn write(&mut self, sql: &'static str) -> Write<'_> {
        Write {
            writes: self,
            sql,
            columns: Vec::new(),
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

    /// Stages `spec` to be written only if the write `of` returns at least one row for this
    /// operation (whose key column holds its key), with those rows (as JSON objects, one field
    /// per returned column but the key) in its payload's `rows` field; the payload must be a
    /// JSON object. Returns the job id it has if it is written.
    pub fn stage_for_rows(&mut self, of: WriteRef, spec: JobSpec) -> Uuid {
        let job = prepare(spec);
        let id = job.id;
        self.for_rows.push(RowsJob { of, job });
        id
    }

    /// The writes and jobs of several operations as one: sent, they are one statement and one
    /// transaction, which commits all of them or none. Each operation's first write is written
    /// before any other write, and the rows of each write in the order of `operations` (the
    /// first write of each is what the module doc says the first write of one is for: a
    /// deferred trigger it fires runs before the others', and the operations' triggers run in
    /// this order when their first writes are the same write).
    pub fn combine(operations: impl IntoIterator<Item = Writes>) -> Writes {
        let mut combined = Writes::new();
        for operation in operations {
            let offset = combined.writes.len();
            combined
                .leads
                .extend(operation.leads.iter().map(|lead| lead + offset));
            combined.writes.extend(operation.writes);
            combined.staged.extend(operation.staged);
            combined
                .for_rows
                .extend(operation.for_rows.into_iter().map(|rows| RowsJob {
                    of: WriteRef {
                        write: rows.of.write + offset,
                        ..rows.of
                    },
                    job: rows.job,
                }));
        }
        combined
    }

    /// Sends the writes and the outbox rows as one statement on `conn` (its own transaction
    /// unless `conn` is in one) and returns the jobs written: every one staged with
    /// [`Writes::stage`], and those staged with [`Writes::stage_for_rows`] whose write returned
    /// rows, with those rows in their payload.
    pub async fn execute(self, conn: &mut PgConnection) -> Result<Vec<StagedJob>, sqlx::Error> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let mut written = Vec::with_capacity(self.staged.len() + self.for_rows.len());
        let Statement { sql, args, .. } = self.into_statement(&mut written)?;
        let rows: Vec<PgRow> = sqlx::query_with(&sql, args).fetch_all(conn).await?;
        for row in rows {
            use sqlx::Row;
            let id: Uuid = row.try_get("id")?;
            let spec: sqlx::types::Json<JobSpec> = row.try_get("spec")?;
            written.push(StagedJob { id, spec: spec.0 });
        }
        Ok(written)
    }

    /// The whole statement. Moves the jobs staged unconditionally to `written` (they are
    /// written if the statement succeeds); the others come back as its rows.
    fn into_statement(self, written: &mut Vec<StagedJob>) -> Result<Statement, sqlx::Error> {
        // The same write of every operation becomes one part, in the order each first appears.
        let mut parts: Vec<Part> = Vec::new();
        let mut part_of_write = Vec::with_capacity(self.writes.len());
        for write in self.writes {
            match parts.iter().position(|part| part.sql == write.sql) {
                Some(index) => {
                    for (column, more) in parts[index].columns.iter_mut().zip(write.columns) {
                        column.append(more);
                    }
                    part_of_write.push(index);
                }
                None => {
                    part_of_write.push(parts.len());
                    parts.push(Part {
                        sql: write.sql,
                        columns: write.columns,
                    });
                }
            }
        }
        let mut statement = Statement {
            sql: String::with_capacity(parts.len() * 256 + 512),
            args: PgArguments::default(),
            binds: 0,
        };
        statement.sql.push_str("with ");
        for (index, part) in parts.into_iter().enumerate() {
            if index > 0 {
                statement.sql.push_str(", ");
            }
            let (renumbered, _) = renumber(part.sql, statement.binds);
            statement
                .sql
                .push_str(&format!("w{index} as ({renumbered})"));
            for column in part.columns {
                statement.bind_column(column)?;
            }
        }
        // Reads each operation's first write whole, in order, before anything else (see the
        // module doc): uncorrelated conditions are checked once, in the order written, before
        // the scan they guard.
        let mut lead_parts: Vec<usize> = Vec::new();
        for lead in &self.leads {
            let part = part_of_write[*lead];
            if !lead_parts.contains(&part) {
                lead_parts.push(part);
            }
        }
        let gates: Vec<String> = lead_parts
            .iter()
            .map(|part| format!("(select count(*) from w{part})"))
            .collect();
        let has_jobs = !self.staged.is_empty() || !self.for_rows.is_empty();
        if !has_jobs {
            // Returns no row: every gate is true but the last.
            statement.sql.push_str(&format!(
                " select null::uuid as id, null::jsonb as spec where {} < 0",
                gates.join(" >= 0 and ")
            ));
            return Ok(statement);
        }
        if !part_of_write.is_empty() {
            statement.sql.push_str(", ");
        }
        statement
            .sql
            .push_str("outbox_rows as (insert into outbox (id, queue, kind, spec) ");
        let mut arms = Vec::new();
        if !self.staged.is_empty() {
            let [ids, queues, kinds, specs] = statement.bind_jobs(&self.staged)?;
            arms.push(format!(
                "select * from unnest(${ids}::uuid[], ${queues}::text[], ${kinds}::text[], \
                 ${specs}::jsonb[])"
            ));
        }
        // The jobs for rows of the same write and key column: one arm, each job carrying the
        // rows whose key is its own.
        let mut rows_arms: Vec<RowsArm> = Vec::new();
        let mut rows_ids = Vec::with_capacity(self.for_rows.len());
        for RowsJob { of, job } in self.for_rows {
            let part = part_of_write[of.write];
            rows_ids.push(job.id);
            match rows_arms
                .iter_mut()
                .find(|arm| arm.part == part && arm.key_column == of.key_column)
            {
                Some(arm) => {
                    arm.jobs.push(job);
                    arm.keys.push(of.key);
                }
                None => rows_arms.push(RowsArm {
                    part,
                    key_column: of.key_column,
                    jobs: vec![job],
                    keys: vec![of.key],
                }),
            }
        }
        for RowsArm {
            part,
            key_column: column,
            jobs,
            keys,
        } in rows_arms
        {
            let [ids, queues, kinds, specs] = statement.bind_jobs(&jobs)?;
            let keys = statement.bind(keys)?;
            arms.push(format!(
                "select job.id, job.queue, job.kind, \
                 jsonb_set(job.spec, '{{payload,rows}}', \
                           (select jsonb_agg(to_jsonb(r) - '{column}') from w{part} as r \
                            where r.{column} = job.key)) \
                 from unnest(${ids}::uuid[], ${queues}::text[], ${kinds}::text[], \
                             ${specs}::jsonb[], ${keys}::uuid[]) as job(id, queue, kind, spec, key) \
                 where exists (select 1 from w{part} as r where r.{column} = job.key)"
            ));
        }
        statement.sql.push_str(&arms.join(" union all "));
        statement.sql.push_str(" returning id, spec)");
        let rows_ids = statement.bind(rows_ids)?;
        let gate: String = gates
            .iter()
            .map(|gate| format!("{gate} >= 0 and "))
            .collect();
        statement.sql.push_str(&format!(
            " select id, spec from outbox_rows where {gate}id = any(${rows_ids}::uuid[])"
        ));
        written.extend(self.staged);
        Ok(statement)
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
    #[should_panic(expected = "one column per placeholder")]
    fn a_write_must_bind_each_placeholder() {
        let mut writes = Writes::new();
        writes
            .write("insert into t (a, b) select * from unnest($1::int[], $2::int[])")
            .bind(vec![1_i32])
            .finish();
    }

    #[test]
    #[should_panic(expected = "one value per row each")]
    fn a_writes_columns_are_as_long_as_each_other() {
        let mut writes = Writes::new();
        writes
            .write("insert into t (a, b) select * from unnest($1::int[], $2::int[])")
            .bind(vec![1_i32, 2])
            .bind(vec![1_i32])
            .finish();
    }
}
