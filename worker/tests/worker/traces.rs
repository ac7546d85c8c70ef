//! Traces across processes: one order placed over HTTP with a client's `traceparent` becomes one
//! OpenTelemetry trace covering the api's request, the outbox and both jobs in a real
//! `orderly-worker` process, with the webhook receiver handed the delivery's context. The spans
//! are what a real OTLP/HTTP receiver gets (the protocol's own protobuf types decode them).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};
use orderly::{
    config::Config,
    testing::{database_url, delete_prefix, eventually, redis_url, unique_prefix},
};
use prost::Message;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::helpers::{ServedApi, WorkerProcess, shop, vars};

/// The client's trace: the order request is a child of its span.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct SeenSpan {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    links: Vec<(String, String)>,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP traces receiver on 127.0.0.1:0 that keeps every span it is sent.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<SeenSpan>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route("/v1/traces", post(receive_traces))
            .with_state(spans.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("collector runs");
        });
        Self {
            addr,
            spans,
            server,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<SeenSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

async fn receive_traces(
    State(spans): State<Arc<Mutex<Vec<SeenSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Vec<u8> {
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "application/x-protobuf",
        "OTLP/HTTP with protobuf"
    );
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
    let mut seen = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                seen.push(SeenSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    Vec::new()
}

/// A webhook receiver on 127.0.0.1:0 keeping the `traceparent` of each delivery.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hooks",
            post(
                |State(seen): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap| async move {
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push(traceparent);
                    "ok"
                },
            ),
        )
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn find<'a>(spans: &'a [SeenSpan], service: &str, name: &str) -> Vec<&'a SeenSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name && s.trace_id == CLIENT_TRACE)
        .collect()
}

