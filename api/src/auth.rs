//! Who is calling: bearer-token extractors for handlers.
//!
//! `AuthUser` requires a valid token (401 otherwise); `AdminUser` also requires the admin role
//! (403 for customers). The signature is checked locally (HMAC) and revocation in one Redis
//! round trip; no database round trip.

use axum::{extract::FromRequestParts, http::request::Parts};
use orderly::{
    error::AppError,
    users::{Actor, Claims},
};

use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Actor);

/// The authenticated caller, known to be an admin.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub Actor);

/// The authenticated caller's whole token (logout needs its session).
#[derive(Debug, Clone)]
pub struct AuthClaims(pub Claims);

impl FromRequestParts<AppState> for AuthClaims {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts).ok_or_else(|| AppError::unauthorized("missing bearer token"))?;
        Ok(Self(state.services.users.claims(token).await?))
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(actor) = parts.extensions.get::<Actor>() {
            return Ok(Self(*actor));
        }
        let token =
            bearer_token(parts).ok_or_else(|| AppError::unauthorized("missing bearer token"))?;
        let actor = state.services.users.authenticate(token).await?;
        parts.extensions.insert(actor);
        Ok(Self(actor))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let AuthUser(actor) = AuthUser::from_request_parts(parts, state).await?;
        if !actor.is_admin() {
            return Err(AppError::forbidden("admin role required"));
        }
        Ok(Self(actor))
    }
}

/// The caller if the request carries a valid token, `None` for anonymous requests; an invalid
/// token is still a 401 (a client sending a bad token should hear about it).
#[derive(Debug, Clone, Copy)]
pub struct MaybeUser(pub Option<Actor>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            let AuthUser(actor) = AuthUser::from_request_parts(parts, state).await?;
            return Ok(Self(Some(actor)));
        }
        Ok(Self(None))
    }
}
