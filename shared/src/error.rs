//! `AppError`, the one error type of the domain and the api, and the one error shape clients see.
//!
//! Every error response of the whole API is
//! `{"statusCode": 422, "message": "...", "error": "Unprocessable Entity"}`, with an optional
//! `details` array naming the fields of a validation error. Services return `AppError`; the
//! api renders it through [`IntoResponse`]. A 5xx never tells the client why: the cause chain is
//! logged once, with the request id, and the client gets a generic sentence.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Shorthand used across the crate and the binaries.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// One problem with one input field, listed in `details` of a 400/422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as the client named it (`items[0].quantity`).
    #[schema(example = "items[0].quantity")]
    pub field: String,
    /// What is wrong with it.
    #[schema(example = "must be between 1 and 1000")]
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything that can go wrong while serving a request or running a domain operation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request cannot be read (malformed JSON, bad path or query, missing header).
    #[error("{message}")]
    BadRequest {
        /// Said to the client.
        message: String,
        /// Fields at fault, if known.
        details: Vec<FieldError>,
    },
    /// 401: no credentials, or credentials that do not check out.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or not one the caller may know exists).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with the current state (duplicate, insufficient stock, in flight).
    #[error("{0}")]
    Conflict(String),
    /// 410: the resource existed and is gone for good (an expired report's file).
    #[error("{0}")]
    Gone(String),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not of a type this route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but breaks a rule.
    #[error("{message}")]
    Unprocessable {
        /// Said to the client.
        message: String,
        /// Fields at fault, if known.
        details: Vec<FieldError>,
    },
    /// 429: over the rate limit; `retry_after` says when the next request will be accepted.
    #[error("{message}")]
    TooManyRequests {
        /// Said to the client.
        message: String,
        /// Sent as `Retry-After` (whole seconds, rounded up).
        retry_after: Duration,
    },
    /// 503: a dependency is down or the request took too long; worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure. The cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }
    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(message.into())
    }
    /// 403 with a message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
    /// 409 with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }
    /// 410 with a message.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::Gone(message.into())
    }
    /// 422 with a message and no field details.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::Unprocessable {
            message: message.into(),
            details: Vec::new(),
        }
    }
    /// 422 naming one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let field = field.into();
        Self::Unprocessable {
            message: format!("{field}: {message}"),
            details: vec![FieldError::new(field, message)],
        }
    }
    /// 500 from anything displayable (the text is logged, not sent).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{cause}"))
    }

    /// The HTTP status this error renders as.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body a client sees. Internal errors get a fixed sentence.
    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        let (message, details) = match self {
            Self::Internal(_) => ("Internal server error".to_owned(), None),
            Self::BadRequest { message, details } | Self::Unprocessable { message, details } => (
                message.clone(),
                (!details.is_empty()).then(|| details.clone()),
            ),
            other => (other.to_string(), None),
        };
        ErrorBody::new(status, message, details)
    }
}

/// The one error shape (`statusCode`, `message`, `error`, optional `details`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The HTTP status code, repeated in the body for clients that only keep the body.
    #[schema(example = 422)]
    pub status_code: u16,
    /// What went wrong, for a person.
    #[schema(example = "items[0].quantity: must be between 1 and 1000")]
    pub message: String,
    /// The reason phrase of the status (`Not Found`).
    #[schema(example = "Unprocessable Entity")]
    pub error: String,
    /// Fields at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

impl ErrorBody {
    /// A body for `status` saying `message`.
    pub fn new(status: StatusCode, message: String, details: Option<Vec<FieldError>>) -> Self {
        Self {
            status_code: status.as_u16(),
            message,
            error: status.canonical_reason().unwrap_or("Error").to_owned(),
            details,
        }
    }

    /// Renders the body with `status` as a JSON response.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            // `{:#}` prints the whole anyhow chain on one line.
            tracing::error!(error.cause_chain = %format!("{cause:#}"), status = status.as_u16(), "request failed");
        }
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let mut response = self.body().into_response_with(status);
        if let Some(wait) = retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match rejection {
            J::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ),
            J::JsonSyntaxError(e) => {
                Self::bad_request(format!("malformed JSON: {}", e.body_text_cause()))
            }
            J::JsonDataError(e) => Self::Unprocessable {
                message: format!("invalid request body: {}", e.body_text_cause()),
                details: Vec::new(),
            },
            J::BytesRejection(e) => body_rejection(e.status(), e.body_text()),
            other => Self::bad_request(other.body_text()),
        }
    }
}

