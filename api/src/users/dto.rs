//! Request and response shapes of the users routes.

use chrono::{DateTime, Utc};
use orderly::{
    error::AppError,
    users::{DisplayName, Email, Password, Role, SessionTokens, User},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email address (login name).
    #[validate(length(min = 3, max = 254, message = "must be 3 to 254 characters"))]
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// Password, 8 to 128 characters.
    #[validate(length(min = 8, max = 128, message = "must be 8 to 128 characters"))]
    #[schema(example = "correct horse battery staple")]
    pub password: String,
    /// Display name.
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    #[schema(example = "Ada Lovelace")]
    pub name: String,
}

/// A registration, parsed into domain types.
pub struct Registration {
    /// Trimmed and lowercased; unique among users.
    pub email: Email,
    /// The plaintext, length-checked; the service stores only its hash.
    pub password: Password,
    /// Trimmed, without control characters.
    pub name: DisplayName,
}

impl TryFrom<RegisterRequest> for Registration {
    type Error = AppError;

    fn try_from(body: RegisterRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            email: Email::parse(&body.email)?,
            password: Password::parse(body.password)?,
            name: DisplayName::parse(&body.name)?,
        })
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email address.
    #[validate(length(min = 1, max = 254, message = "must be 1 to 254 characters"))]
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// Checked against the stored hash; a wrong password and an unknown email get the same 401.
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// An access token and the refresh token that renews it (a login or a refresh).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer <token>`.
    #[schema(example = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTkzLi4uIn0.c2lnbmF0dXJl")]
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Exchange it at `POST /auth/refresh` for new tokens before the access token expires. It
    /// works once: each refresh returns a new one, and presenting a used one again ends the
    /// session.
    #[schema(example = "rt_5f0c2d8e9a7b4c1d8e3f6a2b9c0d1e4f")]
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    #[schema(example = 2592000)]
    pub refresh_expires_in: u64,
}

impl From<SessionTokens> for TokenResponse {
    fn from(tokens: SessionTokens) -> Self {
        Self {
            access_token: tokens.access.token,
            token_type: "Bearer",
            expires_in: tokens.access.expires_in,
            refresh_token: tokens.refresh.token,
            refresh_expires_in: tokens.refresh.expires_in,
        }
    }
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    #[schema(example = "rt_5f0c2d8e9a7b4c1d8e3f6a2b9c0d1e4f")]
    pub refresh_token: String,
}

/// `POST /users/me/password` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password in use now.
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    #[schema(example = "correct horse battery staple")]
    pub current_password: String,
    /// The new password, 8 to 128 characters.
    #[validate(length(min = 8, max = 128, message = "must be 8 to 128 characters"))]
    #[schema(example = "tr0ub4dor and 3 more words")]
    pub new_password: String,
}

/// `PATCH /users/{id}/role` body.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    /// `customer` or `admin`.
    #[schema(example = "admin")]
    pub role: String,
}

impl ChangeRoleRequest {
    /// The role asked for.
    pub fn role(&self) -> Result<Role, AppError> {
        match self.role.as_str() {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            _ => Err(AppError::invalid_field(
                "role",
                "must be \"customer\" or \"admin\"",
            )),
        }
    }
}

/// A user as clients see it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// The id admin routes take (`PATCH /users/{id}/role`).
    pub id: uuid::Uuid,
    /// The login name, lowercased when stored.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// Display name, as given at registration (trimmed).
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    /// `customer` or `admin`.
    #[schema(example = "customer")]
    pub role: &'static str,
    /// Created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            role: match user.role {
                Role::Customer => "customer",
                Role::Admin => "admin",
            },
            created_at: user.created_at,
        }
    }
}
