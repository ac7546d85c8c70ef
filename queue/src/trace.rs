//! The distributed-trace context that travels with jobs, so a job's run shows up in the same
//! trace as the request (or job) that staged it.
//!
//! The engine carries a W3C `traceparent` string on each job ([`crate::JobSpec::traceparent`]):
//! recorded when the job is built or staged, stored in the job's hash, and handed back at claim
//! time. What a traceparent is made of, and how a `tracing` span becomes part of a trace, is the
//! application's business (it chooses the tracing SDK and exporter); the engine only calls the
//! [`TracePropagation`] the application [`install`]s. With none installed (tracing off) nothing
//! is recorded and every call here is one atomic load.

use std::sync::OnceLock;

/// How the application reads and continues trace contexts; see the module docs.
pub trait TracePropagation: Send + Sync + 'static {
    /// The `traceparent` of the current span, to record on a job being staged; `None` when the
    /// current span is not being traced.
    fn current(&self) -> Option<String>;
    /// Makes `span` (a job's run) a child of the context `traceparent` describes.
    fn continue_from(&self, span: &tracing::Span, traceparent: &str);
    /// Links `span` (one push of many jobs' outbox rows) to the context a job was staged in.
    fn link(&self, span: &tracing::Span, traceparent: &str);
}

static PROPAGATION: OnceLock<Box<dyn TracePropagation>> = OnceLock::new();

/// Installs the process's propagation; returns false (and keeps the first) when one already is.
pub fn install(propagation: Box<dyn TracePropagation>) -> bool {
    PROPAGATION.set(propagation).is_ok()
}

/// The traceparent of the current span, if tracing is on and the span is traced.
pub fn current() -> Option<String> {
    PROPAGATION.get()?.current()
}

/// Continues `traceparent`'s trace in `span` (no-op with tracing off or no context).
pub(crate) fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    if let (Some(propagation), Some(traceparent)) = (PROPAGATION.get(), traceparent) {
        propagation.continue_from(span, traceparent);
    }
}

/// Links `span` to every context in `traceparents` (no-op with tracing off).
pub(crate) fn link_all<'a>(span: &tracing::Span, traceparents: impl Iterator<Item = &'a str>) {
    if let Some(propagation) = PROPAGATION.get() {
        for traceparent in traceparents {
            propagation.link(span, traceparent);
        }
    }
}

/// Whether a propagation is installed (tracing on).
pub fn enabled() -> bool {
    PROPAGATION.get().is_some()
}
