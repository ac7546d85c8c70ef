//! What every operator action shares: the button a page draws for it, the form it posts, the
//! gate in front of it (the session's CSRF token, then a confirmation page unless the operator
//! already confirmed; the page carries the form's other fields, such as a bulk action's selected
//! ids, on to the confirmed post), and the redirect back to the page with a notice afterwards.
//! The actions themselves are the queue's (`queue`, bulk actions included), the job's (`job`),
//! the group's (`groups`) and the schedule's (`schedules`).

use axum::{
    extract::rejection::FormRejection,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::{Deserialize, Serialize};

use crate::dashboard::{
    frame::Frame,
    render::{error_page, render},
    session::{AdminSession, safe_return_path},
};

/// One operator action as a button in a POST form.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Form target.
    pub url: String,
    /// Button text.
    pub label: &'static str,
    /// The question the confirmation dialog asks.
    pub confirm: String,
    /// Destructive (drawn in red).
    pub danger: bool,
}

/// The form every action posts.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub(super) csrf: String,
    /// `yes` once the operator confirmed; without it the server asks first.
    confirmed: Option<String>,
    /// The page to come back to.
    pub(super) return_to: Option<String>,
}

impl ActionForm {
    /// The form's own fields out of all the fields a form posted (a bulk action's form also
    /// carries its selection and filter).
    pub(super) fn from_pairs(pairs: &[(String, String)]) -> Self {
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        Self {
            csrf: field("csrf").unwrap_or_default(),
            confirmed: field("confirmed"),
            return_to: field("return_to"),
        }
    }
}

/// What to do with an action request.
pub(super) enum Gate {
    /// Checked and confirmed: act.
    Proceed(ActionForm),
    /// Answer this instead of acting (an error page, or the confirmation page).
    Respond(Response),
}

/// Checks the CSRF token and the confirmation of an action request.
pub(super) fn authorize_action(
    session: &AdminSession,
    headers: &HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
    question: &str,
    action_url: &str,
) -> Gate {
    authorize_action_with(session, headers, form, question, action_url, &[])
}

/// [`authorize_action`] for a form with more fields than [`ActionForm`]'s: the confirmation
/// page posts `fields` again with the confirmed request.
pub(super) fn authorize_action_with(
    session: &AdminSession,
    headers: &HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
    question: &str,
    action_url: &str,
    fields: &[(String, String)],
) -> Gate {
    let Ok(axum::Form(form)) = form else {
        return Gate::Respond(error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
            false,
        ));
    };
    if let Err(error) = session.check_action(headers, &form.csrf) {
        return Gate::Respond(error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            &error.body().message,
            false,
        ));
    }
    if form.confirmed.as_deref() != Some("yes") {
        return Gate::Respond(render(
            StatusCode::OK,
            "confirm.html",
            minijinja::context! {
                frame => Frame::new(session, "Confirm", safe_return_path(form.return_to.as_deref()), None),
                question,
                action_url,
                fields,
            },
        ));
    }
    Gate::Proceed(form)
}

pub(super) fn after_action(return_to: &str, done: &str, n: Option<u64>) -> Response {
    let separator = if return_to.contains('?') { '&' } else { '?' };
    let count = n.map(|n| format!("&n={n}")).unwrap_or_default();
    Redirect::to(&format!("{return_to}{separator}done={done}{count}")).into_response()
}
