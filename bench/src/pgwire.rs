//! A counting proxy for PostgreSQL's wire protocol, so the benchmark can say what one request
//! costs the database: an api pointed at it has every message forwarded unchanged to the real
//! server, while the proxy counts, over all connections, the statements run (simple queries and
//! extended-protocol executes), the round trips (simple queries and syncs; apart, the bare syncs
//! that check a pooled connection), the commits, and how long each transaction held the row
//! locks of an `update products` (from forwarding the execute to forwarding the
//! ready-for-query that answers the transaction's `COMMIT`). A transaction that inserts order
//! lines and sends no such update has its stock taken by its commit (a deferred trigger): its
//! hold is counted from forwarding the `COMMIT`, an upper bound, since the trigger locks the
//! product's row somewhere inside the commit. A statement inserting order lines sent outside a
//! transaction (an order placed in one statement) is a transaction of its own, committed at its
//! end: its hold is counted from forwarding its execute to the answer to its sync, the whole
//! statement, a looser upper bound.
//!
//! Only plaintext connections are parsed: the proxy itself refuses SSL and GSS encryption
//! requests (as a server without them would), so clients that prefer encryption carry on
//! without it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Request codes of the untyped packets a client may send before its startup packet.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Longer messages are taken for a broken stream rather than allocated.
const MAX_MESSAGE: usize = 1 << 30;

/// What the proxy has seen since it started or was last [`Proxy::reset`].
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// `Q` messages: each one statement batch and one round trip.
    pub simple_queries: u64,
    /// `P` messages: statements prepared (a statement cache miss).
    pub parses: u64,
    /// `E` messages: extended-protocol statements executed.
    pub executes: u64,
    /// `S` messages: extended-protocol round trips.
    pub syncs: u64,
    /// Of those, syncs with nothing before them since the last round trip: sqlx's connection
    /// check when a connection leaves the pool.
    pub pings: u64,
    /// Transactions that commit: `COMMIT` simple queries, and statements inserting order lines
    /// sent outside a transaction (each its own transaction, committed at its end).
    pub commits: u64,
    /// Per transaction that ran an `update products`: microseconds from that statement's
    /// execute to the answer to its `COMMIT` (or `ROLLBACK`). Per transaction that took its
    /// stock in its commit: from forwarding the `COMMIT` to its answer, or, for a statement
    /// sent alone, from its execute to its answer (the whole statement: an upper bound).
    pub lock_holds_us: Vec<f64>,
}

#[derive(Debug, Default)]
struct Counters {
    simple_queries: AtomicU64,
    parses: AtomicU64,
    executes: AtomicU64,
    syncs: AtomicU64,
    pings: AtomicU64,
    commits: AtomicU64,
    lock_holds_us: Mutex<Vec<f64>>,
}

impl Counters {
    fn lock_holds(&self) -> std::sync::MutexGuard<'_, Vec<f64>> {
        self.lock_holds_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The proxy, listening on a loopback port until dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counters) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    // A connection ends with either side closing it: nothing to report.
                    let _ = serve(client, &upstream, &counters).await;
                });
            }
        });
        Ok(Self {
            port,
            counters,
            accept,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Zeroes the counts (connections keep their prepared statements and open transactions).
    pub fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.simple_queries,
            &c.parses,
            &c.executes,
            &c.syncs,
            &c.pings,
            &c.commits,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        c.lock_holds().clear();
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            simple_queries: c.simple_queries.load(Ordering::Relaxed),
            parses: c.parses.load(Ordering::Relaxed),
            executes: c.executes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            pings: c.pings.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            lock_holds_us: c.lock_holds().clone(),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Open connections keep being forwarded until their ends close them.
        self.accept.abort();
    }
}

/// A `postgres://[user[:password]@]host[:port][/database][?options]` URL cut into what comes
/// before the host, the host and port (the default port added), and what follows them.
fn split_url(url: &str) -> anyhow::Result<(&str, String, &str)> {
    let after_scheme = url.find("://").context("no scheme")? + 3;
    let host_start = url[after_scheme..]
        .split(['/', '?'])
        .next()
        .and_then(|authority| authority.rfind('@'))
        .map_or(after_scheme, |at| after_scheme + at + 1);
    let host_end = url[host_start..]
        .find(['/', '?'])
        .map_or(url.len(), |end| host_start + end);
    let host_port = &url[host_start..host_end];
    anyhow::ensure!(!host_port.is_empty(), "no host in {url}");
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    Ok((&url[..host_start], host_port, &url[host_end..]))
}

