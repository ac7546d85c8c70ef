//! Structured logs, the request id that follows an order from HTTP into every job, and traces.
//!
//! - [`init`] installs the global subscriber: one JSON object per line by default
//!   (`timestamp`, `level`, `message`, `target`, then the fields of the event and of every
//!   enclosing span, flattened, so `request_id` and `job_id` sit at the top level where log
//!   shippers index them), or coloured text with `LOG_FORMAT=pretty`.
//! - The request id lives in a task-local ([`with_request_id`], [`current_request_id`]): the
//!   api's middleware sets it for the whole request, the outbox copies it into every job the
//!   request stages, and the worker sets it again around each job, so one id ties an order's
//!   HTTP line to its email and webhook lines.
//! - With `OTEL_EXPORTER_OTLP_ENDPOINT` set, [`init`] also exports the same spans as
//!   OpenTelemetry traces over OTLP/HTTP ([`otlp`]), and installs the W3C trace context
//!   propagation the queue engine uses: a client's `traceparent` becomes the request span's
//!   parent ([`continue_remote_trace`]), every job records the span that staged it and runs as
//!   its child, and webhook deliveries send theirs ([`current_traceparent`]). Unset, none of
//!   this is installed and costs nothing.

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

mod otlp;

use crate::config::{LogConfig, LogFormat, TraceConfig};

/// Runs `fut` with `request_id` as the current request id. It is the queue's correlation id:
/// jobs staged under it carry it, and run under it again in the workers.
pub async fn with_request_id<F: Future>(request_id: String, fut: F) -> F::Output {
    crate::queue::correlation::scope(request_id, fut).await
}

/// The request id of the request (or job) this task is working for, if any.
pub fn current_request_id() -> Option<String> {
    crate::queue::correlation::current()
}

/// The installed telemetry; dropping it sends the spans still buffered (a process keeps it
/// until it exits).
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting_traces", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Sends what is buffered and stops exporting (what dropping it does, callable early).
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            // On a thread of its own: the provider blocks until the export thread is done,
            // which must not happen on a runtime's worker.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global log subscriber, and the trace export when `traces` has an endpoint
/// (`service` names the process in traces unless `OTEL_SERVICE_NAME` does). Safe to call more
/// than once (tests do): later calls install nothing and return an inert [`Telemetry`].
pub fn init(config: &LogConfig, traces: &TraceConfig, service: &str) -> Telemetry {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut telemetry = Telemetry { provider: None };
    INSTALLED.call_once(|| telemetry = install(config, traces, service));
    telemetry
}

fn install(config: &LogConfig, traces: &TraceConfig, service: &str) -> Telemetry {
    let log_filter =
        || EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (pipeline, pipeline_error) = match otlp::Pipeline::start(traces, service) {
        Ok(pipeline) => (pipeline, None),
        Err(error) => (None, Some(error)),
    };
    // Each output has its own filter: what is logged (`RUST_LOG`) and what is exported as
    // traces (`TRACE_FILTER`) are separate choices. Span events become span events in the
    // trace; busy/idle times and thread ids are noise next to the span's own duration.
    let traces_layer = pipeline.as_ref().map(|pipeline| {
        tracing_opentelemetry::layer()
            .with_tracer(pipeline.tracer.clone())
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(
                EnvFilter::try_new(&traces.filter).unwrap_or_else(|_| EnvFilter::new("info")),
            )
    });
    let result = match config.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(traces_layer)
            .with(
                SpanFieldsLayer
                    .and_then(
                        tracing_subscriber::fmt::layer()
                            .event_format(JsonLines)
                            .with_writer(std::io::stdout),
                    )
                    .with_filter(log_filter()),
            )
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(traces_layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    .with_filter(log_filter()),
            )
            .try_init(),
    };
    if let Some(error) = pipeline_error {
        tracing::error!(error = %format!("{error:#}"), "trace export could not start; running without it");
    }
    // An already-installed subscriber (a test harness's own) leaves traces off.
    if result.is_err() {
        return Telemetry { provider: None };
    }
    let Some(pipeline) = pipeline else {
        return Telemetry { provider: None };
    };
    crate::queue::trace::install(Box::new(otlp::Propagation::default()));
    tracing::info!(
        endpoint = traces.endpoint.as_deref().unwrap_or(""),
        "exporting traces over OTLP"
    );
    Telemetry {
        provider: Some(pipeline.provider),
    }
}

/// Makes `span` (an incoming request's) a child of the caller's trace when the request carries
/// a valid W3C `traceparent` (and `tracestate`) and tracing is on; otherwise it starts a trace.
pub fn continue_remote_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !crate::queue::trace::enabled() {
        return;
    }
    let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let tracestate = headers.get("tracestate").and_then(|v| v.to_str().ok());
    if let Some(cx) = otlp::Propagation::default().extract(traceparent, tracestate) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceparent` of the current span, to send on an outgoing request (webhook
/// deliveries); `None` with tracing off.
pub fn current_traceparent() -> Option<String> {
    crate::queue::trace::current()
}

/// The recorded fields of a span, kept in its extensions so [`JsonLines`] can flatten them.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

/// Collects field values into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    /// `otel.*` fields only name and classify spans for the trace exporter.
    fn keeps(field: &Field) -> bool {
        !field.name().starts_with("otel.")
    }
}

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !JsonVisitor::keeps(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !JsonVisitor::keeps(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !JsonVisitor::keeps(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !JsonVisitor::keeps(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !JsonVisitor::keeps(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !JsonVisitor::keeps(field) {
            return;
        }
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
        if !JsonVisitor::keeps(field) {
            return;
        }
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
