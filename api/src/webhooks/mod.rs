//! HTTP side of webhooks: admins register, list, change and delete endpoints, rotate their
//! secrets, ping them, and follow and resend their deliveries. Admin-only because endpoints are shop-level integrations that receive every
//! customer's orders; see `orderly::webhooks::service`.

pub mod dto;
pub mod routes;

pub use routes::router;
