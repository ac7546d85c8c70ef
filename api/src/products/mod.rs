//! HTTP side of the catalogue: public reads, admin writes.

pub mod dto;
pub mod routes;

pub use routes::router;
