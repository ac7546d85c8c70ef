//! The server loop: accepts TCP connections and serves HTTP/1.1 on them with hyper, bounding
//! what a slow or idle client can hold.
//!
//! `axum::serve` has no such bounds: a client sending one header byte every ten seconds, or a
//! body at one byte a second, kept a connection and its task alive forever. Here:
//! - **Request heads** must arrive within `HTTP_HEADER_READ_TIMEOUT_MS`, counted from the accept
//!   for a connection's first request and from the first byte for a later one. Past it the
//!   connection is closed without an answer: there is no request to answer yet.
//! - **Idle kept-alive connections** are closed after `HTTP_KEEPALIVE_IDLE_SECS` without a new
//!   request. No deadline runs while a request is in flight: the handler has
//!   `HTTP_REQUEST_TIMEOUT_MS`, its body the deadline below.
//! - **Request bodies** must arrive whole within `HTTP_BODY_READ_TIMEOUT_MS` of the head
//!   ([`body_deadline`]; the upload route sets `HTTP_UPLOAD_BODY_READ_TIMEOUT_MS` with
//!   [`set_body_deadline`]). Past it, reading the body fails, the request is answered 408 and the
//!   connection closed. The deadline travels with the body, so a handler that
//!   `middleware::timeout` left running detached after answering 503 cannot read it for ever
//!   either.
//! - **Connections** are capped at `HTTP_MAX_CONNECTIONS`. At the cap the loop stops accepting
//!   and new connections wait in the kernel's listen backlog until one closes, rather than being
//!   accepted and dropped: a burst is served a little late instead of refused, and the limits
//!   above free every slot within bounded time.
//!
//! hyper's own `header_read_timeout` is turned off: in hyper 1 its timer starts as soon as a
//! connection goes idle, so it would also be the keep-alive limit, which must stay longer than a
//! load balancer's idle timeout while a head should take seconds. Instead each connection keeps
//! a [`ConnectionClock`]: the stream reports bytes read, the service reports requests handed to
//! the router and their end (request body and response body both dropped: a handler left
//! running detached may still be reading the body after the response went out, and those bytes
//! are not the next head), and the connection's task closes it when the deadline passes.
//!
//! Only HTTP/1.1 is served. `axum::serve` also answered HTTP/2 with prior knowledge (h2c), only
//! because a dependency turned that feature on; no client of the api uses it, and HTTP/2 would
//! need limits of its own (streams per connection, pings).
//!
//! On shutdown the listener is closed, every connection finishes the request it is serving and
//! closes (idle ones at once), and the loop waits for them up to `SHUTDOWN_GRACE_SECS`.

use std::{
    convert::Infallible,
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use futures::task::AtomicWaker;
use hyper::{
    body::{Bytes, Frame, Incoming, SizeHint},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::TokioIo,
    server::graceful::{GracefulShutdown, Watcher},
};
use orderly::{config::HttpConfig, error::ErrorBody};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::state::AppState;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// requests in flight finish for up to `config.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = ConnectionLimits {
        header_read: config.header_read_timeout,
        keepalive_idle: config.keepalive_idle,
    };
    let slots = Arc::new(Semaphore::new(
        config.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut warned_full: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Once a minute at most: at the cap, every connection that closes lets one in.
                if warned_full.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        max_connections = config.max_connections,
                        "HTTP_MAX_CONNECTIONS reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_connection(stream, peer, app.clone(), limits, slot, graceful.watcher());
    }
    drop(listener);
    tracing::info!("shutdown signal received; finishing in-flight requests");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = config.shutdown_grace.as_secs(),
            "grace period over; dropping remaining requests"
        );
    }
    Ok(())
}

