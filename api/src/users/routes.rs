//! `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`, `/users/me`,
//! `/users/me/password`, and the admins' `/users/{id}/role`.

use axum::{extract::State, http::StatusCode};
use orderly::{
    error::{AppError, ErrorBody},
    users::Password,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use uuid::Uuid;

use crate::{
    auth::{AdminUser, AuthClaims, AuthUser},
    extract::{Path, ValidatedJson},
    state::AppState,
    users::dto::{
        ChangePasswordRequest, ChangeRoleRequest, LoginRequest, RefreshRequest, RegisterRequest,
        Registration, TokenResponse, UserResponse,
    },
};

/// The users routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(token_owner))
        .routes(routes!(change_password))
        .routes(routes!(change_role))
}

/// Create a customer account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<UserResponse>), AppError> {
    let input = Registration::try_from(body)?;
    let user = state
        .services
        .users
        .register(input.email, input.password, input.name)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Exchange email and password for an access token and a refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this account or from this address", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<LoginRequest>,
) -> Result<axum::Json<TokenResponse>, AppError> {
    let tokens = state
        .services
        .users
        .login(&body.email, body.password)
        .await?;
    Ok(axum::Json(tokens.into()))
}

/// Exchange a refresh token for a new access token and a new refresh token. Each refresh
/// token works once; presenting one again ends its session (both copies stop working).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Unknown, expired, revoked or already used refresh token", body = ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<RefreshRequest>,
) -> Result<axum::Json<TokenResponse>, AppError> {
    let tokens = state.services.users.refresh(&body.refresh_token).await?;
    Ok(axum::Json(tokens.into()))
}

/// End this session: the bearer token, every other access token of the session and its
/// refresh token stop working at once, on every api instance.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, body = ErrorBody),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    AuthClaims(claims): AuthClaims,
) -> Result<StatusCode, AppError> {
    state.services.users.logout(&claims).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's profile.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = ErrorBody),
    ))]
pub async fn me(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> Result<axum::Json<UserResponse>, AppError> {
    let user = state.services.users.profile(actor.user_id).await?;
    Ok(axum::Json(user.into()))
}

/// The account the bearer token belongs to (the same as `/users/me`; 401 once the token is
/// revoked or expired).
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = ErrorBody),
    ))]
pub async fn token_owner(
    state: State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<UserResponse>, AppError> {
    me(state, user).await
}

/// Change your password. Every token you hold, in every session, is revoked: log in again.
#[utoipa::path(post, path = "/users/me/password", tag = "users", request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed; log in again"),
        (status = 401, body = ErrorBody),
        (status = 422, description = "Wrong current password or invalid new one", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ValidatedJson(body): ValidatedJson<ChangePasswordRequest>,
) -> Result<StatusCode, AppError> {
    let new = Password::parse(body.new_password)
        .map_err(|_| AppError::invalid_field("new_password", "must be 8 to 128 characters"))?;
    state
        .services
        .users
        .change_password(actor.user_id, body.current_password, new)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give a user another role (admin). Every token the user holds is revoked, so the new role
/// applies from their next login.
#[utoipa::path(patch, path = "/users/{id}/role", tag = "users", request_body = ChangeRoleRequest,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Admins cannot demote themselves", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn change_role(
    State(state): State<AppState>,
    AdminUser(actor): AdminUser,
    Path(id): Path<Uuid>,
    ValidatedJson(body): ValidatedJson<ChangeRoleRequest>,
) -> Result<axum::Json<UserResponse>, AppError> {
    let role = body.role()?;
    let user = state.services.users.change_role(&actor, id, role).await?;
    Ok(axum::Json(user.into()))
}
