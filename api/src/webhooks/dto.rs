//! Request and response shapes of the webhooks routes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    pagination::{Page, PageRequest},
    webhooks::service::DEFAULT_SECRET_OVERLAP,
    webhooks::{NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

/// `POST /webhooks` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries go: an absolute http(s) URL without credentials. Private, loopback and
    /// link-local addresses are refused at delivery time.
    #[validate(length(min = 1, max = 2048, message = "must be 1 to 2048 characters"))]
    #[schema(example = "https://erp.example.com/hooks/orderly")]
    pub url: String,
    /// Event types to receive: `order.placed`, `order.cancelled`, `order.status_changed`,
    /// `report.ready`.
    #[validate(length(min = 1, max = 16, message = "must name 1 to 16 event types"))]
    #[schema(example = json!(["order.placed", "report.ready"]))]
    pub events: Vec<String>,
}

impl TryFrom<CreateWebhookRequest> for NewWebhookEndpoint {
    type Error = AppError;

    fn try_from(body: CreateWebhookRequest) -> Result<Self, Self::Error> {
        NewWebhookEndpoint::parse(&body.url, &body.events)
    }
}

/// `PATCH /webhooks/{id}` body: the fields to change, at least one.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    /// A new destination, checked like at registration.
    #[validate(length(min = 1, max = 2048, message = "must be 1 to 2048 characters"))]
    #[schema(example = "https://erp.example.com/hooks/orderly-v2")]
    pub url: Option<String>,
    /// A new list of event types (replaces the old one).
    #[validate(length(min = 1, max = 16, message = "must name 1 to 16 event types"))]
    #[schema(example = json!(["order.placed", "order.status_changed", "report.ready"]))]
    pub events: Option<Vec<String>>,
    /// `true` starts deliveries again (also after the receiver answered 410) and clears the
    /// disabled reason; `false` stops them ("disabled by an admin").
    #[schema(example = true)]
    pub enabled: Option<bool>,
}

impl TryFrom<UpdateWebhookRequest> for WebhookEndpointChanges {
    type Error = AppError;

    fn try_from(body: UpdateWebhookRequest) -> Result<Self, Self::Error> {
        WebhookEndpointChanges::parse(body.url.as_deref(), body.events.as_deref(), body.enabled)
    }
}

/// `POST /webhooks/{id}/rotate-secret` body; optional.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// How long the previous secret keeps signing deliveries beside the new one, in seconds:
    /// 0 (stop at once) to 604800 (a week); 86400 when absent.
    #[validate(range(max = 604_800, message = "must be 0 to 604800 seconds"))]
    #[schema(example = 3600, maximum = 604_800)]
    pub overlap_secs: Option<u32>,
}

impl RotateSecretRequest {
    /// The overlap asked for, or the default.
    pub fn overlap(body: Option<Self>) -> Duration {
        body.and_then(|b| b.overlap_secs)
            .map_or(DEFAULT_SECRET_OVERLAP, |secs| {
                Duration::from_secs(u64::from(secs))
            })
    }
}

/// `GET /webhooks` and `GET /webhooks/{id}/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page request.
    pub fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// A webhook endpoint (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    /// Its deliveries are listed at `/webhooks/{id}/deliveries`.
    #[schema(example = "01a139bf-49c0-77ed-87a0-543edf5a7ab7")]
    pub id: Uuid,
    /// Where deliveries go, in normalised form (as a URL parser prints it).
    #[schema(example = "https://erp.example.com/hooks/orderly")]
    pub url: String,
    /// Event types it receives, sorted, each once.
    #[schema(example = json!(["order.placed", "report.ready"]))]
    pub events: Vec<&'static str>,
    /// False once the receiver answered 410 Gone or an admin disabled it; nothing more is sent.
    #[schema(example = true)]
    pub enabled: bool,
    /// Why it was disabled: `the receiver answered 410 Gone` or `disabled by an admin`; null
    /// while enabled.
    #[schema(example = json!(null))]
    pub disabled_reason: Option<String>,
    /// When it was disabled (RFC 3339, UTC); null while enabled.
    #[schema(example = json!(null))]
    pub disabled_at: Option<DateTime<Utc>>,
    /// After a secret rotation: until when the previous secret still signs deliveries (a
    /// second signature in `webhook-signature`); absent otherwise.
    #[schema(example = json!(null))]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Registered (RFC 3339, UTC).
    #[schema(example = "2026-10-14T09:30:00Z")]
    pub created_at: DateTime<Utc>,
    /// Last change, such as being disabled (RFC 3339, UTC).
    #[schema(example = "2026-10-14T09:30:00Z")]
    pub updated_at: DateTime<Utc>,
}

