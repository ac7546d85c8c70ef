//! [`GroupCommit`]: operations sent at the same moment go to PostgreSQL together, as one
//! statement and one transaction ([`Writes::combine`]).
//!
//! Every transaction costs PostgreSQL the same fixed work whatever it writes: a snapshot, a
//! statement to bind and start, a commit record and the wait for its WAL flush; and the api one
//! query, one pooled connection and one push of its jobs. A group pays it once. At most a set
//! number of statements are in flight; an operation that finds one free goes at once, and one
//! that does not waits in a first-come, first-served line until a statement answers, when the
//! next statement takes every operation waiting (up to a set number). The fewer statements in
//! flight, the longer that wait and the larger the groups. This is PostgreSQL's own group commit
//! (several backends' commit records flushed together) moved up to the statement, where it also
//! shares the statement, the transaction and the locks its commit takes.
//!
//! One transaction for several operations means one outcome for all of them: if the combined
//! statement fails, none of its operations is written, and each is told to send its writes again
//! alone ([`Grouped::SendAlone`]), where it finds its own outcome. Failures are the exception
//! (a refused operation: a key used twice, stock run out), so a group costs one wasted statement
//! now and then, against one transaction per operation always.
//!
//! A statement in flight that waits (on a row lock another transaction holds) holds up every
//! operation waiting behind it, not only those that touch that row; the operations grouped are
//! expected to be short single statements, and the writers they wait on too.
//!
//! Locks: an operation's commit may lock a row others wait on (an order takes its product's
//! stock at the commit). Operations in a group are written in the order of the key each gives
//! (the id of the one contended row its commit locks), so two groups that share such rows lock
//! them in the same order and cannot deadlock. An operation whose commit locks more than one
//! contended row must therefore not be grouped: it is sent alone, as before.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use sqlx::{Postgres, pool::PoolConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::{KEEP_CONNECTION_IDLE, Outbox, QueueError, Writes};

/// How a grouped operation ended.
#[derive(Debug)]
pub enum Grouped {
    /// Committed, with every operation sent with it; its jobs are on their way to the queue.
    Committed,
    /// It went with others and their statement failed: nothing of it was written. Send its
    /// writes again alone (its outcome may have been the one that failed the others).
    SendAlone,
    /// It went alone and its statement failed with this error: nothing of it was written.
    Failed(QueueError),
}

/// Sends operations' writes together when they arrive together; see the module doc.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field(
                "operations_per_statement",
                &self.inner.operations_per_statement,
            )
            .finish_non_exhaustive()
    }
}

struct Inner {
    outbox: Outbox,
    /// Operations waiting for a statement, first come first.
    waiting: Mutex<VecDeque<Waiting>>,
    /// One permit per statement in flight.
    statements: Arc<Semaphore>,
    operations_per_statement: usize,
    /// Connections set aside by senders that stopped (see [`Inner::send_while_waiting`]), each
    /// with the number it was set aside under: the task that gives it back to the pool takes
    /// only its own.
    kept: Mutex<Vec<(u64, PoolConnection<Postgres>)>>,
    times_kept: AtomicU64,
}

struct Waiting {
    writes: Writes,
    lock_order: Uuid,
    done: oneshot::Sender<Grouped>,
    since: Instant,
}

impl GroupCommit {
    /// At most `statements_in_flight` statements at once (at least 1), each with at most
    /// `operations_per_statement` operations (at least 1), sent through `outbox` (its pool, and
    /// its dispatch of the jobs after the commit).
    pub fn new(
        outbox: Outbox,
        statements_in_flight: usize,
        operations_per_statement: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                outbox,
                waiting: Mutex::new(VecDeque::new()),
                statements: Arc::new(Semaphore::new(statements_in_flight.max(1))),
                operations_per_statement: operations_per_statement.max(1),
                kept: Mutex::new(Vec::new()),
                times_kept: AtomicU64::new(0),
            }),
        }
    }

    /// How many operations wait for a statement now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting()
    }

    /// Sends `writes` with whatever other operations are waiting when a statement is free:
    /// alone if nothing else is. `lock_order` is the id of the one contended row its commit
    /// locks (see the module doc); operations in a statement are written in its order.
    ///
    /// Once called, the operation is sent even if the caller stops waiting for it: like a
    /// statement already on the wire, it commits or not, and the caller's retry finds out which
    /// (an idempotency key).
    pub async fn execute(&self, writes: Writes, lock_order: Uuid) -> Grouped {
        let (done, outcome) = oneshot::channel();
        self.inner
            .waiting
            .lock()
            .expect("the group's line is never poisoned")
            .push_back(Waiting {
                writes,
                lock_order,
                done,
                since: Instant::now(),
            });
        Inner::send_if_free(&self.inner);
        // The sender was lost (it panicked) without saying: whether the operation committed
        // is unknown, and sending it again alone is what finds out (its idempotency key or id
        // refuses a second copy).
        outcome.await.unwrap_or(Grouped::SendAlone)
    }
}

impl Inner {
    /// Starts a sender if a statement is free; otherwise a busy sender takes the waiting
    /// operations when its statement answers.
    fn send_if_free(inner: &Arc<Self>) {
        if let Ok(statement) = inner.statements.clone().try_acquire_owned() {
            tokio::spawn(Self::send_while_waiting(inner.clone(), statement));
        }
    }