fn body_rejection(status: StatusCode, text: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge("request body is too large".into())
    } else {
        AppError::bad_request(format!("could not read the request body: {text}"))
    }
}

impl From<axum::extract::rejection::BytesRejection> for AppError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        body_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::multipart::MultipartRejection> for AppError {
    fn from(rejection: axum::extract::multipart::MultipartRejection) -> Self {
        // The only rejection: no `multipart/form-data` content type with a boundary.
        Self::UnsupportedMediaType(format!(
            "expected a multipart/form-data request body: {}",
            rejection.body_text()
        ))
    }
}

impl From<axum::extract::multipart::MultipartError> for AppError {
    fn from(error: axum::extract::multipart::MultipartError) -> Self {
        // 413 when the body outgrew its limit; otherwise the body is malformed or cut short.
        body_rejection(error.status(), error.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for AppError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// The cause of a JSON error without axum's prefix, for a readable message.
trait BodyTextCause {
    fn body_text_cause(&self) -> String;
}

impl<T: std::error::Error> BodyTextCause for T {
    fn body_text_cause(&self) -> String {
        let mut cause: &dyn std::error::Error = self;
        while let Some(next) = cause.source() {
            cause = next;
        }
        cause.to_string()
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Unavailable("database is busy, try again".into()),
            // The server is gone or going (restart, failover, crash): the request did not
            // happen, and the same request later will work, so 503 and not 500.
            sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::Unavailable("database unavailable, try again".into())
            }
            // 08: connection exceptions; 57P01-57P03: shut down by an administrator, a crash
            // of another backend, or still starting up; 53300: too many connections.
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                }) =>
            {
                Self::Unavailable("database unavailable, try again".into())
            }
            // `text` cannot hold NUL (22021) or what the server encoding cannot represent
            // (22P05). The extractors refuse such input naming the field; this is the net under
            // any path that reaches the database without them, so the client hears it was its
            // input rather than a 500.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                Self::bad_request("text must not contain NUL characters and must be UTF-8")
            }
            other => Self::Internal(anyhow::Error::new(other).context("database error")),
        }
    }
}

impl From<crate::queue::QueueError> for AppError {
    fn from(e: crate::queue::QueueError) -> Self {
        match e {
            crate::queue::QueueError::Database(e) => e.into(),
            crate::queue::QueueError::Redis(e) => e.into(),
            crate::queue::QueueError::Payload(e) => {
                Self::Internal(anyhow::Error::new(e).context("job payload"))
            }
        }
    }
}

impl From<crate::queue::schedule::ScheduleError> for AppError {
    fn from(e: crate::queue::schedule::ScheduleError) -> Self {
        use crate::queue::schedule::ScheduleError;
        match e {
            ScheduleError::NotFound(_) => Self::not_found("no such schedule"),
            ScheduleError::Redis(e) => e.into(),
            // The shop defines its schedules from checked input: a refused one is a bug.
            invalid @ ScheduleError::Invalid(_) => {
                Self::Internal(anyhow::Error::new(invalid).context("schedule definition"))
            }
        }
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        Self::Internal(anyhow::Error::new(e).context("redis error"))
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("json error"))
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(anyhow::Error::new(e).context("background task failed"))
    }
}

