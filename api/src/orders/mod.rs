//! HTTP side of orders: place (idempotent), list and read your own, cancel, admin status changes.

pub mod dto;
pub mod routes;

pub use routes::router;
