//! The HTTP middleware of the api, outermost first as `app.rs` stacks them:
//! - [`request_context`]: request id (incoming `x-request-id` if sane, else a UUID), a span
//!   carrying it (continuing the caller's trace when it sends a W3C `traceparent` and traces
//!   are exported), the task-local the outbox copies into jobs, one log line per request, and the
//!   id echoed on the response.
//! - [`error_shape`]: rewrites bodies of error responses that did not come from `AppError`
//!   (axum's 405, the body-limit layer's 413) into the one error shape; the dashboard's HTML
//!   error pages are left as they are.
//! - [`timeout`]: cancels requests that run longer than configured (503).
//! - [`rate_limit`]: per-client GCRA budget with `RateLimit` headers, 429 when spent; the
//!   client is the user of a valid token, else its address (always its address on
//!   authentication routes).
//! - [`panic_response`]: what a panicking handler answers (500, nothing leaked).

use std::{any::Any, time::Instant};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use orderly::error::{AppError, ErrorBody};
use tracing::Instrument;
use uuid::Uuid;

use crate::{auth::bearer_token, state::AppState};

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request (set by [`request_context`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

/// Request id, span, access log line.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // `otel.*` and `http.*` fields name and describe the span in an exported trace (the log
    // lines leave the `otel.*` ones out).
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %path,
        otel.name = %format_args!("{method} {}", route.as_deref().unwrap_or("unmatched")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.route = route.as_deref().unwrap_or("unmatched"),
        http.response.status_code = tracing::field::Empty,
    );
    orderly::telemetry::continue_remote_trace(&span, request.headers());
    let started = Instant::now();
    let mut response = orderly::telemetry::with_request_id(
        request_id.clone(),
        next.run(request).instrument(span.clone()),
    )
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    crate::metrics::record_request(
        &method,
        route.as_deref().unwrap_or("unmatched"),
        status,
        latency_ms,
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// Gives every error response the one error shape, whoever produced it.
pub async fn error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The dashboard's pages render their own HTML error page for a browser to show.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_json || is_html {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this route",
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large",
        StatusCode::NOT_FOUND => "route not found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        StatusCode::REQUEST_TIMEOUT => "request timed out",
        s if s.is_server_error() => "Internal server error",
        _ => status.canonical_reason().unwrap_or("request failed"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = ErrorBody::new(status, message.to_owned(), None).into_response_with(status);
    let (body_parts, body) = body.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        body_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, body)
}

/// Runs the handler in a task of its own and answers 503 if it takes longer than
/// `HTTP_REQUEST_TIMEOUT_MS`.
///
/// The handler is never cancelled halfway, neither by the time limit nor by a client that hangs
/// up: dropping a future in the middle of a database transaction can hand its pooled connection
/// back with the transaction still open (seen under load as PostgreSQL's "there is already a
/// transaction in progress"), and the next request's commit would then commit the abandoned
/// work too. Detached, the work commits or rolls back as a whole, and a retry with the same
/// `Idempotency-Key` gets its outcome.
pub async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.services.config.http.request_timeout;
    let request_id = orderly::telemetry::current_request_id();
    let work = next.run(request).instrument(tracing::Span::current());
    let task = tokio::spawn(async move {
        match request_id {
            Some(id) => orderly::telemetry::with_request_id(id, work).await,
            None => work.await,
        }
    });
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(response)) => response,
        // A panic is re-raised here, where the panic layer turns it into the generic 500.
        Ok(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Ok(Err(error)) => {
            tracing::error!(%error, "request task ended without a response");
            AppError::Internal(anyhow::anyhow!("request task ended: {error}")).into_response()
        }
        Err(_) => {
            tracing::error!(
                timeout_ms = limit.as_millis() as u64,
                "request timed out; its work finishes in the background"
            );
            AppError::Unavailable("the request took too long; try again".into()).into_response()
        }
    }
}

/// Spends one request of the caller's budget: the user id when the bearer token is valid,
/// otherwise the client address ([`crate::client_ip`]); on authentication routes always the
/// client address. Adds `RateLimit-Policy` and `RateLimit` headers (IETF
/// draft-ietf-httpapi-ratelimit-headers), and answers 429 with `Retry-After` when spent.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(quota) = state.quota else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let key = match bearer_token(&parts)
        .filter(|_| !is_authentication_route(&parts))
        .and_then(|t| state.services.users.verify_signature(t).ok())
    {
        Some(actor) => format!("user:{}", actor.user_id),
        None => crate::client_ip::budget_key(crate::client_ip::client_ip(
            &parts,
            &state.services.config.http.trusted_proxies,
        )),
    };
    let request = Request::from_parts(parts, body);
    let decision = state.rate_limiter.check(&key, &quota).await;
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        AppError::TooManyRequests {
            message: "rate limit exceeded; slow down".into(),
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    let window = 60 * u64::from(quota.burst) / u64::from(quota.per_minute.max(1));
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&format!(
        "\"default\";q={};w={}",
        quota.burst,
        window.max(1)
    )) {
        headers.insert(HeaderName::from_static("ratelimit-policy"), policy);
    }
    let reset = decision.reset_after.as_secs() + u64::from(decision.reset_after.subsec_nanos() > 0);
    if let Ok(current) =
        HeaderValue::from_str(&format!("\"default\";r={};t={reset}", decision.remaining))
    {
        headers.insert(HeaderName::from_static("ratelimit"), current);
    }
    response
}

/// Login, registration, token refresh and the dashboard's login form: where a bearer token must
/// never choose the budget, or every account an attacker registers would be a fresh budget of
/// guesses from the same address.
fn is_authentication_route(parts: &axum::http::request::Parts) -> bool {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map_or(parts.uri.path(), MatchedPath::as_str);
    path.starts_with("/api/v1/auth/") || path == "/admin/login"
}

/// The response to a panicking handler: 500 with the generic message; the panic is logged.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    AppError::internal(format!("handler panicked: {detail}")).into_response()
}
