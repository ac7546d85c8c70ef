//! Slow and idle clients, over real sockets speaking raw HTTP/1.1: a head trickled byte by byte
//! is cut off, a body trickled slower than its deadline is answered 408 (the upload route with
//! its own, longer deadline), an idle kept-alive connection is closed, connections past
//! `HTTP_MAX_CONNECTIONS` wait until one closes, a normal client is served meanwhile, and a
//! shutdown still finishes requests in flight.
//!
//! Limits are a second or a few; every wait for the server to act allows the limit plus
//! [`SLACK`], so a loaded machine makes these tests slower, not flaky. Lower bounds ("not closed
//! before the limit") are safe the same way: the server cannot act early.

use std::{sync::Arc, time::Duration};

use axum::routing::get;
use serde_json::Value;
use sqlx::PgPool;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::Notify,
    task::JoinHandle,
    time::{Instant, timeout},
};

use crate::helpers::{TestApp, spawn_app_with, spawn_app_with_routes};

/// Added to every limit before a test gives up waiting for the server.
const SLACK: Duration = Duration::from_secs(8);

const MIB: usize = 1024 * 1024;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect to the api")
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// The head of a POST announcing a body of `length` bytes.
fn post_head(path: &str, content_type: &str, length: usize, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// A response read off a socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the one error shape for `status`.
    fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{self:?}"
        );
        let body: Value = serde_json::from_slice(&self.body).expect("a JSON error body");
        assert_eq!(body["statusCode"], status, "{body}");
        let reason = reqwest::StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap();
        assert_eq!(body["error"], reason, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    }
}

/// Reads one response (head, then `Content-Length` bytes of body); `None` if the server closes
/// the connection first.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("a numeric Content-Length"))
        .expect("responses here carry a Content-Length");
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!("connection closed in the middle of a response body"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(RawResponse {
        status,
        headers,
        body: buf[head_end..head_end + length].to_vec(),
    })
}

/// One response, which must come within `limit`.
async fn response_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> RawResponse {
    timeout(limit, read_response(stream))
        .await
        .unwrap_or_else(|_| panic!("no response within {limit:?}"))
        .expect("the connection closed without a response")
}

