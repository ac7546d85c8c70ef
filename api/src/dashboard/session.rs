//! Who may see the dashboard, and how a browser proves it.
//!
//! A browser cannot attach a bearer header to a page load, so the login form puts the admin's
//! JWT (from the existing `UserService::login`) in a cookie: `HttpOnly` (page scripts cannot read
//! it), `SameSite=Strict` (no other site can make the browser send it), `Path=/admin` (the rest
//! of the api never sees it), `Secure` when the request came over https. The token's own expiry
//! ends the session; logout revokes the token's session everywhere (it is no longer accepted as
//! a bearer token either) and clears the cookie.
//!
//! CSRF: every action is a POST carrying a token that is the HMAC-SHA256, keyed with the JWT
//! secret, of the session token's `jti`. Only a page rendered for this session knows it, it dies
//! with the session, and it needs no server-side storage. On top, a POST whose `Origin` names
//! another host is refused. The login form, which has no session yet, uses a double-submit token
//! (a random cookie repeated in the form) so another site cannot log a browser into an account.
//!
//! Scripts may call the JSON endpoints with `Authorization: Bearer <admin token>` instead of the
//! cookie; a bearer header is never sent by a browser on its own, so it needs no CSRF token.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use orderly::{error::AppError, users::Actor};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::{auth::bearer_token, dashboard::render, state::AppState};

/// The cookie holding the admin's token.
pub const SESSION_COOKIE: &str = "orderly_admin";
/// The login form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "orderly_login_csrf";
/// Where both cookies live.
pub const COOKIE_PATH: &str = "/admin";

/// A verified admin.
#[derive(Debug, Clone)]
pub struct AdminSession {
    /// The admin.
    pub actor: Actor,
    /// The CSRF token pages embed in their forms.
    pub csrf: String,
    /// The session token's claims (logout ends its session).
    pub claims: orderly::users::Claims,
}

/// Why a request has no admin session.
#[derive(Debug)]
pub enum Refusal {
    /// No token, or one that does not verify (expired, tampered).
    Anonymous,
    /// A valid token of a user who is not an admin.
    NotAdmin,
}

/// The CSRF token of the session whose token has id `jti`.
fn csrf_for(state: &AppState, jti: &str) -> String {
    let mut mac = csrf_mac(state);
    mac.update(jti.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn csrf_mac(state: &AppState) -> Hmac<Sha256> {
    let secret = state
        .services
        .config
        .auth
        .jwt_secret
        .expose_secret()
        .as_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    // Domain separation: this MAC can never be mistaken for a JWT signature over the same bytes.
    mac.update(b"orderly-dashboard-csrf\0");
    mac
}

/// Reads the session from the cookie (or a bearer header), checking role, expiry and revocation.
async fn session_of(parts: &Parts, state: &AppState) -> Result<AdminSession, Refusal> {
    let jar = CookieJar::from_headers(&parts.headers);
    let token = match jar.get(SESSION_COOKIE) {
        Some(cookie) => cookie.value().to_owned(),
        None => bearer_token(parts).ok_or(Refusal::Anonymous)?.to_owned(),
    };
    let claims = state
        .services
        .users
        .claims(&token)
        .await
        .map_err(|_| Refusal::Anonymous)?;
    let actor = Actor {
        user_id: claims.sub,
        role: claims.role,
    };
    if !actor.is_admin() {
        return Err(Refusal::NotAdmin);
    }
    Ok(AdminSession {
        actor,
        csrf: csrf_for(state, &claims.jti.to_string()),
        claims,
    })
}

impl AdminSession {
    /// Checks an action's CSRF token (constant time) and, when the browser says where the
    /// request comes from, that it comes from this host.
    pub fn check_action(&self, headers: &HeaderMap, presented: &str) -> Result<(), AppError> {
        if !same_origin(headers) {
            return Err(AppError::forbidden("cross-site request refused"));
        }
        if presented.is_empty() || !secrets_match(&self.csrf, presented.trim()) {
            return Err(AppError::forbidden(
                "missing or invalid CSRF token; reload the page and try again",
            ));
        }
        Ok(())
    }
}

/// True unless an `Origin` (or, lacking it, `Referer`) header names a host other than `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => true,
        // Some privacy settings send the literal `null`; SameSite=Strict already kept the cookie
        // away from cross-site requests, so only a mismatching real origin is refused.
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
            .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// An admin, for HTML pages and form actions: anonymous visitors are sent to the login page,
/// other users get a 403 page.
#[derive(Debug, Clone)]
pub struct PageAdmin(pub AdminSession);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(parts, state).await {
            Ok(session) => Ok(Self(session)),
            Err(Refusal::Anonymous) => {
                // Only a page load comes back to where it was; an action's URL is not a page.
                let next = if parts.method == axum::http::Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/admin/queues")
                } else {
                    "/admin/queues"
                };
                let target = format!("/admin/login?next={}", urlencode(next));
                let jar = CookieJar::from_headers(&parts.headers);
                let jar = if jar.get(SESSION_COOKIE).is_some() {
                    jar.remove(removal(SESSION_COOKIE))
                } else {
                    jar
                };
                Err((jar, Redirect::to(&target)).into_response())
            }
            Err(Refusal::NotAdmin) => Err(render::error_page(
                axum::http::StatusCode::FORBIDDEN,
                "Administrators only",
                "You are signed in, but this dashboard is for administrators. Sign out and sign in with an admin account.",
                true,
            )),
        }
    }
}

