//! SMTP connections with `TCP_NODELAY`, pooled, for `smtp://` URLs (plain, or STARTTLS with
//! `?tls=required` / `?tls=opportunistic`, credentials and EHLO name as in lettre's URL form).
//!
//! Why not lettre's own pool: lettre writes a message and its final `.` in two writes on a
//! socket with Nagle's algorithm on, so the `.` waits until the server acknowledges the message,
//! and servers delay that acknowledgement (at least 40 ms on Linux): every email waited out that
//! delay on top of its SMTP dialogue (docs/performance.md has the before and after).
//! Here lettre still speaks SMTP ([`AsyncSmtpConnection`]) over a socket we open ourselves with
//! `TCP_NODELAY`. `smtps://` (implicit TLS) keeps lettre's transport, which opens its own sockets.
//!
//! A connection goes back to the pool only after a successful send; any error drops it, so a
//! connection in an unknown state is never reused. One idle for a while is checked with `NOOP`
//! first, since servers close idle connections.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        Error,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use orderly::queue::JobError;
use tokio::sync::Mutex;

/// Idle connections kept per worker process.
const MAX_IDLE: usize = 16;
/// A connection idle longer than this is checked with `NOOP` before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    Never,
    Required,
    Opportunistic,
}

/// Where and how to connect, from an `smtp://` URL.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    starttls: StartTls,
    hello: ClientId,
    credentials: Option<Credentials>,
}

/// A pool of SMTP connections to one server.
#[derive(Clone)]
pub struct SmtpPool {
    target: Arc<Target>,
    idle: Arc<Mutex<Vec<(AsyncSmtpConnection, Instant)>>>,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credentials in logs.
        write!(f, "SmtpPool({}:{})", self.target.host, self.target.port)
    }
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl SmtpPool {
    /// A pool for `url` if it is an `smtp://` URL this pool serves; `None` for other schemes
    /// (`smtps://`), which lettre's transport handles. `timeout` bounds connecting and each send.
    pub fn from_url(url: &str, timeout: Duration) -> anyhow::Result<Option<Self>> {
        let parsed = url::Url::parse(url)?;
        if parsed.scheme() != "smtp" {
            return Ok(None);
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL has no host"))?
            .to_owned();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (starttls, default_port) = match tls.as_deref() {
            None | Some("none") => (StartTls::Never, 25),
            Some("required") => (StartTls::Required, 587),
            Some("opportunistic") => (StartTls::Opportunistic, 587),
            Some(other) => anyhow::bail!("SMTP_URL has an unknown tls={other}"),
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(parsed.username())
                    .ok_or_else(|| anyhow::anyhow!("SMTP_URL user is not valid UTF-8"))?,
                percent_decode(password)
                    .ok_or_else(|| anyhow::anyhow!("SMTP_URL password is not valid UTF-8"))?,
            )),
            None => None,
        };
        Ok(Some(Self {
            target: Arc::new(Target {
                port: parsed.port().unwrap_or(default_port),
                host,
                starttls,
                hello,
                credentials,
            }),
            idle: Arc::default(),
            timeout,
        }))
    }

    /// Opens, secures and authenticates a new connection.
    async fn connect(&self) -> Result<AsyncSmtpConnection, JobError> {
        let target = &self.target;
        let stream = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| {
            JobError::retry("mail not sent (will retry): connecting to the SMTP server timed out")
        })?
        .map_err(|e| {
            JobError::retry(format!(
                "mail not sent (will retry): connecting to the SMTP server: {e}"
            ))
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| JobError::retry(format!("mail not sent (will retry): {e}")))?;
        self.handshake(stream).await.map_err(classify)
    }

    /// Greeting, EHLO, STARTTLS and AUTH on a fresh socket.
    async fn handshake(&self, stream: tokio::net::TcpStream) -> Result<AsyncSmtpConnection, Error> {
        let target = &self.target;
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &target.hello).await?;
        match target.starttls {
            StartTls::Never => {}
            StartTls::Required => {
                connection
                    .starttls(TlsParameters::new(target.host.clone())?, &target.hello)
                    .await?;
            }
            StartTls::Opportunistic if connection.can_starttls() => {
                connection
                    .starttls(TlsParameters::new(target.host.clone())?, &target.hello)
                    .await?;
            }
            StartTls::Opportunistic => {}
        }
        if let Some(credentials) = &target.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    /// An idle connection that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, JobError> {
        loop {
            let next = self.idle.lock().await.pop();
            let Some((mut connection, idle_since)) = next else {
                return self.connect().await;
            };
            if connection.has_broken() {
                continue;
            }
            if idle_since.elapsed() < CHECK_AFTER_IDLE || connection.test_connected().await {
                return Ok(connection);
            }
            connection.abort().await;
        }
    }

    /// Sends one message (`formatted` is its RFC 5322 text), failures classified for the queue.
    pub async fn send(&self, envelope: &Envelope, formatted: &[u8]) -> Result<(), JobError> {
        let mut connection = self.checkout().await?;
        match tokio::time::timeout(self.timeout, connection.send(envelope, formatted)).await {
            Ok(Ok(_)) => {
                let mut idle = self.idle.lock().await;
                if idle.len() < MAX_IDLE {
                    idle.push((connection, Instant::now()));
                }
                Ok(())
            }
            Ok(Err(error)) => {
                connection.abort().await;
                Err(classify(error))
            }
            Err(_) => Err(JobError::retry(
                "mail not sent (will retry): the SMTP server did not answer in time",
            )),
        }
    }
}

/// An SMTP failure for the queue: 5xx replies are permanent (dead at once, with the server's
/// reason), everything else (4xx, network) is retried.
pub fn classify(error: lettre::transport::smtp::Error) -> JobError {
    if error.is_permanent() {
        JobError::permanent(format!("mail server refused the message: {error}"))
    } else {
        JobError::retry(format!("mail not sent (will retry): {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_parsed_like_lettre() {
        let pool = SmtpPool::from_url(
            "smtp://user%40shop:p%25ss@mail.example:2525/shop.example?tls=required",
            Duration::from_secs(1),
        )
        .unwrap()
        .unwrap();
        assert_eq!(pool.target.host, "mail.example");
        assert_eq!(pool.target.port, 2525);
        assert_eq!(pool.target.starttls, StartTls::Required);
        assert_eq!(pool.target.hello, ClientId::Domain("shop.example".into()));
        assert!(pool.target.credentials.is_some());

        let plain = SmtpPool::from_url("smtp://127.0.0.1", Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            (plain.target.port, plain.target.starttls),
            (25, StartTls::Never)
        );
        assert!(plain.target.credentials.is_none());

        assert!(
            SmtpPool::from_url("smtps://mail.example", Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
        assert!(
            SmtpPool::from_url("smtp://mail.example?tls=bogus", Duration::from_secs(1)).is_err()
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%25c").as_deref(), Some("a@b%c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
