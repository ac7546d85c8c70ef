//! `/uploads`: admins upload product imports and product images; processing is a worker job,
//! followed live and cancellable.

use axum::{
    Json,
    extract::{State, multipart::Field},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use orderly::{
    error::{AppError, ErrorBody},
    uploads::{FileDescription, ReceivedFile, UploadCancel, UploadPurpose, UploadRequest},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    extract::{Multipart, Path, Query},
    live,
    state::AppState,
    uploads::dto::{UploadAccepted, UploadFields, UploadForm, UploadQuery, UploadResponse},
};

/// The upload route, which needs the large body limit.
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_upload))
}

/// The other uploads routes (small bodies).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_upload))
        .routes(routes!(cancel_upload))
        .routes(routes!(upload_events))
}

/// Longest value of a text field of the form (`purpose`, `product_id`).
const MAX_TEXT_FIELD_BYTES: usize = 256;

/// Upload a product import (CSV) or a product image (admin); it is processed in the background.
#[utoipa::path(post, path = "/uploads", tag = "uploads", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored and queued for processing", body = UploadAccepted,
            headers(("location" = String, description = "Where to follow the upload"))),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "Missing or invalid purpose, product_id or file", body = ErrorBody)))]
pub async fn create_upload(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Multipart(multipart): Multipart,
) -> Result<Response, AppError> {
    let (fields, file) = read_form(&state, multipart).await?;
    let Some((description, file)) = file else {
        return Err(AppError::invalid_field("file", "is required"));
    };
    let request =
        match UploadRequest::parse(fields.purpose.as_deref(), fields.product_id.as_deref()) {
            Ok(request) => request,
            Err(error) => {
                file.discard().await;
                return Err(error);
            }
        };
    let upload = state
        .services
        .uploads
        .accept(&admin, request, description, file)
        .await?;
    let location = HeaderValue::from_str(&format!("/api/v1/uploads/{}", upload.id))
        .map_err(AppError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(UploadAccepted::from(upload)),
    )
        .into_response())
}

/// An upload's status, progress, counts and a page of its row errors (admin).
#[utoipa::path(get, path = "/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path), UploadQuery),
    responses((status = 200, body = UploadResponse), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_upload(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
    Query(query): Query<UploadQuery>,
) -> Result<Json<UploadResponse>, AppError> {
    let report = state
        .services
        .uploads
        .report(id, query.errors_page()?)
        .await?;
    Ok(Json(report.into()))
}

/// Cancel an upload's processing (admin): a queued one is cancelled at once (200); one being
/// processed is stopped by its worker (202): an import stops between batches and keeps the rows
/// it applied (the counts say how many).
#[utoipa::path(post, path = "/uploads/{id}/cancel", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "Cancelled", body = UploadResponse),
        (status = 202, description = "Being processed: its worker was asked to stop", body = UploadResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already completed, failed or cancelled", body = ErrorBody)))]
pub async fn cancel_upload(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<UploadResponse>), AppError> {
    Ok(match state.services.uploads.cancel(&admin, id).await? {
        UploadCancel::Cancelled(upload) => {
            (StatusCode::OK, Json(UploadResponse::without_errors(upload)))
        }
        UploadCancel::Stopping(upload) => (
            StatusCode::ACCEPTED,
            Json(UploadResponse::without_errors(upload)),
        ),
    })
}

/// Follow an upload's processing live (Server-Sent Events, admin): `progress` events
/// (`{"fraction":0.4,"note":"4000 rows applied","at":...}`) while it runs, then one final
/// `completed`, `failed` or `cancelled` event carrying the upload (without its page of row
/// errors), and the stream ends. Reconnect with `Last-Event-ID` to resume.
#[utoipa::path(get, path = "/uploads/{id}/events", tag = "uploads", security(("bearer" = [])),
    params(("id" = Uuid, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn upload_events(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let updates = state
        .services
        .uploads
        .follow(id, live::last_event_id(&headers))
        .await?;
    Ok(live::events(updates, UploadResponse::without_errors).into_response())
}

/// A received file and what the client said about it.
type FilePart = (FileDescription, ReceivedFile);

/// Reads the form in the order the parts arrive, streaming the `file` part to storage. When the
/// text fields come first, they are checked before any byte of the file is stored. On error,
/// a file already received is deleted.
async fn read_form(
    state: &AppState,
    mut multipart: axum::extract::Multipart,
) -> Result<(UploadFields, Option<FilePart>), AppError> {
    let mut fields = UploadFields::default();
    let mut file: Option<FilePart> = None;
    let outcome = async {
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "purpose" => fields.purpose = Some(small_text(field, "purpose").await?),
                "product_id" => fields.product_id = Some(small_text(field, "product_id").await?),
                "file" => {
                    if file.is_some() {
                        return Err(AppError::invalid_field("file", "only one file per upload"));
                    }
                    check_early(state, &fields).await?;
                    let description = FileDescription::new(field.file_name(), field.content_type());
                    let received = state
                        .services
                        .uploads
                        .receive(field.map_err(AppError::from))
                        .await?;
                    file = Some((description, received));
                }
                other => {
                    return Err(AppError::invalid_field(
                        if other.is_empty() { "(unnamed)" } else { other },
                        "unknown form field (expected purpose, product_id and file)",
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => Ok((fields, file)),
        Err(error) => {
            if let Some((_, received)) = file {
                received.discard().await;
            }
            Err(error)
        }
    }
}

/// Refuses a bad `purpose` or an unknown product before the file is stored, when the client sent
/// those fields first.
async fn check_early(state: &AppState, fields: &UploadFields) -> Result<(), AppError> {
    match (&fields.purpose, &fields.product_id) {
        (Some(purpose), Some(product_id)) => {
            let request = UploadRequest::parse(Some(purpose), Some(product_id))?;
            state.services.uploads.check(&request).await
        }
        (Some(purpose), None) => UploadPurpose::parse(purpose).map(|_| ()),
        _ => Ok(()),
    }
}

/// A short text field, refused (422) past [`MAX_TEXT_FIELD_BYTES`] without reading the rest.
async fn small_text(mut field: Field<'_>, name: &str) -> Result<String, AppError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(AppError::invalid_field(
                name,
                format!("must be at most {MAX_TEXT_FIELD_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| AppError::invalid_field(name, "must be UTF-8 text"))?;
    if text.contains('\0') {
        return Err(AppError::invalid_field(
            name,
            "must not contain NUL characters",
        ));
    }
    Ok(text)
}
