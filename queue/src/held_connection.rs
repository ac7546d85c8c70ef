//! [`HeldConnection`]: a pooled PostgreSQL connection that a background task keeps from one
//! statement to the next while its work keeps coming, and gives back to the pool once the work
//! has paused for [`KEEP_CONNECTION_IDLE`].
//!
//! sqlx checks every connection given back to its pool with a round trip (a `Sync` and its
//! answer; it cannot be turned off), which wakes a PostgreSQL backend and the process for
//! nothing. A task that gave its connection back whenever its channel was empty paid that round
//! trip once per statement whenever its work came one item at a time: a shop placing orders at
//! a steady rate below what the machine can take, where each order's stock read and each
//! pushed outbox row's delete went alone. Held across the short gaps between items, the
//! connection is given back once per pause instead.
//!
//! A connection held idle is one the rest of the process cannot have, so one is held only
//! while the pool has another to give (an idle one, or room to open one), and never past the
//! pool's closing.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::mpsc;

/// How long a connection a background task or a group commit's sender used stays out of the
/// pool once its work pauses: long enough to bridge the gaps between the orders of a busy shop,
/// short enough that the pool has it back soon after they stop. Closing the pool takes it back
/// at once. Shorter than the pool's idle time before a ping (a second), so a connection held
/// this long needs none when it is used again.
pub const KEEP_CONNECTION_IDLE: Duration = Duration::from_millis(250);

/// A pooled connection kept across the gaps in a task's work; see the module doc.
pub struct HeldConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl HeldConnection {
    /// Holds nothing yet: the first [`HeldConnection::get`] acquires.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    /// The connection held, acquired from the pool first if none is.
    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Gives the connection back after a statement on it failed: it may be broken, and the
    /// pool's check on its return finds out (and closes it if it is).
    pub fn give_back(&mut self) {
        self.conn = None;
    }

    /// The next item from `work`, or `None` once every sender is gone. While none has arrived,
    /// the connection stays held for up to [`KEEP_CONNECTION_IDLE`] and is then given back
    /// (at once if the pool closes, or has no other connection to give meanwhile).
    pub async fn next<T>(&mut self, work: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
        if let Ok(item) = work.try_recv() {
            return Some(item);
        }
        if self.conn.is_some() && self.pool_has_another() {
            tokio::select! {
                biased;
                item = work.recv() => return item,
                () = tokio::time::sleep(KEEP_CONNECTION_IDLE) => {}
                () = self.pool.close_event() => {}
            }
        }
        self.give_back();
        work.recv().await
    }

    /// Whether someone else asking the pool now gets a connection without waiting for this one.
    fn pool_has_another(&self) -> bool {
        !self.pool.is_closed()
            && (self.pool.num_idle() > 0
                || self.pool.size() < self.pool.options().get_max_connections())
    }
}
