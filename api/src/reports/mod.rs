//! HTTP side of reports: request one, follow it, download it.

pub mod dto;
pub mod routes;

pub use routes::router;