/// Waits until the server closes `stream` (end of stream or reset), giving up `limit` after
/// `since`; returns the time from `since`. The server must send nothing more meanwhile.
async fn closed_within(
    stream: &mut (impl AsyncRead + Unpin),
    since: Instant,
    limit: Duration,
) -> Duration {
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout_at(since + limit, stream.read(&mut chunk)).await {
        Err(_) => panic!("the server kept the connection open for {limit:?}"),
        Ok(Ok(0) | Err(_)) => since.elapsed(),
        Ok(Ok(n)) => panic!(
            "unexpected bytes from the server: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

/// A task writing bytes slowly; stopped when dropped.
struct Trickle(JoinHandle<()>);

impl Drop for Trickle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `bytes` `piece` bytes at a time, one piece every `every`, until done or until the
/// server closes the connection.
fn trickle(mut writer: OwnedWriteHalf, bytes: Vec<u8>, piece: usize, every: Duration) -> Trickle {
    Trickle(tokio::spawn(async move {
        for chunk in bytes.chunks(piece) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Keep the connection open: closing our side would end the request for another reason.
        std::future::pending::<()>().await;
    }))
}

/// Starts a JSON body of 1 MiB (the default body limit) and sends it at 5 bytes a second.
async fn start_slow_body(app: &TestApp) -> (tokio::net::tcp::OwnedReadHalf, Trickle) {
    let (reader, mut writer) = connect(app).await.into_split();
    let head = post_head("/api/v1/auth/register", "application/json", MIB, None);
    writer.write_all(head.as_bytes()).await.unwrap();
    let slow = trickle(writer, vec![b' '; MIB], 1, Duration::from_millis(200));
    (reader, slow)
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_head_sent_slower_than_the_limit_is_cut_off(pool: PgPool) {
    let app = spawn_app_with(pool, &[("HTTP_HEADER_READ_TIMEOUT_MS", "1000")]).await;
    let limit = Duration::from_secs(1);
    let connected = Instant::now();
    // One byte every 300 ms: each arrives well inside the limit, the whole head would take 13 s.
    let (mut trickled, writer) = connect(&app).await.into_split();
    let _slow = trickle(
        writer,
        get_request("/health/live").into_bytes(),
        1,
        Duration::from_millis(300),
    );
    // And a client that connects and says nothing.
    let mut silent = connect(&app).await;

    let took = closed_within(&mut trickled, connected, limit + SLACK).await;
    assert!(took >= limit, "closed after {took:?}, before the limit");
    let took = closed_within(&mut silent, connected, limit + SLACK).await;
    assert!(took >= limit, "closed after {took:?}, before the limit");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_body_sent_slower_than_the_limit_is_408_and_the_connection_closed(pool: PgPool) {
    let app = spawn_app_with(pool, &[("HTTP_BODY_READ_TIMEOUT_MS", "2000")]).await;
    let limit = Duration::from_secs(2);
    let started = Instant::now();
    let (mut reader, _slow) = start_slow_body(&app).await;

    let response = response_within(&mut reader, limit + SLACK).await;
    response.assert_error(408);
    assert!(
        started.elapsed() >= limit,
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(response.header("connection"), Some("close"));
    closed_within(&mut reader, Instant::now(), SLACK).await;
}

/// `middleware::timeout` answers 503 and leaves the handler running detached, still reading the
/// body: the body deadline must stop it, or the trickle would hold the connection for ever. Until
/// then the bytes it reads are body, not a slow next head (whose limit here is shorter).
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_slow_body_is_cut_off_even_after_the_request_timeout_answered(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_REQUEST_TIMEOUT_MS", "1000"),
            ("HTTP_BODY_READ_TIMEOUT_MS", "4000"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let body_limit = Duration::from_secs(4);
    let started = Instant::now();
    let (mut reader, _slow) = start_slow_body(&app).await;

    let response = response_within(&mut reader, Duration::from_secs(1) + SLACK).await;
    response.assert_error(503);
    let took = closed_within(&mut reader, started, body_limit + SLACK).await;
    assert!(
        took >= body_limit,
        "closed after {took:?}, before the body deadline"
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_upload_route_has_its_own_longer_body_deadline(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_BODY_READ_TIMEOUT_MS", "1000"),
            ("HTTP_UPLOAD_BODY_READ_TIMEOUT_MS", "6000"),
        ],
    )
    .await;
    let upload_limit = Duration::from_secs(6);
    let admin = app.admin().await;
    let content_type = "multipart/form-data; boundary=SLOWCLIENT";
    let preamble = "--SLOWCLIENT\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\
                    product_import\r\n--SLOWCLIENT\r\nContent-Disposition: form-data; \
                    name=\"file\"; filename=\"products.csv\"\r\nContent-Type: text/csv\r\n\r\n";
    let form = format!(
        "{preamble}sku,name,price_cents,currency,stock\nMUG-1,Mug,1299,EUR,10\n\r\n--SLOWCLIENT--\r\n"
    );

    // Sent in five pieces over 2.5 s: past the ordinary body deadline, inside the upload's.
    let (mut reader, mut writer) = connect(&app).await.into_split();
    let head = post_head(
        "/api/v1/uploads",
        content_type,
        form.len(),
        Some(&admin.token),
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let _slow = trickle(
        writer,
        form.clone().into_bytes(),
        form.len() / 5 + 1,
        Duration::from_millis(500),
    );
    let response = response_within(&mut reader, upload_limit + SLACK).await;
    assert_eq!(response.status, 202, "{response:?}");

    // A file that never ends: 408 once the upload deadline has passed.
    let started = Instant::now();
    let (mut reader, mut writer) = connect(&app).await.into_split();
    let head = post_head("/api/v1/uploads", content_type, MIB, Some(&admin.token));
    writer
        .write_all(format!("{head}{preamble}").as_bytes())
        .await
        .unwrap();
    let _slow = trickle(writer, vec![b'x'; MIB], 1, Duration::from_millis(200));
    let response = response_within(&mut reader, upload_limit + SLACK).await;
    response.assert_error(408);
    assert!(
        started.elapsed() >= upload_limit,
        "answered after {:?}, before the upload deadline",
        started.elapsed()
    );
    assert_eq!(app.upload_count().await, 1, "only the first upload counts");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_limit(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_KEEPALIVE_IDLE_SECS", "3"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let idle_limit = Duration::from_secs(3);
    let mut stream = connect(&app).await;
    stream
        .write_all(get_request("/health/live").as_bytes())
        .await
        .unwrap();
    let response = response_within(&mut stream, SLACK).await;
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"));

    let idle_since = Instant::now();
    let took = closed_within(&mut stream, idle_since, idle_limit + SLACK).await;
    // The server's idle time began a moment before the client read the response.
    assert!(
        took >= idle_limit / 3,
        "closed after {took:?}, well before the limit"
    );
}

/// The keep-alive limit is not the head limit: a connection may wait between requests longer
/// than a head may take, but once a head has started, its own limit runs.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_kept_alive_connection_outlasts_the_head_limit_but_a_started_head_does_not(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
            ("HTTP_KEEPALIVE_IDLE_SECS", "30"),
        ],
    )
    .await;
    let mut stream = connect(&app).await;
    for _ in 0..2 {
        stream
            .write_all(get_request("/health/live").as_bytes())
            .await
            .unwrap();
        assert_eq!(response_within(&mut stream, SLACK).await.status, 200);
        // Three times the head limit, a tenth of the idle limit.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    stream.write_all(b"GET /heal").await.unwrap();
    let started = Instant::now();
    // Far sooner than the 30 s idle limit.
    closed_within(&mut stream, started, Duration::from_secs(1) + SLACK).await;
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn past_the_connection_cap_new_connections_wait_until_one_closes(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_MAX_CONNECTIONS", "2"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
            ("HTTP_KEEPALIVE_IDLE_SECS", "60"),
        ],
    )
    .await;
    // Two served connections, then idle: they hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream
            .write_all(get_request("/health/live").as_bytes())
            .await
            .unwrap();
        assert_eq!(response_within(&mut stream, SLACK).await.status, 200);
        held.push(stream);
    }

    // The kernel completes the handshake; the request waits in the listen backlog.
    let mut waiting = connect(&app).await;
    waiting
        .write_all(get_request("/health/live").as_bytes())
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(1500), read_response(&mut waiting))
            .await
            .is_err(),
        "a third connection was served while two held the only slots"
    );

    drop(held.remove(0));
    let response = response_within(&mut waiting, SLACK).await;
    assert_eq!(response.status, 200, "served once a slot was free");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_normal_client_is_served_while_slow_clients_hold_connections(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
            ("HTTP_BODY_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let (reader, writer) = connect(&app).await.into_split();
        let head = get_request("/health/live").into_bytes();
        slow.push((reader, trickle(writer, head, 1, Duration::from_millis(500))));
    }
    for _ in 0..4 {
        slow.push(start_slow_body(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for _ in 0..3 {
        let response = timeout(SLACK, app.client.get(app.url("/health/live")).send())
            .await
            .expect("a normal request waited behind slow clients")
            .expect("request sent");
        assert_eq!(response.status(), 200);
    }
    // A normal body is read at once: an invalid registration is refused on its content.
    let response = timeout(
        SLACK,
        app.client
            .post(app.url("/api/v1/auth/register"))
            .json(&serde_json::json!({"email": "not an email", "password": "x", "name": ""}))
            .send(),
    )
    .await
    .expect("a normal body waited behind slow clients")
    .expect("request sent");
    assert_eq!(response.status(), 422);
}

/// The graceful shutdown `axum::serve` gave: a request in flight is finished, an idle kept-alive
/// connection is closed at once rather than holding the shutdown for its grace period.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections(pool: PgPool) {
    let started = Arc::new(Notify::new());
    let route = {
        let started = started.clone();
        axum::Router::new().route(
            "/slow",
            get(move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
                "done"
            }),
        )
    };
    let app = spawn_app_with_routes(pool, &[("SHUTDOWN_GRACE_SECS", "60")], route).await;
    let mut idle = connect(&app).await;
    idle.write_all(get_request("/health/live").as_bytes())
        .await
        .unwrap();
    assert_eq!(response_within(&mut idle, SLACK).await.status, 200);
    let mut busy = connect(&app).await;
    busy.write_all(get_request("/slow").as_bytes())
        .await
        .unwrap();
    timeout(SLACK, started.notified())
        .await
        .expect("the slow request reached its handler");

    let stopping = Instant::now();
    let (response, ()) = timeout(SLACK, async {
        tokio::join!(response_within(&mut busy, SLACK), app.stop())
    })
    .await
    .expect("the server stopped well inside its 60 s grace period");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"done");
    closed_within(&mut idle, stopping, SLACK).await;
}
