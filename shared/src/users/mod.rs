//! Users: accounts, passwords, roles and access tokens.
//!
//! - `model`: `User`, `Role` and the parsed inputs (`Email`, `Password`, `DisplayName`).
//! - `repository`: SQL only; `CachedUserRepository` puts the profile read behind Redis.
//! - `service`: registration, login, profile, admin creation (the rules).
//! - `password`: argon2id hashing, off the async runtime.
//! - `token`: HS256 JWTs with issuer, audience and expiry checks.
//! - `events`: what the users domain announces.

pub mod events;
pub mod model;
pub mod password;
pub mod repository;
pub mod service;
pub mod token;

pub use model::{Actor, DisplayName, Email, Password, Role, User};
pub use service::UserService;
pub use token::{Claims, TokenIssuer};
