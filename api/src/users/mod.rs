//! HTTP side of users: register, log in, read your profile.

pub mod dto;
pub mod routes;

pub use routes::router;