/// `host:port` of a PostgreSQL URL.
pub fn upstream_address(url: &str) -> anyhow::Result<String> {
    Ok(split_url(url)?.1)
}

/// `url` with its host and port replaced by those of a proxy on loopback port `port`.
pub fn through_proxy(url: &str, port: u16) -> anyhow::Result<String> {
    let (head, _, tail) = split_url(url)?;
    Ok(format!("{head}127.0.0.1:{port}{tail}"))
}

/// One client connection's state, shared by its two directions.
#[derive(Debug, Default)]
struct Connection {
    /// Prepared statement name → what its text does to the stock.
    statements: HashMap<Vec<u8>, StockStatement>,
    /// Portal name → the same, for the statement bound to it.
    portals: HashMap<Vec<u8>, StockStatement>,
    /// When the transaction's first `update products` was forwarded.
    locked_at: Option<Instant>,
    /// Whether the transaction inserted order lines (whose stock its commit may take).
    wrote_order_lines: bool,
    /// Ready-for-query messages the server owes: one per sync or simple query, counted from
    /// the one that ends the startup.
    ready_asked: u64,
    /// Ready-for-query messages forwarded so far.
    ready_seen: u64,
    /// Which ready-for-query answers the `COMMIT` or `ROLLBACK` that releases the locks.
    release_at: Option<u64>,
    /// Whether an extended-protocol message was sent since the last sync or simple query.
    extended_pending: bool,
    /// Whether the server's last ready-for-query said a transaction is open.
    in_transaction: bool,
}

async fn serve(mut client: TcpStream, upstream: &str, counters: &Counters) -> anyhow::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The untyped packets before the typed stream: encryption requests, answered here so the
    // stream stays readable, then the startup packet (or a cancel request, merely forwarded).
    loop {
        let length = client.read_u32().await? as usize;
        anyhow::ensure!((8..MAX_MESSAGE).contains(&length), "bad startup packet");
        let mut body = vec![0; length - 4];
        client.read_exact(&mut body).await?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            client.write_all(b"N").await?;
            continue;
        }
        server.write_all(&(length as u32).to_be_bytes()).await?;
        server.write_all(&body).await?;
        if code == CANCEL_REQUEST {
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            return Ok(());
        }
        break;
    }
    let connection = Mutex::new(Connection {
        ready_asked: 1,
        ..Connection::default()
    });
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let frontend = pump(client_read, server_write, |kind, body| {
        frontend_message(kind, body, counters, &connection);
    });
    let backend = pump(server_read, client_write, |kind, body| {
        if kind == b'Z' {
            backend_ready(counters, &connection, body.first().copied());
        }
    });
    // Either side closing ends the connection.
    tokio::select! {
        result = frontend => result,
        result = backend => result,
    }
}

/// Forwards typed messages from `from` to `to`, calling `inspect` with each one's type and body
/// before forwarding it; writes are flushed whenever nothing more is already read, so a batch
/// of messages goes out together and none waits.
async fn pump(
    from: impl AsyncRead + Unpin,
    to: impl AsyncWrite + Unpin,
    mut inspect: impl FnMut(u8, &[u8]),
) -> anyhow::Result<()> {
    let mut from = BufReader::with_capacity(64 * 1024, from);
    let mut to = BufWriter::with_capacity(64 * 1024, to);
    let mut body = Vec::new();
    loop {
        let kind = match from.read_u8().await {
            Ok(kind) => kind,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let length = from.read_u32().await? as usize;
        anyhow::ensure!((4..MAX_MESSAGE).contains(&length), "bad message length");
        body.resize(length - 4, 0);
        from.read_exact(&mut body).await?;
        inspect(kind, &body);
        to.write_u8(kind).await?;
        to.write_u32(length as u32).await?;
        to.write_all(&body).await?;
        if from.buffer().is_empty() {
            to.flush().await?;
        }
    }
}

/// The C string at the start of `bytes`, and what follows it.
fn c_string(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == 0) {
        Some(end) => (&bytes[..end], &bytes[end + 1..]),
        None => (bytes, &[]),
    }
}

/// What a statement does to the stock, as far as the lock hold is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum StockStatement {
    /// Updates products: takes their rows' locks.
    UpdatesProducts,
    /// Inserts order lines, whose stock a deferred trigger may take at the commit.
    InsertsOrderLines,
    #[default]
    Other,
}