/// Whether `span` descends from the span `ancestor` through spans of the same trace.
fn descends_from(spans: &[SeenSpan], span: &SeenSpan, ancestor: &str) -> bool {
    let by_id: HashMap<&str, &SeenSpan> = spans
        .iter()
        .filter(|s| s.trace_id == span.trace_id)
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let mut parent = span.parent_span_id.as_str();
    while !parent.is_empty() {
        if parent == ancestor {
            return true;
        }
        match by_id.get(parent) {
            Some(next) => parent = next.parent_span_id.as_str(),
            None => return false,
        }
    }
    false
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn one_order_is_one_trace_across_the_api_the_outbox_and_a_worker_process(pool: PgPool) {
    let collector = Collector::start().await;
    let (hook_url, deliveries) = webhook_receiver().await;
    let prefix = unique_prefix("trace");
    let settings = [
        ("DATABASE_URL", database_url(&pool)),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        // Spans leave every 100 ms instead of every 5 s, so the test does not wait.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("WEBHOOK_ALLOWLIST", "127.0.0.0/8".to_owned()),
    ];
    let config = Config::from_map(&vars(&prefix, &settings)).expect("valid config");

    // This process is the api; its telemetry is installed before anything logs.
    let mut telemetry = orderly::telemetry::init(&config.log, &config.traces, "orderly-api");
    assert!(
        format!("{telemetry:?}").contains("exporting_traces: true"),
        "this test needs a process of its own (cargo nextest runs each test in one)"
    );
    let services = orderly::Services::build_with_pool(config, pool.clone()).expect("services");
    let fixture = shop(&services, 100).await;
    let token = fixture.hook_orders_and_sign_in(&services, &hook_url).await;

    let served = ServedApi::start(&services).await;
    let api = served.url.clone();

    // A real worker process, exporting to the same receiver under its own service name.
    let mut worker = WorkerProcess::start(&prefix, &[], &settings);
    worker.wait_ready().await;

    let client = reqwest::Client::new();
    let placed = client
        .post(format!("{api}/api/v1/orders"))
        .bearer_auth(&token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&serde_json::json!({"items": [{"product_id": fixture.product.id, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201, "{}", placed.text().await.unwrap());
    // A malformed traceparent is ignored (the spec's rule): that request starts its own trace.
    let unrelated = client
        .get(format!("{api}/api/v1/products"))
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await
        .unwrap();
    assert_eq!(unrelated.status(), 200);

    let complete = || {
        let spans = collector.spans();
        // The job's span ends after its request's, and may reach the receiver a batch later.
        !find(&spans, "orderly-worker", "email.order_confirmation").is_empty()
            && !find(&spans, "orderly-worker", "POST webhook").is_empty()
            && !find(&spans, "orderly-worker", "webhook.deliver").is_empty()
            && spans
                .iter()
                .any(|s| s.service == "orderly-api" && s.name == "GET /api/v1/products")
            && spans
                .iter()
                .any(|s| s.name == "outbox.push" || s.name == "outbox.relay")
    };
    assert!(
        eventually(Duration::from_secs(60), || async { complete() }).await,
        "every span arrives at the receiver: {:#?}",
        collector
            .spans()
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<Vec<_>>()
    );
    let spans = collector.spans();

    // The api's request span continues the client's trace, as a server span.
    let requests = find(&spans, "orderly-api", "POST /api/v1/orders");
    assert_eq!(requests.len(), 1, "one request span: {requests:#?}");
    let request = requests[0];
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(
        request
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("201")
    );
    // The business rule and its SQL are inside it.
    let place = find(&spans, "orderly-api", "place");
    assert_eq!(place.len(), 1, "the order service's span");
    assert!(descends_from(&spans, place[0], &request.span_id));

    // Two jobs staged in the order's transaction, each a producer span under the request.
    let staged = find(&spans, "orderly-api", "outbox.stage");
    assert_eq!(
        staged.len(),
        2,
        "an email and the webhook fan-out staged: {staged:#?}"
    );
    for stage in &staged {
        assert_eq!(stage.kind, SpanKind::Producer as i32);
        assert!(descends_from(&spans, stage, &request.span_id));
    }
    let staged_ids: HashSet<&str> = staged.iter().map(|s| s.span_id.as_str()).collect();

    // The push to Redis carries many requests' jobs: a span of its own, linked to each.
    let pushed_links: HashSet<&str> = spans
        .iter()
        .filter(|s| s.name == "outbox.push" || s.name == "outbox.relay")
        .flat_map(|s| s.links.iter())
        .filter(|(trace, _)| trace == CLIENT_TRACE)
        .map(|(_, span)| span.as_str())
        .collect();
    assert_eq!(
        pushed_links, staged_ids,
        "the push links to both staged jobs"
    );

    // Both jobs ran in the worker process as consumer spans whose parent is their staging (the
    // delivery job was pushed in place of the fan-out staged for it, with its trace context).
    let email = find(&spans, "orderly-worker", "email.order_confirmation");
    let webhook = find(&spans, "orderly-worker", "webhook.deliver");
    assert_eq!(email.len(), 1, "{email:#?}");
    assert_eq!(webhook.len(), 1, "{webhook:#?}");
    for job in [email[0], webhook[0]] {
        assert_eq!(job.kind, SpanKind::Consumer as i32);
        assert!(
            staged_ids.contains(job.parent_span_id.as_str()),
            "{} runs under its outbox row's staging",
            job.name
        );
    }
    assert_ne!(email[0].parent_span_id, webhook[0].parent_span_id);

    // The delivery is a client span of the webhook job, and the receiver got its context.
    let send = find(&spans, "orderly-worker", "POST webhook");
    assert_eq!(send.len(), 1);
    assert!(
        descends_from(&spans, send[0], &webhook[0].span_id),
        "the HTTP call is inside the delivery job's run"
    );
    assert_eq!(send[0].kind, SpanKind::Client as i32);
    assert_eq!(
        deliveries.lock().unwrap().clone(),
        vec![format!("00-{CLIENT_TRACE}-{}-01", send[0].span_id)],
        "the receiver can continue the trace"
    );

    // The request with a malformed traceparent started a trace of its own.
    let products = spans
        .iter()
        .find(|s| s.service == "orderly-api" && s.name == "GET /api/v1/products")
        .unwrap();
    assert!(products.parent_span_id.is_empty());
    assert_ne!(products.trace_id, CLIENT_TRACE);

    worker.terminate();
    assert!(worker.wait_exit().await.success());
    served.stop().await.unwrap();
    telemetry.shutdown();
    delete_prefix(&redis_url(), &prefix);
}
