//! Structured logs and the request id that follows an order from HTTP into every job.
//!
//! - [`init`] installs the global subscriber: one JSON object per line by default
//!   (`timestamp`, `level`, `message`, `target`, then the fields of the event and of every
//!   enclosing span, flattened, so `request_id` and `job_id` sit at the top level where log
//!   shippers index them), or coloured text with `LOG_FORMAT=pretty`.
//! - The request id lives in a task-local ([`with_request_id`], [`current_request_id`]): the
//!   api's middleware sets it for the whole request, the outbox copies it into every job the
//!   request stages, and the worker sets it again around each job, so one id ties an order's
//!   HTTP line to its email and webhook lines.

use std::{fmt, future::Future};

use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field, span};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::Context,
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{LogConfig, LogFormat};

/// Runs `fut` with `request_id` as the current request id. It is the queue's correlation id:
/// jobs staged under it carry it, and run under it again in the workers.
pub async fn with_request_id<F: Future>(request_id: String, fut: F) -> F::Output {
    crate::queue::correlation::scope(request_id, fut).await
}

/// The request id of the request (or job) this task is working for, if any.
pub fn current_request_id() -> Option<String> {
    crate::queue::correlation::current()
}

/// Installs the global log subscriber. Safe to call more than once (tests do): later calls are no-ops.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match config.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
    };
    // An already-installed subscriber (a second init in one test binary) is fine.
    let _ = result;
}

/// The recorded fields of a span, kept in its extensions so [`JsonLines`] can flatten them.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

/// Collects field values into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, once, so a log reader sees why and not just what.
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().into(), Value::from(chain));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// Stores each span's fields in its extensions when it is created or recorded into.
struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut JsonVisitor(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }
}

/// One JSON object per event: timestamp, level, message, target, span fields (outermost
/// first, so inner spans win), then the event's own fields.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        line.insert("target".into(), Value::from(event.metadata().target()));

        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if !line.contains_key("request_id")
            && let Some(id) = current_request_id()
        {
            line.insert("request_id".into(), Value::from(id));
        }

        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::from(""));
        line.insert("message".into(), message);
        line.extend(fields);

        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_id_is_scoped_to_the_task() {
        assert_eq!(current_request_id(), None);
        let inside = with_request_id("req-1".into(), async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("req-1"));
        assert_eq!(current_request_id(), None);
    }
}
