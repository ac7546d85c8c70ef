//! The webhook model: event types, endpoints, deliveries, what one attempt records, and the
//! parsed input of a new endpoint and of a change to one.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{AppError, FieldError},
    events::DomainEvent,
    webhooks::signature::WebhookSecret,
};

/// The events deliveries carry; the names are the `type` of the delivered body. All but
/// `webhook.ping` can be subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookEventType {
    /// `order.placed`.
    #[serde(rename = "order.placed")]
    OrderPlaced,
    /// `order.cancelled`.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    /// `order.status_changed` (paid, shipped, delivered).
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged,
    /// `report.ready`.
    #[serde(rename = "report.ready")]
    ReportReady,
    /// `webhook.ping`: a test delivery an admin asks for, sent to one endpoint only; nobody
    /// subscribes to it.
    #[serde(rename = "webhook.ping")]
    Ping,
}

impl WebhookEventType {
    /// Every type an endpoint can subscribe to, in the order the docs list them.
    pub const SUBSCRIBABLE: [Self; 4] = [
        Self::OrderPlaced,
        Self::OrderCancelled,
        Self::OrderStatusChanged,
        Self::ReportReady,
    ];

    /// The dotted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPlaced => "order.placed",
            Self::OrderCancelled => "order.cancelled",
            Self::OrderStatusChanged => "order.status_changed",
            Self::ReportReady => "report.ready",
            Self::Ping => "webhook.ping",
        }
    }

    /// The subscribable type named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == name)
    }

    /// The webhook event a domain event is delivered as, if any (user events are not).
    pub fn of(event: &DomainEvent) -> Option<Self> {
        Self::parse(event.name())
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A URL a delivery can be sent to: absolute http(s), with a host, without credentials or a
/// fragment, stored in the parser's normalised form.
///
/// This checks the form only. Whether its address may be reached is decided at every delivery,
/// on the addresses the host resolves to then (see `webhooks::address`), because DNS answers
/// change after registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Parses and checks a URL given by an admin.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let invalid = |message: &str| AppError::invalid_field("url", message);
        let raw = raw.trim();
        if raw.len() > MAX_URL_LEN {
            return Err(invalid(&format!(
                "must be at most {MAX_URL_LEN} characters"
            )));
        }
        let url =
            url::Url::parse(raw).map_err(|_| invalid("must be an absolute http or https URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must use http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not contain credentials; authenticate deliveries by their signature",
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid("must not contain a fragment"));
        }
        Ok(Self(url.to_string()))
    }

    /// The normalised URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A checked endpoint registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookEndpoint {
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// What it wants: at least one type, each once, sorted.
    pub events: Vec<WebhookEventType>,
}

impl NewWebhookEndpoint {
    /// Parses a registration; every unknown event type is reported by position.
    pub fn parse(url: &str, events: &[String]) -> Result<Self, AppError> {
        Ok(Self {
            url: WebhookUrl::parse(url)?,
            events: parse_events(events)?,
        })
    }
}

/// Parses a subscription list: at least one type, each known and subscribable, returned sorted
/// and without repeats; every bad name is reported by position.
fn parse_events(events: &[String]) -> Result<Vec<WebhookEventType>, AppError> {
    if events.is_empty() {
        return Err(AppError::invalid_field(
            "events",
            "must name at least one event type",
        ));
    }
    let mut parsed = Vec::with_capacity(events.len());
    let mut problems = Vec::new();
    for (i, name) in events.iter().enumerate() {
        let name = name.trim();
        match WebhookEventType::parse(name) {
            Some(kind) => parsed.push(kind),
            None if name == WebhookEventType::Ping.as_str() => problems.push(FieldError::new(
                format!("events[{i}]"),
                "webhook.ping is sent on request only (POST /webhooks/{id}/ping) and cannot be \
                 subscribed to",
            )),
            None => problems.push(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "unknown event type {name:?} (known: {})",
                    WebhookEventType::SUBSCRIBABLE
                        .map(WebhookEventType::as_str)
                        .join(", ")
                ),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Unprocessable {
            message: problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
            details: problems,
        });
    }
    parsed.sort();
    parsed.dedup();
    Ok(parsed)
}

/// A checked change to an endpoint: each field present is replaced, the others are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointChanges {
    /// A new destination.
    pub url: Option<WebhookUrl>,
    /// A new subscription list (replaces the old one).
    pub events: Option<Vec<WebhookEventType>>,
    /// `true` starts deliveries again (also after a 410), `false` stops them.
    pub enabled: Option<bool>,
}