impl StockStatement {
    fn of(sql: &[u8]) -> Self {
        let sql = String::from_utf8_lossy(sql).to_ascii_lowercase();
        if sql.contains("update products") {
            Self::UpdatesProducts
        } else if sql.contains("into order_items") {
            Self::InsertsOrderLines
        } else {
            Self::Other
        }
    }
}

fn frontend_message(kind: u8, body: &[u8], counters: &Counters, connection: &Mutex<Connection>) {
    let mut conn = connection.lock().unwrap_or_else(PoisonError::into_inner);
    let extended_pending = std::mem::replace(&mut conn.extended_pending, true);
    match kind {
        b'Q' => {
            counters.simple_queries.fetch_add(1, Ordering::Relaxed);
            conn.extended_pending = false;
            conn.ready_asked += 1;
            let (sql, _) = c_string(body);
            let sql = String::from_utf8_lossy(sql);
            let sql = sql.trim().trim_end_matches(';').trim();
            let commit = sql.eq_ignore_ascii_case("commit");
            if commit {
                counters.commits.fetch_add(1, Ordering::Relaxed);
            }
            if commit && conn.locked_at.is_none() && conn.wrote_order_lines {
                conn.locked_at = Some(Instant::now());
            }
            if commit || sql.eq_ignore_ascii_case("rollback") {
                conn.wrote_order_lines = false;
                if conn.locked_at.is_some() {
                    conn.release_at = Some(conn.ready_asked);
                }
            }
        }
        b'P' => {
            counters.parses.fetch_add(1, Ordering::Relaxed);
            let (name, rest) = c_string(body);
            let (sql, _) = c_string(rest);
            conn.statements
                .insert(name.to_vec(), StockStatement::of(sql));
        }
        b'B' => {
            let (portal, rest) = c_string(body);
            let (statement, _) = c_string(rest);
            let kind = conn.statements.get(statement).copied().unwrap_or_default();
            conn.portals.insert(portal.to_vec(), kind);
        }
        b'E' => {
            counters.executes.fetch_add(1, Ordering::Relaxed);
            let (portal, _) = c_string(body);
            match conn.portals.get(portal).copied().unwrap_or_default() {
                StockStatement::UpdatesProducts if conn.locked_at.is_none() => {
                    conn.locked_at = Some(Instant::now());
                }
                // Sent alone, the statement is its own transaction: its end takes the stock, and
                // the answer to the sync that follows it releases the lock.
                StockStatement::InsertsOrderLines if !conn.in_transaction => {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    conn.locked_at = Some(Instant::now());
                    conn.release_at = Some(conn.ready_asked + 1);
                }
                StockStatement::InsertsOrderLines => conn.wrote_order_lines = true,
                _ => {}
            }
        }
        b'S' => {
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            if !extended_pending {
                counters.pings.fetch_add(1, Ordering::Relaxed);
            }
            conn.extended_pending = false;
            conn.ready_asked += 1;
        }
        b'C' => {
            // Close: a statement (`S`) or a portal (`P`) by name.
            let (target, name) = body.split_first().map_or((0, &[][..]), |(t, r)| (*t, r));
            let (name, _) = c_string(name);
            if target == b'S' {
                conn.statements.remove(name);
            } else {
                conn.portals.remove(name);
            }
        }
        _ => {}
    }
}