impl From<&WebhookEndpoint> for WebhookResponse {
    fn from(endpoint: &WebhookEndpoint) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url.clone(),
            events: endpoint.events.iter().map(|e| e.as_str()).collect(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            disabled_at: endpoint.disabled_at,
            previous_secret_expires_at: endpoint
                .previous_secret_at(Utc::now())
                .and(endpoint.previous_secret_expires_at),
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// A newly registered endpoint, with its signing secret: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhookResponse {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookResponse,
    /// `whsec_<base64 key>`: verify deliveries with it (any Standard Webhooks library). Store
    /// it now; it cannot be read again.
    #[schema(example = "whsec_ExampleSecretForTheDocs0NotARealKey0000000A=")]
    pub secret: String,
}

impl From<WebhookEndpoint> for CreatedWebhookResponse {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            secret: endpoint.secret.expose().to_owned(),
            endpoint: WebhookResponse::from(&endpoint),
        }
    }
}

/// An endpoint with its new signing secret, after a rotation: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecretResponse {
    /// The endpoint; `previous_secret_expires_at` says until when the old secret also signs.
    #[serde(flatten)]
    pub endpoint: WebhookResponse,
    /// The new `whsec_<base64 key>`. Store it now; it cannot be read again.
    #[schema(example = "whsec_ExampleRotatedSecret0NotARealKey0000000000A=")]
    pub secret: String,
}

impl From<WebhookEndpoint> for RotatedSecretResponse {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            secret: endpoint.secret.expose().to_owned(),
            endpoint: WebhookResponse::from(&endpoint),
        }
    }
}

/// A page of endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    /// Endpoints, newest first.
    pub items: Vec<WebhookResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<WebhookEndpoint>> for WebhookPage {
    fn from(page: Page<WebhookEndpoint>) -> Self {
        Self {
            items: page.items.iter().map(WebhookResponse::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// One event sent (or being sent) to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// Sent as the `webhook-id` header; retry it at
    /// `POST /webhooks/{id}/deliveries/{delivery_id}/retry`.
    #[schema(example = "01a230e0-2288-727e-804d-b5a0084d6c47")]
    pub id: Uuid,
    /// Event type (`webhook.ping` for a test delivery).
    #[schema(example = "report.ready")]
    pub event_type: String,
    /// `pending` (first attempt or a retry to come), `delivered` or `failed`.
    #[schema(example = "delivered")]
    pub status: &'static str,
    /// Attempts made so far, retries and manual retries included.
    #[schema(example = 2)]
    pub attempts: i32,
    /// HTTP status of the latest attempt, if the receiver answered; a 2xx means delivered.
    #[schema(example = 200)]
    pub last_status_code: Option<i16>,
    /// What went wrong in the latest attempt; null when it succeeded.
    #[schema(example = json!(null))]
    pub last_error: Option<String>,
    /// How long the latest attempt took, in milliseconds.
    #[schema(example = 143)]
    pub last_latency_ms: Option<i32>,
    /// When the latest attempt was made (RFC 3339, UTC).
    #[schema(example = "2026-12-01T09:12:10Z")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, while one is planned (RFC 3339, UTC).
    #[schema(example = json!(null))]
    pub next_retry_at: Option<DateTime<Utc>>,
    /// When the receiver accepted it (RFC 3339, UTC).
    #[schema(example = "2026-12-01T09:12:10Z")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The body sent on every attempt: `{type, timestamp, data}`.
    #[schema(value_type = Object, example = json!({
        "type": "report.ready",
        "timestamp": "2026-12-01T09:12:05.184Z",
        "data": {
            "id": "01a230e0-1ab8-76bc-8201-2dc32074d5ca",
            "user_id": "01a05bfb-7000-71cb-8a41-30cf58c2774d",
            "kind": "my_orders",
            "format": "csv",
            "from": "2026-11-01",
            "to": "2026-11-30",
            "status": "ready",
            "row_count": 412,
            "byte_size": 48716,
            "completed_at": "2026-12-01T09:12:05Z"
        }
    }))]
    pub payload: Value,
    /// When the event happened (RFC 3339, UTC).
    #[schema(example = "2026-12-01T09:12:05Z")]
    pub created_at: DateTime<Utc>,
}

impl From<WebhookDelivery> for DeliveryResponse {
    fn from(delivery: WebhookDelivery) -> Self {
        Self {
            id: delivery.id,
            event_type: delivery.event_type,
            status: delivery.status.as_str(),
            attempts: delivery.attempts,
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error,
            last_latency_ms: delivery.last_latency_ms,
            last_attempt_at: delivery.last_attempt_at,
            next_retry_at: delivery.next_retry_at,
            delivered_at: delivery.delivered_at,
            // Written by us from JSON; a row that somehow is not JSON is shown as a string.
            payload: serde_json::from_str(&delivery.payload)
                .unwrap_or(Value::String(delivery.payload)),
            created_at: delivery.created_at,
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Deliveries, newest first.
    pub items: Vec<DeliveryResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<Uuid>,
}

impl From<Page<WebhookDelivery>> for DeliveryPage {
    fn from(page: Page<WebhookDelivery>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
