//! HTTP side of webhooks: admins register, list and delete endpoints and follow their
//! deliveries. Admin-only because endpoints are shop-level integrations that receive every
//! customer's orders; see `orderly::webhooks::service`.

pub mod dto;
pub mod routes;

pub use routes::router;
