//! `/auth/register`, `/auth/login`, `/users/me`.

use axum::{extract::State, http::StatusCode};
use orderly::error::{AppError, ErrorBody};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthUser,
    extract::ValidatedJson,
    state::AppState,
    users::dto::{LoginRequest, RegisterRequest, Registration, TokenResponse, UserResponse},
};

/// The users routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
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

/// Exchange email and password for an access token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<LoginRequest>,
) -> Result<axum::Json<TokenResponse>, AppError> {
    let token = state
        .services
        .users
        .login(&body.email, body.password)
        .await?;
    Ok(axum::Json(TokenResponse {
        access_token: token.token,
        token_type: "Bearer",
        expires_in: token.expires_in,
    }))
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