impl WebhookEndpointChanges {
    /// Parses a change with the rules of a registration; a change naming nothing is refused.
    pub fn parse(
        url: Option<&str>,
        events: Option<&[String]>,
        enabled: Option<bool>,
    ) -> Result<Self, AppError> {
        if url.is_none() && events.is_none() && enabled.is_none() {
            return Err(AppError::unprocessable(
                "name at least one of url, events, enabled",
            ));
        }
        Ok(Self {
            url: url.map(WebhookUrl::parse).transpose()?,
            events: events.map(parse_events).transpose()?,
            enabled,
        })
    }
}

/// A registered endpoint.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// What it subscribed to.
    pub events: Vec<WebhookEventType>,
    /// Signs every delivery; shown to the admin only when the endpoint is created or its secret
    /// rotated.
    pub secret: WebhookSecret,
    /// The secret before the latest rotation: it still signs deliveries, beside `secret`, until
    /// `previous_secret_expires_at`, so receivers can switch without rejecting any.
    pub previous_secret: Option<WebhookSecret>,
    /// When `previous_secret` stops signing.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// False once the receiver answered 410 Gone or an admin disabled it: no more deliveries
    /// are made.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The admin who registered it (gone if that account was deleted).
    pub created_by: Option<Uuid>,
    /// When it was registered (set by the database, UTC).
    pub created_at: DateTime<Utc>,
    /// Last change, such as being disabled (kept by a database trigger, UTC).
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// The previous secret while it still signs deliveries at `now`.
    pub fn previous_secret_at(&self, now: DateTime<Utc>) -> Option<&WebhookSecret> {
        match (&self.previous_secret, self.previous_secret_expires_at) {
            (Some(secret), Some(expires_at)) if now < expires_at => Some(secret),
            _ => None,
        }
    }

    /// The `webhook-signature` header value for one message sent at `now`: the current
    /// secret's signature, then the previous secret's while it is still valid, space-separated
    /// (Standard Webhooks receivers accept a header when any one signature verifies).
    pub fn signature(
        &self,
        message_id: &str,
        timestamp: i64,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let mut header = self.secret.sign(message_id, timestamp, body)?;
        if let Some(previous) = self.previous_secret_at(now) {
            header.push(' ');
            header.push_str(&previous.sign(message_id, timestamp, body)?);
        }
        Ok(header)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or its next retry.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: retries exhausted, the endpoint is gone (410), or its address is refused.
    Failed,
}

impl DeliveryStatus {
    /// The status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One event for one endpoint, and how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookDelivery {
    /// Id, also sent as `webhook-id` so receivers can drop duplicates.
    pub id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// `order.placed`...
    pub event_type: String,
    /// The exact body sent on every attempt (`{type, timestamp, data}`).
    pub payload: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// HTTP status of the latest attempt, if the receiver answered.
    pub last_status_code: Option<i16>,
    /// What went wrong in the latest attempt.
    pub last_error: Option<String>,
    /// How long the latest attempt took, ms.
    pub last_latency_ms: Option<i32>,
    /// When the latest attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, while one is planned.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// When a receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// Last change of status or attempts (kept by a database trigger, UTC).
    pub updated_at: DateTime<Utc>,
}

/// How an attempt ended, as far as the delivery row is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered,
    /// Failed; another attempt is planned at `next_retry_at`.
    Retrying {
        /// What went wrong.
        error: String,
        /// When the queue will run it again.
        next_retry_at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// What one delivery attempt records on its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The queue's attempt number, from 1.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Time from sending to the response (or the failure); `None` if nothing was sent.
    pub latency: Option<Duration>,
    /// The result.
    pub outcome: AttemptOutcome,
}

/// Longest error text kept on a delivery row.
pub const MAX_ERROR_LEN: usize = 500;

impl AttemptRecord {
    /// The error text, cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
    pub fn error(&self) -> Option<String> {
        let error = match &self.outcome {
            AttemptOutcome::Delivered => return None,
            AttemptOutcome::Retrying { error, .. } | AttemptOutcome::Failed { error } => error,
        };
        let mut end = error.len().min(MAX_ERROR_LEN);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        Some(error[..end].to_owned())
    }

