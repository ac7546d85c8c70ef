//! HTTP side of uploads: admins send a product import or a product image as multipart, get 202
//! at once, and follow the processing at `GET /uploads/{id}`.
//!
//! The upload route has its own, larger body limit (`UPLOAD_MAX_BYTES`); everything else keeps
//! the small one, which is why `app.rs` mounts [`upload_router`] apart from [`router`].

pub mod dto;
pub mod routes;

pub use routes::{router, upload_router};