    /// Sends what is waiting, a statement at a time, until nothing is. Before it stops it gives
    /// its statement back and looks once more: an operation that arrived while it held the last
    /// statement found none free, and must not be left waiting.
    ///
    /// It keeps its pooled connection from one statement to the next, and when it stops it
    /// sets the connection aside for the next sender for [`KEEP_CONNECTION_IDLE`]
    /// ([`Inner::keep`]). PostgreSQL plans a prepared statement afresh on each connection for
    /// its first five runs there (then it keeps a generic plan), and a statement's text differs
    /// with the writes its operations make (an order with an idempotency key or without, say;
    /// not with how many operations it carries, see [`Writes::combine`]). With each statement
    /// on whichever connection the pool handed out next (it hands them out in turn), every
    /// connection of the pool would plan every text five times over (docs/performance.md).
    /// The same few connections see each text often.
    async fn send_while_waiting(inner: Arc<Self>, statement: OwnedSemaphorePermit) {
        let mut statement = Some(statement);
        let mut conn = None;
        loop {
            let group = inner.take_group();
            if group.is_empty() {
                if let Some(conn) = conn.take() {
                    Self::keep(&inner, conn);
                }
                drop(statement.take());
                if inner.waiting() == 0 {
                    return;
                }
                match inner.statements.clone().try_acquire_owned() {
                    Ok(permit) => statement = Some(permit),
                    // Another sender holds one, and looks again before it stops.
                    Err(_) => return,
                }
                continue;
            }
            inner.send(&mut conn, group).await;
        }
    }

    /// Sets `conn` aside for the next sender, and gives it back to the pool after
    /// [`KEEP_CONNECTION_IDLE`] unless a sender took it first; at once if the pool closes.
    fn keep(inner: &Arc<Self>, conn: PoolConnection<Postgres>) {
        let pool = inner.outbox.pool().clone();
        if pool.is_closed() {
            return;
        }
        let number = inner.times_kept.fetch_add(1, Ordering::Relaxed);
        inner
            .kept
            .lock()
            .expect("the kept connections are never poisoned")
            .push((number, conn));
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(KEEP_CONNECTION_IDLE) => {}
                () = pool.close_event() => {}
            }
            // Gone with the group commit if it was dropped meanwhile.
            if let Some(inner) = weak.upgrade() {
                let mut kept = inner
                    .kept
                    .lock()
                    .expect("the kept connections are never poisoned");
                if let Some(index) = kept.iter().position(|(n, _)| *n == number) {
                    let (_, conn) = kept.swap_remove(index);
                    drop(kept);
                    drop(conn);
                }
            }
        });
    }

    /// The connection set aside most recently, if any.
    fn take_kept(&self) -> Option<PoolConnection<Postgres>> {
        self.kept
            .lock()
            .expect("the kept connections are never poisoned")
            .pop()
            .map(|(_, conn)| conn)
    }

    fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .expect("the group's line is never poisoned")
            .len()
    }

    fn take_group(&self) -> Vec<Waiting> {
        let mut waiting = self
            .waiting
            .lock()
            .expect("the group's line is never poisoned");
        let take = waiting.len().min(self.operations_per_statement);
        waiting.drain(..take).collect()
    }

    /// Sends `group` as one statement on `conn` (taken from the pool if `None`, and left
    /// `None` if it may be broken).
    async fn send(&self, conn: &mut Option<PoolConnection<Postgres>>, mut group: Vec<Waiting>) {
        // Stable: operations with the same key keep their order of arrival.
        group.sort_by_key(|waiting| waiting.lock_order);
        let operations = group.len();
        let sent_at = Instant::now();
        let waits: Vec<_> = group
            .iter()
            .map(|waiting| sent_at - waiting.since)
            .collect();
        let (dones, writes): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|waiting| (waiting.done, waiting.writes))
            .unzip();
        // One operation combined is its own writes, the same statement.
        let outcome = self.execute(conn, Writes::combine(writes)).await;
        crate::metrics::group_committed(outcome.is_ok(), waits.into_iter(), sent_at.elapsed());
        match outcome {
            Ok(()) => {
                for done in dones {
                    let _ = done.send(Grouped::Committed);
                }
            }
            // Alone, its own error says what happened.
            Err(error) if operations == 1 => {
                if let Some(done) = dones.into_iter().next() {
                    let _ = done.send(Grouped::Failed(error));
                }
            }
            Err(error) => {
                tracing::debug!(operations, %error, "a group's statement failed; its operations go again alone");
                for done in dones {
                    let _ = done.send(Grouped::SendAlone);
                }
            }
        }
    }

    async fn execute(
        &self,
        kept: &mut Option<PoolConnection<Postgres>>,
        writes: Writes,
    ) -> Result<(), QueueError> {
        if kept.is_none() {
            *kept = self.take_kept();
        }
        let conn = match kept {
            Some(conn) => conn,
            None => kept.insert(self.outbox.pool().acquire().await?),
        };
        let sent = self.outbox.execute(conn, writes).await;
        if sent.is_err() {
            // PostgreSQL sends a statement's error before it has ended the statement's
            // transaction and freed its locks (an idempotency key's advisory lock). The
            // operations go again on other connections, and must not find those locks held:
            // one more round trip on this connection returns only once they are free. If that
            // fails too, the connection is not used again.
            if sqlx::Connection::ping(&mut **conn).await.is_err() {
                *kept = None;
            }
        }
        sent
    }
}
