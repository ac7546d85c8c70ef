//! Running an unsafe request under an `Idempotency-Key` (HTTP side of `orderly::idempotency`).
//!
//! The operation claims the key in its own transaction, storing its response with the claim,
//! and returns either that response or the earlier request that answers instead. The response
//! body is serialised once, stored, and those exact bytes are sent, so a replay is
//! byte-for-byte the first answer. Client errors (4xx) from the operation are stored too
//! (Stripe does the same): retrying a refused request with the same key is refused the same
//! way. Server errors store nothing (the operation rolled back with its claim), so a retry runs
//! the operation again. Replays carry `Idempotent-Replayed: true`.

use std::future::Future;

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::Response,
};
use orderly::{
    error::AppError,
    idempotency::{self, Attempt, Claim, Earlier, Keyed, StoredResponse},
    users::Actor,
};
use uuid::Uuid;

use crate::state::AppState;

/// The request's `Idempotency-Key`; a missing or malformed key is a 400.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| AppError::bad_request("missing Idempotency-Key header"))?
            .to_str()
            .map_err(|_| AppError::bad_request("Idempotency-Key must be printable ASCII"))?;
        Ok(Self(idempotency::parse_key(raw)?))
    }
}

fn json_response(StoredResponse { status, body }: StoredResponse, replayed: bool) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Runs `operation` at most once per (user, scope, key, request fingerprint).
///
/// `operation` claims the key of the [`Attempt`] it is given inside its transaction (what it
/// creates takes the claim's `resource_id`), with the status and serialised body it answers,
/// and returns that answer, or the earlier request under the key; `recover` rebuilds the
/// answer from the resource with a given id if it exists (a key claimed by an earlier version,
/// whose request committed and its response was not stored), and says `None` if it does not.
/// `operation` runs a second time only to take over a claim left by an attempt of an earlier
/// version that never committed.
pub async fn run<Op, OpFut, Rec, RecFut>(
    state: &AppState,
    actor: &Actor,
    scope: &'static str,
    key: &str,
    request_fingerprint: &str,
    operation: Op,
    recover: Rec,
) -> Result<Response, AppError>
where
    Op: Fn(Attempt) -> OpFut,
    OpFut: Future<Output = Result<Keyed<StoredResponse>, AppError>>,
    Rec: FnOnce(Uuid) -> RecFut,
    RecFut: Future<Output = Result<Option<StoredResponse>, AppError>>,
{
    let attempt = Attempt::new(actor.user_id, scope, key, request_fingerprint);
    let earlier = match operation(attempt.clone()).await {
        Ok(Keyed::Done(response)) => return Ok(json_response(response, false)),
        Ok(Keyed::Earlier(earlier)) => earlier,
        Err(error) => return Err(refused(state, &attempt, error).await),
    };
    match earlier {
        Earlier::Replay(stored) => Ok(json_response(stored, true)),
        Earlier::InFlight => Err(still_running()),
        Earlier::Unfinished {
            claim,
            lock_expired,
        } => match recover_answer(state, &claim, recover).await? {
            Some(response) => Ok(response),
            // No resource: the earlier attempt died before committing; once its lock has run
            // out, this one runs instead, with its resource id.
            None if lock_expired => take_over(state, attempt.taking_over(claim), operation).await,
            None => Err(still_running()),
        },
    }
}

fn still_running() -> AppError {
    AppError::conflict("a request with this Idempotency-Key is still being processed")
}

/// The second run of an operation, taking over a dead claim; whatever it finds is final.
async fn take_over<Op, OpFut>(
    state: &AppState,
    attempt: Attempt,
    operation: Op,
) -> Result<Response, AppError>
where
    Op: Fn(Attempt) -> OpFut,
    OpFut: Future<Output = Result<Keyed<StoredResponse>, AppError>>,
{
    match operation(attempt.clone()).await {
        Ok(Keyed::Done(response)) => Ok(json_response(response, false)),
        Ok(Keyed::Earlier(Earlier::Replay(stored))) => Ok(json_response(stored, true)),
        // Another retry took the claim over first, or the earlier attempt finished meanwhile.
        Ok(Keyed::Earlier(_)) => Err(still_running()),
        Err(error) => Err(refused(state, &attempt, error).await),
    }
}

/// The answer of an unfinished key rebuilt from its resource, stored for later replays; `None`
/// if the resource does not exist.
async fn recover_answer<Rec, RecFut>(
    state: &AppState,
    claim: &Claim,
    recover: Rec,
) -> Result<Option<Response>, AppError>
where
    Rec: FnOnce(Uuid) -> RecFut,
    RecFut: Future<Output = Result<Option<StoredResponse>, AppError>>,
{
    let Some(response) = recover(claim.resource_id).await? else {
        return Ok(None);
    };
    state
        .services
        .idempotency
        .complete(claim, &response)
        .await?;
    Ok(Some(json_response(response, true)))
}

/// Stores a refusal (a client error) before it is sent, and hands the error back; if storing
/// fails, a retry runs the operation again (it created nothing). Server errors store nothing.
async fn refused(state: &AppState, attempt: &Attempt, error: AppError) -> AppError {
    if !error.status().is_client_error() {
        return error;
    }
    let body = match serde_json::to_vec(&error.body()) {
        Ok(body) => body,
        Err(encode_error) => return AppError::from(encode_error),
    };
    let response = StoredResponse {
        status: error.status().as_u16(),
        body,
    };
    if let Err(store_error) = state.services.idempotency.refuse(attempt, &response).await {
        tracing::warn!(error = %store_error, "could not store idempotent response");
    }
    error
}
