//! Trace export with OpenTelemetry over OTLP/HTTP, and the W3C trace context that ties a
//! request, the jobs it staged and the webhooks they sent into one trace.
//!
//! - [`Pipeline::start`] builds the exporter, a batch span processor (its own thread: a request
//!   never waits for the collector; a slow collector costs dropped spans, not latency) and the
//!   tracer the `tracing` layer writes to.
//! - [`Propagation`] is what the queue engine calls ([`crate::queue::trace`]): the traceparent of
//!   the current span when a job is staged, and the job's run continued from it in the worker.
//! - [`ExportClient`] sends the export requests with the reqwest the workers already use, on a
//!   one-thread runtime of its own, since the batch processor's thread has none.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use opentelemetry::{
    Context, KeyValue,
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ParentRoot, TraceConfig, TraceSampler};

/// A running export pipeline: the provider (flushed and stopped by [`Pipeline::shutdown`]) and
/// the tracer the `tracing` layer records into.
pub(super) struct Pipeline {
    pub provider: SdkTracerProvider,
    pub tracer: SdkTracer,
}

impl Pipeline {
    /// Starts exporting to `config.endpoint`; `None` when tracing is off.
    pub fn start(config: &TraceConfig, default_service: &str) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(None);
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient::new(config)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build()?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(config.batch_delay)
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .build();
        let resource = Resource::builder()
            .with_service_name(
                config
                    .service_name
                    .clone()
                    .unwrap_or_else(|| default_service.to_owned()),
            )
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batches)
                    .build(),
            )
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("orderly");
        Ok(Some(Self { provider, tracer }))
    }
}

fn sampler(sampler: TraceSampler) -> Sampler {
    match sampler {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBased(root) => Sampler::ParentBased(Box::new(match root {
            ParentRoot::AlwaysOn => Sampler::AlwaysOn,
            ParentRoot::AlwaysOff => Sampler::AlwaysOff,
            ParentRoot::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        })),
    }
}

/// The W3C Trace Context propagation the queue engine calls (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Propagation {
    propagator: TraceContextPropagator,
}

impl Propagation {
    /// The context a `traceparent` (and optional `tracestate`) header describes; `None` when it
    /// is malformed (the spec says to ignore it then and start a new trace).
    pub fn extract(&self, traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
        let mut carrier = HashMap::with_capacity(2);
        carrier.insert("traceparent".to_owned(), traceparent.to_owned());
        if let Some(state) = tracestate {
            carrier.insert("tracestate".to_owned(), state.to_owned());
        }
        let cx = self.propagator.extract(&carrier);
        cx.span().span_context().is_valid().then_some(cx)
    }

    /// The `traceparent` of `span`, when it is part of a trace.
    pub fn traceparent_of(&self, span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::with_capacity(2);
        self.propagator.inject_context(&cx, &mut carrier);
        carrier.remove("traceparent")
    }
}

impl crate::queue::trace::TracePropagation for Propagation {
    fn current(&self) -> Option<String> {
        self.traceparent_of(&tracing::Span::current())
    }

    fn continue_from(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(cx) = self.extract(traceparent, None) {
            // Fails only for a span no layer records (filtered out): nothing to continue then.
            let _ = span.set_parent(cx);
        }
    }

    fn link(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(cx) = self.extract(traceparent, None) {
            span.add_link(cx.span().span_context().clone());
        }
    }
}

/// Sends OTLP export requests (see the module docs). Says once when exports start failing and
/// once when they work again, instead of a line per batch while a collector is away.
#[derive(Debug)]
pub(super) struct ExportClient {
    client: reqwest::Client,
    runtime: BackgroundRuntime,
    failing: Arc<AtomicBool>,
}

impl ExportClient {
    fn new(config: &TraceConfig) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(config.timeout).build()?,
            runtime: BackgroundRuntime(Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-export")
                    .enable_all()
                    .build()?,
            )),
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    fn note(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("trace export works again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "trace export failed; spans are dropped until the collector answers");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let sending = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let Some(runtime) = &self.runtime.0 else {
            return Err("the export runtime has stopped".into());
        };
        let outcome = runtime
            .spawn(async move {
                let response = sending.send().await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await;
        let (status, headers, body) = match outcome {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                self.note(Err(error.to_string()));
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        self.note(if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        });
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The export client's runtime, stopped without waiting when dropped: the pipeline may be
/// dropped inside another runtime, where a blocking stop would panic.
#[derive(Debug)]
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