/// Turns database constraint violations into domain errors, e.g.
/// `.on_constraint("users_email_key", |_| AppError::conflict("email already registered"))`.
pub trait ResultExt<T> {
    /// Maps a violation of the named constraint with `f`; other errors convert as usual.
    fn on_constraint(
        self,
        name: &str,
        f: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> AppError,
    ) -> Result<T, AppError>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_constraint(
        self,
        name: &str,
        f: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> AppError,
    ) -> Result<T, AppError> {
        self.map_err(|e| match e {
            sqlx::Error::Database(db) if db.constraint() == Some(name) => f(db),
            other => AppError::from(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let err = AppError::internal("connection refused to 10.0.0.7:5432");
        let body = err.body();
        assert_eq!(body.status_code, 500);
        assert_eq!(body.message, "Internal server error");
        assert_eq!(body.error, "Internal Server Error");
    }

    #[test]
    fn validation_errors_carry_details() {
        let body = AppError::invalid_field("items[0].quantity", "must be at least 1").body();
        assert_eq!(body.status_code, 422);
        assert_eq!(body.error, "Unprocessable Entity");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["details"][0]["field"], "items[0].quantity");
        assert_eq!(json["statusCode"], 422);
    }
}

// The one way a domain error becomes a job outcome, so job handlers write `?` instead of
// mapping by hand. It lives here, beside `AppError`, and not in `queue/`: the queue engine
// knows nothing of the shop (it is becoming its own crate), while the domain error knows every
// way it is reported (a response above, a job outcome here). Once the engine is its own crate,
// this impl stays legal where it is, since it is written in the crate that owns `AppError`.
impl From<AppError> for crate::queue::JobError {
    /// Problems with the input itself (what a 4xx says) are permanent: running the same job
    /// again reads the same ids and meets the same answer. A busy dependency (503), a rate
    /// limit (429, after the wait it names) and everything unexpected (500) are retried.
    fn from(error: AppError) -> Self {
        use crate::queue::JobError;
        // `{:#}` keeps the whole cause chain of an internal error for the dashboard.
        let message = format!("{error:#}");
        match error {
            AppError::BadRequest { .. }
            | AppError::Unauthorized(_)
            | AppError::Forbidden(_)
            | AppError::NotFound(_)
            | AppError::MethodNotAllowed(_)
            | AppError::Conflict(_)
            | AppError::Gone(_)
            | AppError::PayloadTooLarge(_)
            | AppError::UnsupportedMediaType(_)
            | AppError::Unprocessable { .. } => JobError::permanent(message),
            AppError::TooManyRequests { retry_after, .. } => {
                JobError::retry_after(message, retry_after)
            }
            AppError::Unavailable(_) | AppError::Internal(_) => JobError::retry(message),
        }
    }
}

#[cfg(test)]
mod job_error_tests {
    use std::time::Duration;

    use super::AppError;
    use crate::queue::{JobError, job::JobResultExt};

    fn job(error: AppError) -> JobError {
        error.into()
    }

    #[test]
    fn input_errors_are_permanent() {
        let cases = [
            AppError::bad_request("bad"),
            AppError::unauthorized("who"),
            AppError::forbidden("no"),
            AppError::not_found("gone"),
            AppError::MethodNotAllowed("method".into()),
            AppError::conflict("taken"),
            AppError::PayloadTooLarge("big".into()),
            AppError::UnsupportedMediaType("type".into()),
            AppError::unprocessable("rule"),
        ];
        for error in cases {
            let message = error.to_string();
            assert_eq!(job(error), JobError::permanent(message));
        }
    }

    #[test]
    fn passing_errors_are_retried() {
        assert_eq!(
            job(AppError::Unavailable("database is busy".into())),
            JobError::retry("database is busy")
        );
        assert_eq!(
            job(AppError::TooManyRequests {
                message: "slow down".into(),
                retry_after: Duration::from_secs(3),
            }),
            JobError::retry_after("slow down", Duration::from_secs(3))
        );
        let internal =
            AppError::Internal(anyhow::anyhow!("connection reset").context("redis error"));
        assert_eq!(
            job(internal),
            JobError::retry("redis error: connection reset")
        );
    }

    #[test]
    fn context_is_kept_with_the_classification() {
        let missing: Result<(), AppError> = Err(AppError::not_found("the file is missing"));
        assert_eq!(
            missing.context("opening the upload"),
            Err(JobError::permanent(
                "opening the upload: the file is missing"
            ))
        );
        let internal: Result<(), AppError> = Err(AppError::internal("timeout"));
        assert_eq!(
            internal.context("loading report"),
            Err(JobError::retry("loading report: timeout"))
        );
    }
}
