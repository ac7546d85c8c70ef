//! Webhooks: the shop tells other systems what happened, over signed HTTP calls.
//!
//! Admins register endpoints (a URL, the event types it wants, a `whsec_` secret shown once),
//! change, disable and re-enable them, rotate their secret (the old one keeps signing for an
//! overlap window), send a test `webhook.ping`, and resend a delivery that failed.
//! When an order is placed, cancelled or moves on, or a report is ready, [`WebhookSubscriber`]
//! writes one delivery per subscribed endpoint with the change itself, in the same statement or
//! transaction, and stages a `webhook.fan_out` job carrying them, which queues a `WebhookJob`
//! for each: a rolled-back order sends nothing. A worker then sends the delivery, signed per the
//! Standard Webhooks spec, and records every attempt on its row.
//!
//! - `model`: endpoints, deliveries, event types, the parsed registration input.
//! - `job`: the delivery job's and the fan-out job's declarations (queue, priority, retries,
//!   time limit).
//! - `signature`: `whsec_` secrets and the `webhook-signature` header.
//! - `address`: which IP addresses a delivery may reach (SSRF protection, allow-list).
//! - `repository`: SQL only.
//! - `service`: the rules (admins only, what a delivery attempt records).
//! - `subscriber`: domain events in, deliveries out.

pub mod address;
pub mod job;
pub mod model;
pub mod repository;
pub mod service;
pub mod signature;
pub mod subscriber;

pub use address::{AddressPolicy, HostCheck};
pub use model::{
    AttemptOutcome, AttemptRecord, DeliveryStatus, NewWebhookEndpoint, WebhookDelivery,
    WebhookEndpoint, WebhookEndpointChanges, WebhookEventType, WebhookUrl,
};
pub use service::WebhookService;
pub use signature::WebhookSecret;
pub use subscriber::WebhookSubscriber;