    /// The status the delivery has after this attempt.
    pub fn status(&self) -> DeliveryStatus {
        match self.outcome {
            AttemptOutcome::Delivered => DeliveryStatus::Delivered,
            AttemptOutcome::Retrying { .. } => DeliveryStatus::Pending,
            AttemptOutcome::Failed { .. } => DeliveryStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_by_name() {
        for kind in WebhookEventType::SUBSCRIBABLE {
            assert_eq!(WebhookEventType::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(WebhookEventType::parse("user.registered"), None);
        assert_eq!(WebhookEventType::parse("webhook.ping"), None);
        assert_eq!(
            serde_json::to_value(WebhookEventType::Ping).unwrap(),
            "webhook.ping"
        );
    }

    #[test]
    fn urls_are_checked_for_form() {
        assert_eq!(
            WebhookUrl::parse(" https://hooks.example.com/in?x=1 ")
                .unwrap()
                .as_str(),
            "https://hooks.example.com/in?x=1"
        );
        assert_eq!(
            WebhookUrl::parse("http://2130706433:8080")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/"
        );
        for bad in [
            "",
            "hooks.example.com/in",
            "/relative",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "https://example.com/#frag",
            "http://",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            WebhookUrl::parse(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err()
        );
    }

    #[test]
    fn registrations_need_known_events() {
        let new = NewWebhookEndpoint::parse(
            "https://example.com/",
            &[
                "report.ready".into(),
                "order.placed".into(),
                "order.placed".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            new.events,
            vec![WebhookEventType::OrderPlaced, WebhookEventType::ReportReady]
        );
        assert!(NewWebhookEndpoint::parse("https://example.com/", &[]).is_err());
        let AppError::Unprocessable { details, .. } = NewWebhookEndpoint::parse(
            "https://example.com/",
            &["order.placed".into(), "order.shipped".into()],
        )
        .unwrap_err() else {
            panic!("expected 422");
        };
        assert_eq!(details[0].field, "events[1]");
    }

    #[test]
    fn changes_are_checked_like_registrations() {
        let changes = WebhookEndpointChanges::parse(None, None, Some(true)).unwrap();
        assert_eq!(changes.enabled, Some(true));
        assert!(changes.url.is_none() && changes.events.is_none());
        assert!(WebhookEndpointChanges::parse(None, None, None).is_err());
        assert!(WebhookEndpointChanges::parse(Some("ftp://example.com/"), None, None).is_err());
        assert!(WebhookEndpointChanges::parse(None, Some(&[]), None).is_err());
        let AppError::Unprocessable { details, .. } =
            WebhookEndpointChanges::parse(None, Some(&["webhook.ping".into()]), None).unwrap_err()
        else {
            panic!("expected 422");
        };
        assert!(
            details[0].message.contains("on request only"),
            "{details:?}"
        );
    }

    fn endpoint(previous_expires_in: Option<i64>) -> WebhookEndpoint {
        let now = Utc::now();
        WebhookEndpoint {
            id: Uuid::now_v7(),
            url: "https://example.com/".into(),
            events: vec![WebhookEventType::OrderPlaced],
            secret: WebhookSecret::generate(),
            previous_secret: previous_expires_in.map(|_| WebhookSecret::generate()),
            previous_secret_expires_at: previous_expires_in
                .map(|secs| now + chrono::Duration::seconds(secs)),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            created_by: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn the_previous_secret_signs_beside_the_new_one_until_it_expires() {
        let now = Utc::now();
        let single = endpoint(None);
        let header = single.signature("id", 1, "{}", now).unwrap();
        assert_eq!(header, single.secret.sign("id", 1, "{}").unwrap());

        let rotated = endpoint(Some(60));
        let header = rotated.signature("id", 1, "{}", now).unwrap();
        let previous = rotated.previous_secret.as_ref().unwrap();
        assert_eq!(
            header,
            format!(
                "{} {}",
                rotated.secret.sign("id", 1, "{}").unwrap(),
                previous.sign("id", 1, "{}").unwrap()
            )
        );
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(
            rotated.signature("id", 1, "{}", later).unwrap(),
            rotated.secret.sign("id", 1, "{}").unwrap()
        );
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let record = AttemptRecord {
            attempt: 1,
            status_code: None,
            latency: None,
            outcome: AttemptOutcome::Failed {
                error: "é".repeat(MAX_ERROR_LEN),
            },
        };
        let error = record.error().unwrap();
        assert!(error.len() <= MAX_ERROR_LEN);
        assert_eq!(record.status(), DeliveryStatus::Failed);
    }
}