/// A failed accept that concerns one client is ignored; any other (out of file descriptors)
/// would fail again at once, so the loop pauses a second, as hyper 0.14's server did.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection in a task of its own, holding `slot` until it closes.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    slot: OwnedSemaphorePermit,
    watcher: Watcher,
) {
    let clock = Arc::new(ConnectionClock::new(limits));
    let service = {
        let clock = clock.clone();
        service_fn(move |mut request: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` did: the rate limiter reads it.
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = Arc::new(InFlight::start(&clock));
            let request = request.map(|body| TrackedBody {
                body,
                _in_flight: in_flight.clone(),
            });
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(!limits.keepalive_idle.is_zero())
        .header_read_timeout(None);
    let stream = TokioIo::new(WatchedStream {
        stream,
        clock: clock.clone(),
    });
    let connection = watcher.watch(builder.serve_connection(stream, service));
    tokio::spawn(async move {
        let _slot = slot;
        match until_deadline(connection, &clock).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%peer, %error, "connection ended with an error"),
            Err(Expired::HeaderRead) => tracing::info!(
                %peer,
                "request head not received within HTTP_HEADER_READ_TIMEOUT_MS; connection closed"
            ),
            Err(Expired::KeepAliveIdle) => tracing::debug!(%peer, "idle connection closed"),
        }
    });
}

/// Polls `connection` until it ends, or until `clock`'s deadline passes (then drops it, which
/// closes the socket).
async fn until_deadline<F: Future>(
    connection: F,
    clock: &ConnectionClock,
) -> Result<F::Output, Expired> {
    let mut connection = pin!(connection);
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    poll_fn(|cx| {
        // Registered first: a request that ends in another task (a detached handler dropping
        // its body) wakes this one to arm the idle deadline.
        clock.waker.register(cx.waker());
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ok(ended));
        }
        let Some((deadline, expired)) = clock.deadline() else {
            return Poll::Pending;
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).map(|()| Err(expired))
    })
    .await
}

/// `start` plus `limit`, or a year from `start` when a configured limit is too large to add.
fn after(start: Instant, limit: Duration) -> Instant {
    start
        .checked_add(limit)
        .unwrap_or_else(|| start + Duration::from_secs(365 * 86_400))
}

/// The connection-level limits from the config.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read: Duration,
    keepalive_idle: Duration,
}

/// Which limit closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expired {
    HeaderRead,
    KeepAliveIdle,
}

/// Where one connection stands, which says when it must be closed.
struct ConnectionClock {
    limits: ConnectionLimits,
    state: Mutex<ClockState>,
    /// The connection's task, woken when a request ends.
    waker: AtomicWaker,
}

struct ClockState {
    /// Requests handed to the router and not ended yet ([`InFlight`]).
    in_flight: usize,
    /// When the connection last had nothing in flight (accepted, or its last request ended).
    idle_since: Instant,
    /// When the head being read began: the accept for the first request (a client that
    /// connects and waits gets no more time than one that trickles), the first byte for a
    /// later one. `None` while idle between requests.
    head_started: Option<Instant>,
}

impl ConnectionClock {
    fn new(limits: ConnectionLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            state: Mutex::new(ClockState {
                in_flight: 0,
                idle_since: now,
                head_started: Some(now),
            }),
            waker: AtomicWaker::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: between requests, they start the next head.
    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
        }
    }

    /// When the connection must be closed and why; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expired)> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => (after(started, self.limits.header_read), Expired::HeaderRead),
            None => (
                after(state.idle_since, self.limits.keepalive_idle),
                Expired::KeepAliveIdle,
            ),
        })
    }
}

/// One request, from the end of its head until both its request body and its response body
/// are dropped (each held in a [`TrackedBody`]): read or abandoned, and sent or abandoned.
struct InFlight(Arc<ConnectionClock>);

impl InFlight {
    fn start(clock: &Arc<ConnectionClock>) -> Self {
        let mut state = clock.state();
        state.in_flight += 1;
        state.head_started = None;
        drop(state);
        Self(clock.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.0.waker.wake();
    }
}

/// The socket, telling the clock when bytes arrive.
struct WatchedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request or response body holding its request's [`InFlight`] until it is dropped.
struct TrackedBody<B> {
    body: B,
    _in_flight: Arc<InFlight>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The deadline of one request body, shared by the body and the layers that may move it.
#[derive(Debug, Clone)]
pub struct BodyDeadline(Arc<DeadlineState>);

#[derive(Debug)]
struct DeadlineState {
    /// The end of the request's head.
    started: Instant,
    /// How long after `started` the body must have arrived, in milliseconds.
    limit_ms: AtomicU64,
    /// Set when a read of the body failed because the deadline had passed.
    expired: AtomicBool,
}

impl BodyDeadline {
    fn new(limit: Duration) -> Self {
        let deadline = Self(Arc::new(DeadlineState {
            started: Instant::now(),
            limit_ms: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        }));
        deadline.set_limit(limit);
        deadline
    }

    /// The body must have arrived `limit` after the request's head.
    pub fn set_limit(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.0.limit_ms.store(ms, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        after(
            self.0.started,
            Duration::from_millis(self.0.limit_ms.load(Ordering::Relaxed)),
        )
    }

    fn expired(&self) -> bool {
        self.0.expired.load(Ordering::Relaxed)
    }
}

/// Gives the request body a deadline of `HTTP_BODY_READ_TIMEOUT_MS` (which a route layer may
/// move, see [`set_body_deadline`]), and answers 408 with `Connection: close` when reading the
/// body failed because it passed, whatever the handler made of the failed read.
pub async fn body_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = BodyDeadline::new(state.services.config.http.body_read_timeout);
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(deadline.clone());
    let body = Body::new(DeadlineBody {
        body,
        deadline: deadline.clone(),
        timer: None,
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if !deadline.expired() {
        return response;
    }
    let status = StatusCode::REQUEST_TIMEOUT;
    let mut response = ErrorBody::new(
        status,
        "the request body was not received in time".into(),
        None,
    )
    .into_response_with(status);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Sets the body deadline of the routes it wraps to `limit` after the head (the upload route's
/// `HTTP_UPLOAD_BODY_READ_TIMEOUT_MS`); needs [`body_deadline`] outside it.
pub async fn set_body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(deadline) = request.extensions().get::<BodyDeadline>() {
        deadline.set_limit(limit);
    }
    next.run(request).await
}

/// Why a body read failed when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within its deadline")]
struct BodyTimedOut;

/// A request body that fails once its [`BodyDeadline`] has passed.
struct DeadlineBody {
    body: Body,
    deadline: BodyDeadline,
    /// Armed on the first read, so bodiless requests never touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.body.is_end_stream() {
            return Pin::new(&mut this.body).poll_frame(cx);
        }
        let at = this.deadline.at();
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_ready() {
            this.deadline.0.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
