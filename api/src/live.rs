//! Server-Sent Events for clients following a report's build or an upload's processing
//! (`GET /api/v1/reports/{id}/events`, `GET /api/v1/uploads/{id}/events`).
//!
//! A stream sends `progress` events (and `started`, `retrying`, `cancelling` steps) while the
//! job runs, then one final `completed`, `failed` or `cancelled` event whose data is the row in
//! the same shape as `GET` returns it, and ends. Every step carries an `id`; a client that
//! reconnects with `Last-Event-ID` gets only what came after it (browsers' `EventSource` does
//! this by itself). An error after the stream started arrives as an `error` event in the one
//! error shape. A comment every 15 s keeps proxies from closing a quiet stream.

use std::{convert::Infallible, time::Duration};

use axum::{
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt, stream::BoxStream};
use orderly::{error::AppError, jobs::LiveUpdate};
use serde::Serialize;

/// The resume point a reconnecting client sent: a stream entry id (`<ms>-<seq>`), or `None`
/// when absent or not of that form (the client then gets every step again, which is harmless).
pub fn last_event_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("last-event-id")?.to_str().ok()?.trim();
    let (ms, seq) = value.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(ms) && digits(seq)).then(|| value.to_owned())
}

/// The SSE response for `updates`, with each final row shown as `shape` makes it.
pub fn events<T, Dto>(
    updates: BoxStream<'static, Result<LiveUpdate<T>, AppError>>,
    shape: fn(T) -> Dto,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    T: Send + 'static,
    Dto: Serialize + 'static,
{
    let events = updates.map(move |update| {
        Ok(match update {
            Ok(LiveUpdate::Step { id, kind, data }) => json_event(&kind, &data).id(id),
            Ok(LiveUpdate::Final { id, kind, row }) => {
                let event = json_event(kind, &shape(row));
                match id {
                    Some(id) => event.id(id),
                    None => event,
                }
            }
            Err(error) => json_event("error", &error.body()),
        })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name).data("null"))
}
