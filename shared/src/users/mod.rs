//! Users: accounts, passwords, roles and access tokens.
//!
//! - `model`: `User`, `Role` and the parsed inputs (`Email`, `Password`, `DisplayName`).
//! - `repository`: SQL only; `CachedUserRepository` puts the profile read behind Redis.
//! - `service`: registration, login, profile, admin creation (the rules).
//! - `password`: argon2id hashing, off the async runtime.
//! - `login_throttle`: failed-login budget per account, shared through Redis.
//! - `token`: HS256 JWTs with issuer, audience and expiry checks.
//! - `sessions`: login sessions and their rotating refresh tokens (SQL and token format).
//! - `revocation`: which verified tokens no longer count (logout, password or role change),
//!   kept in Redis for the per-request check.
//! - `events`: what the users domain announces.

pub mod events;
pub mod login_throttle;
pub mod model;
pub mod password;
pub mod repository;
pub mod revocation;
pub mod service;
pub mod sessions;
pub mod token;

pub use model::{Actor, DisplayName, Email, Password, Role, User};
pub use service::{SessionTokens, UserService};
pub use token::{Claims, TokenIssuer};
