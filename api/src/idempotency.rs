//! Running an unsafe request under an `Idempotency-Key` (HTTP side of `orderly::idempotency`).
//!
//! The response body is serialised once, stored, and those exact bytes are sent, so a replay
//! is byte-for-byte the first answer. Client errors (4xx) from the operation are stored too
//! (Stripe does the same): retrying a refused request with the same key is refused the same
//! way. Server errors release the key so a retry runs the operation again. Replays carry
//! `Idempotent-Replayed: true`.

use std::future::Future;

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::Response,
};
use orderly::{
    error::AppError,
    idempotency::{self, Begin, Claim, StoredResponse},
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

fn json_response(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
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
/// `operation` gets the claim (what it creates takes the claim's `resource_id`) and returns
/// the status and serialised body to send; `recover` rebuilds that answer from the resource
/// with a given id if it exists (an earlier attempt committed and its response was lost), and
/// says `None` if it does not.
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
    Op: FnOnce(Claim) -> OpFut,
    OpFut: Future<Output = Result<(StatusCode, Vec<u8>), AppError>>,
    Rec: FnOnce(Uuid) -> RecFut,
    RecFut: Future<Output = Result<Option<(StatusCode, Vec<u8>)>, AppError>>,
{
    let keys = &state.services.idempotency;
    match keys
        .begin(actor.user_id, scope, key, request_fingerprint)
        .await?
    {
        Begin::Replay(StoredResponse { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok(json_response(status, body, true))
        }
        Begin::Unfinished {
            claim,
            lock_expired,
        } => {
            if let Some((status, body)) = recover(claim.resource_id).await? {
                keys.complete(
                    &claim,
                    &StoredResponse {
                        status: status.as_u16(),
                        body: body.clone(),
                    },
                )
                .await?;
                Ok(json_response(status, body, true))
            } else if lock_expired && keys.take_over(&claim).await? {
                // The earlier attempt died before committing anything: this one runs instead.
                proceed(state, claim, operation).await
            } else {
                Err(AppError::conflict(
                    "a request with this Idempotency-Key is still being processed",
                ))
            }
        }
        Begin::Proceed(claim) => proceed(state, claim, operation).await,
    }
}

/// Runs the operation under `claim` and stores its answer: successes and client errors are
/// kept for replays; a server error releases the key so a retry runs again.
async fn proceed<Op, OpFut>(
    state: &AppState,
    claim: Claim,
    operation: Op,
) -> Result<Response, AppError>
where
    Op: FnOnce(Claim) -> OpFut,
    OpFut: Future<Output = Result<(StatusCode, Vec<u8>), AppError>>,
{
    match operation(claim.clone()).await {
        Ok((status, body)) => {
            // Stored off the response's path; a retry meanwhile is answered from the resource.
            state.services.idempotency.complete_later(
                claim,
                StoredResponse {
                    status: status.as_u16(),
                    body: body.clone(),
                },
            );
            Ok(json_response(status, body, false))
        }
        Err(error) if error.status().is_client_error() => {
            let status = error.status();
            let body = serde_json::to_vec(&error.body())?;
            store(state, &claim, status, &body).await;
            Err(error)
        }
        Err(error) => {
            if let Err(release_error) = state.services.idempotency.release(&claim).await {
                tracing::warn!(error = %release_error, "could not release idempotency key");
            }
            Err(error)
        }
    }
}

/// Stores a refusal's response before it is sent; if that fails, a retry runs the operation
/// again once the claim's lock runs out (nothing was created).
async fn store(state: &AppState, claim: &Claim, status: StatusCode, body: &[u8]) {
    let response = StoredResponse {
        status: status.as_u16(),
        body: body.to_vec(),
    };
    if let Err(error) = state.services.idempotency.complete(claim, &response).await {
        tracing::warn!(%error, "could not store idempotent response");
    }
}
