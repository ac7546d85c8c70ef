//! Where the workers' output lands during the benchmark: a real SMTP server (mailin) for the
//! order confirmations and an HTTP server for the signed webhooks, both on loopback ports bound
//! to 0. Each records the instant a message was accepted and its raw text; the end-to-end
//! phase later finds its order ids in them.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use mailin_embedded::{Handler, Response, Server, response};

/// One accepted message: when, and its text.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When the server accepted it (end of SMTP DATA, or the webhook request body read).
    pub at: Instant,
    /// Raw message or request body.
    pub text: String,
}

/// Arrivals shared between a server's connections and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<Arrival>>>);

impl Arrivals {
    fn push(&self, text: String) {
        let at = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arrival { at, text });
    }

    /// Everything received so far.
    pub fn snapshot(&self) -> Vec<Arrival> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Messages received so far.
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// mailin clones the handler per connection: the message in progress is the connection's own.
#[derive(Clone)]
struct SmtpRecorder {
    arrivals: Arrivals,
    current: String,
}

impl Handler for SmtpRecorder {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        self.current.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.arrivals.push(std::mem::take(&mut self.current));
        response::OK
    }
}

/// Starts the SMTP server; returns its `smtp://` URL and its arrivals.
pub fn start_smtp() -> anyhow::Result<(String, Arrivals)> {
    let arrivals = Arrivals::default();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("smtp://127.0.0.1:{}", listener.local_addr()?.port());
    let mut server = Server::new(SmtpRecorder {
        arrivals: arrivals.clone(),
        current: String::new(),
    });
    // mailin serves a connection per thread for the connection's whole life, and the workers
    // keep pooled SMTP connections open: enough threads for every pooled connection, as a
    // real mail server would accept them.
    server
        .with_name("bench-smtp")
        .with_num_threads(64)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    Ok((url, arrivals))
}

/// Starts the webhook receiver; returns its URL (`/hooks`) and its arrivals.
pub async fn start_webhook_receiver() -> anyhow::Result<(String, Arrivals)> {
    let arrivals = Arrivals::default();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, arrivals))
}

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    arrivals.push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::NO_CONTENT
}
