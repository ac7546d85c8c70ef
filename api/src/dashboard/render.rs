//! Rendering: the minijinja templates compiled into the binary, the security headers every
//! dashboard page carries, and the HTML error page.
//!
//! Templates are auto-escaped (every `.html` name), so job payloads and error texts, which come
//! from outside, cannot inject markup. The CSP allows scripts and styles from this origin only:
//! no inline script, no CDN.

use std::sync::OnceLock;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use minijinja::{AutoEscape, Environment};
use orderly::queue::Priority;
use serde::Serialize;

use crate::dashboard::assets::asset_version;

macro_rules! templates {
    ($env:ident, $($name:literal),+ $(,)?) => {
        $( $env.add_template($name, include_str!(concat!("templates/", $name))).expect(concat!("template ", $name)); )+
    };
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        templates!(
            env,
            "layout.html",
            "login.html",
            "error.html",
            "confirm.html",
            "overview.html",
            "overview_live.html",
            "queue.html",
            "queue_live.html",
            "job.html",
            "job_live.html",
            "group.html",
            "group_live.html",
            "groups_section.html",
            "jobs_table.html",
            "schedules.html",
            "schedules_live.html",
            "chart.html",
            "ranges.html",
            "action.html",
        );
        env.add_global("priority_legend", priority_legend());
        env
    })
}

/// Renders template `name` with `context` as a page with the dashboard's headers.
pub fn render(status: StatusCode, name: &str, context: impl Serialize) -> Response {
    let rendered = environment()
        .get_template(name)
        .and_then(|t| t.render(context));
    match rendered {
        Ok(html) => with_headers((status, Html(html)).into_response()),
        Err(error) => {
            tracing::error!(template = name, error = %format!("{error:#}"), "dashboard template failed");
            with_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html(
                        "<!doctype html><title>Error</title><p>The page could not be rendered.</p>"
                            .to_owned(),
                    ),
                )
                    .into_response(),
            )
        }
    }
}

/// The HTML error page.
/// `offer_sign_out`: show a sign-out button (for a signed-in user who is not an admin).
pub fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    offer_sign_out: bool,
) -> Response {
    #[derive(Serialize)]
    struct Context<'a> {
        title: &'a str,
        message: &'a str,
        status: u16,
        offer_sign_out: bool,
        asset_version: &'a str,
    }
    render(
        status,
        "error.html",
        Context {
            title,
            message,
            status: status.as_u16(),
            offer_sign_out,
            asset_version: asset_version(),
        },
    )
}

/// An `AppError` shown as the HTML error page (5xx causes are logged, never shown).
pub fn app_error_page(error: orderly::error::AppError) -> Response {
    let status = error.status();
    if status.is_server_error() {
        // Logs the cause chain, as the JSON rendering does; the body is replaced below.
        let _ = error.into_response();
        return error_page(
            status,
            "Something went wrong",
            "The dashboard could not read the queues. Try again in a moment.",
            false,
        );
    }
    let message = error.body().message;
    error_page(
        status,
        status.canonical_reason().unwrap_or("Error"),
        &message,
        false,
    )
}

/// No caching (pages hold live data and a CSRF token), no framing, a strict CSP.
pub fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// What priority levels mean, with the names the engine gives some of them.
fn priority_legend() -> String {
    let named = [
        (Priority::CRITICAL, "critical"),
        (Priority::HIGH, "high"),
        (Priority::NORMAL, "normal (default)"),
        (Priority::LOW, "low"),
        (Priority::LOWEST, "lowest"),
    ]
    .map(|(p, name)| format!("{} {name}", p.level()))
    .join(", ");
    format!("Priority: 0 runs first … 9 runs last ({named}).")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_legend_names_the_engines_levels() {
        assert_eq!(
            priority_legend(),
            "Priority: 0 runs first … 9 runs last \
             (0 critical, 2 high, 5 normal (default), 8 low, 9 lowest)."
        );
    }
}
