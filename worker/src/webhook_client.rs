//! Outgoing webhook HTTP, guarded against server-side request forgery.
//!
//! One reqwest client for every delivery:
//! - **every address checked where it is final**: a custom resolver resolves each host name and
//!   hands the connector only the addresses [`AddressPolicy`] permits (public ones, plus
//!   `WEBHOOK_ALLOWLIST`), so the connection goes to an address that was checked, and a DNS
//!   answer cannot swap in `127.0.0.1` between a check and the connect. reqwest connects to IP
//!   literals without asking the resolver, so [`WebhookClient::post`] judges those itself
//!   before anything is sent;
//! - **no redirects**: a 3xx is the receiver's answer, not an instruction to call another URL
//!   (which could be internal);
//! - **no proxy**: a proxy from the environment would resolve the target itself, out of the
//!   guard's sight;
//! - one timeout for the whole attempt (`WEBHOOK_TIMEOUT_MS`);
//! - the delivery's trace context sent as `traceparent` when traces are exported.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use orderly::{
    config::WebhookConfig,
    webhooks::{AddressPolicy, address::Refused},
};
use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderValue},
    redirect,
};
use tracing::Instrument;

/// Resolves host names and keeps only the addresses the policy permits.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(resolve_permitted(
            self.policy.clone(),
            name.as_str().to_owned(),
        ))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn resolve_permitted(policy: Arc<AddressPolicy>, host: String) -> Result<Addrs, BoxError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if resolved.is_empty() {
        // Not a refusal: the name has no address (yet), which may change.
        return Err(format!("{host} has no address").into());
    }
    let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|addr| policy.permits(addr.ip()));
    if permitted.is_empty() {
        let refused: Vec<IpAddr> = refused.iter().map(SocketAddr::ip).collect();
        return Err(Box::new(Refused::blocked(host, &refused)));
    }
    if !refused.is_empty() {
        tracing::warn!(%host, refused = ?refused, "dropped addresses a webhook may not reach");
    }
    Ok(Box::new(permitted.into_iter()))
}

/// The receiver's answer to one attempt.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After`, as sent.
    pub retry_after: Option<String>,
    /// `Location` of a redirect (reported, never followed).
    pub location: Option<String>,
    /// Time until the response headers arrived.
    pub latency: Duration,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The address may not be reached; no connection was made.
    #[error("refused: {0}")]
    Refused(Refused),
    /// No answer within the timeout.
    #[error("timed out after {} ms", .latency.as_millis())]
    Timeout {
        /// Time spent.
        latency: Duration,
    },
    /// Connection, TLS, DNS or protocol failure.
    #[error("{message}")]
    Network {
        /// What failed, with its causes.
        message: String,
        /// Time spent.
        latency: Duration,
    },
}

impl SendError {
    /// Time spent before the failure; `None` when nothing was sent.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            Self::Refused(_) => None,
            Self::Timeout { latency } | Self::Network { latency, .. } => Some(*latency),
        }
    }
}

/// Sends webhook requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl WebhookClient {
    /// A client with the timeout and allow-list of `config`.
    pub fn from_config(config: &WebhookConfig) -> anyhow::Result<Self> {
        let policy = Arc::new(AddressPolicy::new(config.allowlist.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .user_agent(concat!("Orderly-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    /// POSTs `body` to `url` with `headers`. Nothing is sent to an address the policy refuses.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: String,
    ) -> Result<Answer, SendError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| SendError::Refused(Refused::NoHost))?;
        self.policy.check_url(&parsed).map_err(SendError::Refused)?;
        // The HTTP call as a client span of the delivery job's trace, whose context the
        // receiver gets in `traceparent` (with traces exported). The host only: a URL's path
        // or query may carry the receiver's token.
        let span = tracing::info_span!(
            "webhook.send",
            otel.name = "POST webhook",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            server.address = parsed.host_str().unwrap_or(""),
            http.response.status_code = tracing::field::Empty,
        );
        let mut headers = headers;
        if let Some(value) = span
            .in_scope(orderly::telemetry::current_traceparent)
            .and_then(|traceparent| HeaderValue::from_str(&traceparent).ok())
        {
            headers.insert("traceparent", value);
        }
        let started = Instant::now();
        let result = self
            .client
            .post(parsed)
            .headers(headers)
            .body(body)
            .send()
            .instrument(span.clone())
            .await;
        let latency = started.elapsed();
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
                if !response.status().is_success() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        match result {
            Ok(response) => {
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v: &HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                Ok(Answer {
                    status: response.status(),
                    retry_after: header(reqwest::header::RETRY_AFTER),
                    location: header(reqwest::header::LOCATION),
                    latency,
                })
            }
            Err(error) => Err(classify(&error, latency)),
        }
    }
}

/// Sorts a reqwest failure: a refusal by the resolver, a timeout, or any other network problem.
fn classify(error: &reqwest::Error, latency: Duration) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut message = String::new();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return SendError::Refused(refused.clone());
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        SendError::Timeout { latency }
    } else {
        SendError::Network { message, latency }
    }
}
