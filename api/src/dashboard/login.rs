//! Signing in and out: the login form (`/admin/login`, with its own double-submit CSRF token, as
//! there is no session yet), the login that checks the credentials with the api's own login and
//! admits admins only, and the logout that ends the session everywhere. How the session is
//! carried and checked is `session`.

use axum::{
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::CookieJar;
use orderly::error::AppError;
use serde::Deserialize;

use crate::{
    dashboard::{
        actions::ActionForm,
        assets::asset_version,
        render::{app_error_page, error_page, render},
        session::{
            LOGIN_CSRF_COOKIE, PageAdmin, SESSION_COOKIE, is_https, login_csrf_cookie,
            random_token, removal, safe_return_path, secrets_match, session_cookie,
        },
    },
    state::AppState,
};

/// Query of the login page.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// Where to go after logging in.
    next: Option<String>,
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

fn login_page(
    jar: CookieJar,
    headers: &HeaderMap,
    state: &AppState,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
    next: &str,
) -> Response {
    let token = random_token();
    let jar = jar.add(login_csrf_cookie(token.clone(), is_https(headers, state)));
    let page = render(
        status,
        "login.html",
        minijinja::context! { asset_version => asset_version(), csrf => token, error, email, next },
    );
    (jar, page).into_response()
}

/// `GET /admin/login`: the login form (admins already signed in go straight to the overview).
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_return_path(query.next.as_deref());
    if let Some(cookie) = jar.get(SESSION_COOKIE)
        && let Ok(claims) = state.services.users.claims(cookie.value()).await
        && claims.role == orderly::users::Role::Admin
    {
        return Redirect::to(&next).into_response();
    }
    login_page(jar, &headers, &state, StatusCode::OK, None, "", &next)
}

/// `POST /admin/login`: checks the credentials with the api's own login, refuses non-admins,
/// sets the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return login_page(
            jar,
            &headers,
            &state,
            StatusCode::BAD_REQUEST,
            Some("Fill in your email and password."),
            "",
            "/admin/queues",
        );
    };
    let next = safe_return_path(form.next.as_deref());
    let expected = jar
        .get(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || !secrets_match(&expected, &form.csrf) {
        return login_page(
            jar,
            &headers,
            &state,
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please try again."),
            &form.email,
            &next,
        );
    }
    let tokens = match state.services.users.login(&form.email, form.password).await {
        Ok(tokens) => tokens,
        Err(AppError::Unauthorized(_)) => {
            return login_page(
                jar,
                &headers,
                &state,
                StatusCode::UNAUTHORIZED,
                Some("Invalid email or password."),
                &form.email,
                &next,
            );
        }
        Err(AppError::TooManyRequests { retry_after, .. }) => {
            let wait = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut page = login_page(
                jar,
                &headers,
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins for this account. Try again in {} min.",
                    wait.div_ceil(60).max(1)
                )),
                &form.email,
                &next,
            );
            page.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait.max(1)),
            );
            return page;
        }
        Err(error) => return app_error_page(error),
    };
    // The browser keeps only the access token: the dashboard session ends when it expires.
    match state.services.users.claims(&tokens.access.token).await {
        Ok(claims) if claims.role == orderly::users::Role::Admin => {
            tracing::info!(admin = %claims.sub, "dashboard login");
            let jar = jar.remove(removal(LOGIN_CSRF_COOKIE)).add(session_cookie(
                tokens.access.token,
                tokens.access.expires_in,
                is_https(&headers, &state),
            ));
            (jar, Redirect::to(&next)).into_response()
        }
        Ok(claims) => {
            tracing::warn!(user_id = %claims.sub, "dashboard login refused: not an admin");
            // The session the login just started is of no use to anyone.
            if let Err(error) = state.services.users.logout(&claims).await {
                tracing::warn!(%error, "could not end the refused dashboard session");
            }
            login_page(
                jar,
                &headers,
                &state,
                StatusCode::FORBIDDEN,
                Some(
                    "This account is not an administrator. The dashboard is for administrators only.",
                ),
                &form.email,
                &next,
            )
        }
        Err(error) => app_error_page(error),
    }
}

/// `POST /admin/logout`: ends the session everywhere (its token is refused from now on, as a
/// cookie and as a bearer token) and clears the cookie. An admin's logout needs the CSRF token,
/// so another site cannot sign an operator out; anyone else (a customer who reached the 403
/// page) just has the cookie cleared.
pub async fn logout(
    State(state): State<AppState>,
    session: Result<PageAdmin, Response>,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    if let Ok(PageAdmin(session)) = session {
        let presented = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
        if let Err(error) = session.check_action(&headers, &presented) {
            return error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                &error.body().message,
                false,
            );
        }
        if let Err(error) = state.services.users.logout(&session.claims).await {
            return app_error_page(error);
        }
    }
    (
        jar.remove(removal(SESSION_COOKIE)),
        Redirect::to("/admin/login"),
    )
        .into_response()
}