/// An admin, for JSON endpoints: 401 or 403 in the one error shape, never data.
#[derive(Debug, Clone)]
pub struct ApiAdmin(pub AdminSession);

impl FromRequestParts<AppState> for ApiAdmin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(parts, state).await {
            Ok(session) => Ok(Self(session)),
            Err(Refusal::Anonymous) => Err(AppError::unauthorized(
                "admin session or bearer token required",
            )),
            Err(Refusal::NotAdmin) => Err(AppError::forbidden("admin role required")),
        }
    }
}

/// Whether the browser reached us over https, as the TLS-terminating proxy says in
/// `X-Forwarded-Proto` (read when `TRUSTED_PROXIES` lists any). It only decides whether the
/// cookies are `Secure`: a client that forges it only changes its own cookies.
pub fn is_https(headers: &HeaderMap, state: &AppState) -> bool {
    !state.services.config.http.trusted_proxies.is_empty()
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            })
}

/// The session cookie for `token`, living as long as the token.
pub fn session_cookie(token: String, max_age_secs: u64, secure: bool) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time_secs(max_age_secs))
        .build()
}

/// The login form's double-submit cookie (ten minutes to fill in the form).
pub fn login_csrf_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((LOGIN_CSRF_COOKIE, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time_secs(600))
        .build()
}

/// A cookie that deletes `name` (same path as when it was set).
pub fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, "")).path(COOKIE_PATH).build()
}

fn time_secs(secs: u64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A fresh random token for the login form.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in constant time.
pub fn secrets_match(a: &str, b: &str) -> bool {
    let key = random_token();
    let tag = |value: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(value.as_bytes());
        mac
    };
    tag(a).verify_slice(&tag(b).finalize().into_bytes()).is_ok()
}

/// Where to go after login or an action: only dashboard paths, so the parameter cannot send an
/// admin to another site.
pub fn safe_return_path(candidate: Option<&str>) -> String {
    match candidate {
        Some(path)
            if path.starts_with("/admin/")
                && !path.starts_with("/admin/login")
                && !path.contains("//")
                && !path.contains('\\')
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/admin/queues".to_owned(),
    }
}

/// Percent-encodes one path segment: as [`urlencode`], and `/` too, so a value holding a slash
/// (a group key) stays one segment.
pub fn urlencode_segment(value: &str) -> String {
    urlencode(value).replace('/', "%2F")
}

/// Percent-encodes a query parameter value.
pub fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_the_dashboard() {
        assert_eq!(
            safe_return_path(Some("/admin/queues/emails?state=dead")),
            "/admin/queues/emails?state=dead"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/admin/",
            "/admin//evil",
            "/api/v1/orders",
            "/admin/login",
            "/admin/\\evil",
        ] {
            assert_eq!(safe_return_path(Some(bad)), "/admin/queues", "{bad}");
        }
        assert_eq!(safe_return_path(None), "/admin/queues");
    }

    #[test]
    fn origin_check() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
    }

    #[test]
    fn secrets_compare() {
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("abc", ""));
    }
}