/// A ready-for-query, with its transaction status (`I` idle, `T` in a transaction, `E` in a
/// failed one).
fn backend_ready(counters: &Counters, connection: &Mutex<Connection>, status: Option<u8>) {
    let mut conn = connection.lock().unwrap_or_else(PoisonError::into_inner);
    conn.ready_seen += 1;
    conn.in_transaction = matches!(status, Some(b'T' | b'E'));
    if conn.release_at == Some(conn.ready_seen) {
        conn.release_at = None;
        if let Some(locked_at) = conn.locked_at.take() {
            counters
                .lock_holds()
                .push(locked_at.elapsed().as_secs_f64() * 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Option<u8> = Some(b'I');
    const IN_TRANSACTION: Option<u8> = Some(b'T');

    /// Counters and a connection as the proxy has them once the client's startup is forwarded.
    fn fresh() -> (Counters, Mutex<Connection>) {
        let connection = Mutex::new(Connection {
            ready_asked: 1,
            ..Connection::default()
        });
        (Counters::default(), connection)
    }

    #[test]
    fn addresses_of_server_urls() {
        assert_eq!(
            upstream_address("postgres://postgres@127.0.0.1:5432").unwrap(),
            "127.0.0.1:5432"
        );
        assert_eq!(
            upstream_address("postgres://u:p@db/x?sslmode=disable").unwrap(),
            "db:5432"
        );
        assert_eq!(
            upstream_address("postgres://u:p@[::1]:5433").unwrap(),
            "[::1]:5433"
        );
        assert_eq!(
            through_proxy("postgres://postgres@127.0.0.1:5432/orders", 6000).unwrap(),
            "postgres://postgres@127.0.0.1:6000/orders"
        );
        assert_eq!(
            through_proxy("postgres://db/orders", 6000).unwrap(),
            "postgres://127.0.0.1:6000/orders"
        );
    }

    #[test]
    fn counts_statements_round_trips_and_the_lock_hold() {
        let (counters, connection) = fresh();
        let feed = |kind: u8, body: &[u8]| frontend_message(kind, body, &counters, &connection);
        // Startup ends with a ready-for-query of its own.
        backend_ready(&counters, &connection, IDLE);
        feed(b'S', b"");
        backend_ready(&counters, &connection, IDLE);
        feed(b'Q', b"BEGIN\0");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        feed(
            b'P',
            b"s1\0WITH w AS (select 1) UPDATE products SET stock = 0\0\0\0",
        );
        feed(b'S', b"");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        // Unnamed portal, statement s1, no formats, parameters or result formats.
        feed(b'B', b"\0s1\0\0\0\0\0\0\0");
        // Unnamed portal, no row limit.
        feed(b'E', b"\0\0\0\0\0");
        feed(b'S', b"");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        assert!(connection.lock().unwrap().locked_at.is_some());
        feed(b'Q', b"COMMIT\0");
        assert!(counters.lock_holds().is_empty());
        backend_ready(&counters, &connection, IDLE);
        assert_eq!(counters.lock_holds().len(), 1);
        assert_eq!(counters.simple_queries.load(Ordering::Relaxed), 2);
        assert_eq!(counters.parses.load(Ordering::Relaxed), 1);
        assert_eq!(counters.executes.load(Ordering::Relaxed), 1);
        assert_eq!(counters.syncs.load(Ordering::Relaxed), 3);
        assert_eq!(counters.pings.load(Ordering::Relaxed), 1);
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_commit_that_takes_the_stock_counts_its_hold_from_the_commit() {
        let (counters, connection) = fresh();
        let feed = |kind: u8, body: &[u8]| frontend_message(kind, body, &counters, &connection);
        backend_ready(&counters, &connection, IDLE);
        feed(b'Q', b"BEGIN\0");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        feed(
            b'P',
            b"s2\0WITH o AS (insert into orders values (1)) INSERT INTO order_items values (1)\0\0\0",
        );
        feed(b'B', b"\0s2\0\0\0\0\0\0\0");
        feed(b'E', b"\0\0\0\0\0");
        feed(b'S', b"");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        assert!(connection.lock().unwrap().locked_at.is_none());
        feed(b'Q', b"COMMIT\0");
        assert!(connection.lock().unwrap().locked_at.is_some());
        backend_ready(&counters, &connection, IDLE);
        assert_eq!(counters.lock_holds().len(), 1);

        // A transaction without order lines holds nothing.
        feed(b'Q', b"BEGIN\0");
        backend_ready(&counters, &connection, IN_TRANSACTION);
        feed(b'Q', b"COMMIT\0");
        backend_ready(&counters, &connection, IDLE);
        assert_eq!(counters.lock_holds().len(), 1);
    }

    #[test]
    fn an_order_statement_sent_alone_is_a_transaction_holding_until_its_answer() {
        let (counters, connection) = fresh();
        let feed = |kind: u8, body: &[u8]| frontend_message(kind, body, &counters, &connection);
        backend_ready(&counters, &connection, IDLE);
        feed(
            b'P',
            b"s3\0with w0 as (insert into orders values (1)), w1 as (insert into order_items values (1)) select 1\0\0\0",
        );
        feed(b'B', b"\0s3\0\0\0\0\0\0\0");
        feed(b'E', b"\0\0\0\0\0");
        assert!(connection.lock().unwrap().locked_at.is_some());
        feed(b'S', b"");
        assert!(counters.lock_holds().is_empty());
        backend_ready(&counters, &connection, IDLE);
        assert_eq!(counters.lock_holds().len(), 1);
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.simple_queries.load(Ordering::Relaxed), 0);
    }
}
