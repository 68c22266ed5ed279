//! Spans exported over OTLP (`membrane up --otlp URL`), as a collector
//! receives them: a small OTLP/HTTP receiver in the test decodes the real
//! protobuf (`ExportTraceServiceRequest`) that the hosts post.
//!
//! - One HTTP request through the distributed insurance example (three
//!   hosts) is one trace, under the caller's `traceparent`; every span's
//!   parent is in the trace, and each host's serving span is the child of
//!   the calling host's link span.
//! - On one host, local links have spans too; an unsampled `traceparent`
//!   exports nothing; a malformed one starts a fresh trace; SIGTERM flushes.
//! - A dead collector fails no call and is warned about once.

use crate::support;
use crate::support::nats::NatsServer;
use crate::support::{Host, distributed_manifest, dynamic_links, insurance_manifest};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One span as the collector got it.
#[derive(Debug, Clone)]
struct Received {
    /// `service.name` of its resource.
    service: String,
    /// `service.instance.id` of its resource: the host.
    host: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
    /// The names of its events (log lines during the span).
    events: Vec<String>,
    /// Its status: `None` unset or ok, else the error's description.
    error: Option<String>,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Inbox {
    spans: Mutex<Vec<Received>>,
    arrived: Condvar,
}

/// An OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`.
struct Collector {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let inbox = Arc::new(Inbox::default());
        let serving = inbox.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inbox = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let inbox = inbox.clone();
                        async move { Ok::<_, hyper::Error>(receive(&inbox, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            addr,
            inbox,
            _runtime: runtime,
        }
    }

    /// The base URL to give `--otlp`.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Received> {
        self.inbox.spans.lock().unwrap().clone()
    }

    /// Waits (up to 60 s) until the spans received satisfy `done`; returns them.
    fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut spans = self.inbox.spans.lock().unwrap();
        while !done(&spans) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; received:\n{:#?}",
                *spans
            );
            spans = self.inbox.arrived.wait_timeout(spans, left).unwrap().0;
        }
        spans.clone()
    }
}

async fn receive(inbox: &Inbox, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let respond = |status: u16| {
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response
    };
    if request.method() != hyper::Method::POST || request.uri().path() != "/v1/traces" {
        return respond(404);
    }
    let Ok(body) = request.into_body().collect().await else {
        return respond(400);
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return respond(400);
    };
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    host: resource.get("service.instance.id").cloned().unwrap_or_default(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    attributes: attributes(&span.attributes),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    // Status code 2 is `error`.
                    error: span.status.filter(|s| s.code == 2).map(|s| s.message),
                });
            }
        }
    }
    inbox.spans.lock().unwrap().extend(received);
    inbox.arrived.notify_all();
    respond(200)
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// POSTs the example policy to `/quote` with `traceparent` (if any); the status.
fn quote(addr: SocketAddr, traceparent: Option<&str>) -> u16 {
    let policy = support::example_policy();
    let header = traceparent.map_or(String::new(), |t| format!("traceparent: {t}\r\n"));
    let mut request = format!(
        "POST /quote HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{header}content-length: {}\r\n\r\n",
        policy.len()
    )
    .into_bytes();
    request.extend_from_slice(&policy);
    let reply = String::from_utf8_lossy(&support::raw(addr, &request)).to_string();
    reply
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {reply}"))
}

/// Whether every span's parent is `root_parent` or a span of the set.
fn parents_resolve(spans: &[Received], root_parent: &str) -> bool {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .all(|s| s.parent == root_parent || ids.contains(s.parent.as_str()))
}

fn by_id(spans: &[Received]) -> BTreeMap<&str, &Received> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn one_request_through_three_hosts_is_one_trace_with_parents_across_hosts() {
    let collector = Collector::start();
    let server = NatsServer::start();
    let manifest = distributed_manifest(0);
    let (url, nats) = (collector.url(), server.url());
    let node = |label: &str| {
        Host::start_env(
            &manifest,
            &["--nats", &nats, "--lattice", "traced", "--label", label, "--otlp", &url],
            // Export every 100 ms rather than every 5 s.
            &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        )
    };
    // Callees first, so that `a` being ready means the chain is up.
    let (_c, _b, a) = (node("node=c"), node("node=b"), node("node=a"));
    assert!(a.log().contains("exporting spans over OTLP/HTTP"), "{}", a.log());

    assert_eq!(quote(a.addr(), Some(&format!("00-{TRACE}-{PARENT}-01"))), 200);

    // Done when spans from all three hosts arrived, rpc serving spans on
    // two of them, and every parent is known (link spans may come later
    // than the spans they parent: each host exports on its own).
    let spans = collector.wait_until("the request's spans from three hosts", |spans| {
        let hosts: BTreeSet<&str> = spans.iter().map(|s| s.host.as_str()).collect();
        let served = spans.iter().filter(|s| s.attribute("membrane.medium") == "rpc").count();
        let pricing_called = spans
            .iter()
            .any(|s| s.name.starts_with("call pricing") && s.attribute("component") == "pricing");
        hosts.len() == 3 && served >= 2 && pricing_called && parents_resolve(spans, PARENT)
    });
    let ids = by_id(&spans);
    let summary = spans
        .iter()
        .map(|s| format!("{} {} {} <- {}", s.host, s.name, s.span_id, s.parent))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{} spans:\n{summary}", spans.len());

    // One trace: the one the client sent, and only that request's spans.
    for span in &spans {
        assert_eq!(span.trace_id, TRACE, "{span:#?}");
        assert_eq!(span.service, "membrane", "{span:#?}");
    }
    // Three hosts, named by their resource.
    let hosts: BTreeSet<&str> = spans.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts.len(), 3, "{summary}");
    assert!(hosts.iter().all(|h| h.starts_with("host-")), "{hosts:?}");

    // The root: host a's http binding span, under the client's span.
    let roots: Vec<&Received> = spans.iter().filter(|s| s.parent == PARENT).collect();
    assert_eq!(roots.len(), 1, "{summary}");
    let root = roots[0];
    assert_eq!(root.name, "http gateway");
    assert_eq!(
        (
            root.attribute("membrane.medium"),
            root.attribute("membrane.app"),
            root.attribute("membrane.component"),
            root.attribute("http.response.status_code"),
        ),
        ("http", "insurance", "gateway", "200")
    );
    assert!(parents_resolve(&spans, PARENT), "{summary}");

    // Each host's serving span is the child of the caller's remote link span,
    // on another host, linking to the component it serves.
    let served: Vec<&Received> = spans
        .iter()
        .filter(|s| s.attribute("membrane.medium") == "rpc")
        .collect();
    let mut callee_hosts = BTreeSet::new();
    for serving in &served {
        let link = ids[serving.parent.as_str()];
        assert_eq!(link.attribute("membrane.link.mode"), "remote", "{link:#?}");
        assert_eq!(
            link.attribute("membrane.link.to"),
            serving.attribute("membrane.component")
        );
        assert_ne!(link.host, serving.host, "a remote link crosses hosts");
        callee_hosts.insert((serving.attribute("membrane.component"), serving.host.as_str()));
    }
    let components: BTreeSet<&str> = callee_hosts.iter().map(|(c, _)| *c).collect();
    assert_eq!(components, BTreeSet::from(["pricing", "rater"]), "{summary}");

    // The chain: binding -> call gateway -> link -> rpc rater -> call rater
    // -> link -> rpc pricing -> call pricing, each on its own host.
    let parent_of = |span: &Received| ids[span.parent.as_str()];
    let pricing = spans
        .iter()
        .find(|s| s.name == "call pricing.price" || s.attribute("component") == "pricing")
        .expect("a call of pricing");
    let chain: Vec<&Received> =
        std::iter::successors(Some(pricing), |s| (s.parent != PARENT).then(|| parent_of(s))).collect();
    let names: Vec<&str> = chain.iter().rev().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(names[0], "http gateway");
    assert_eq!(names[1], "call gateway.handle");
    assert!(names[2].starts_with("link rater."), "{names:?}");
    assert!(names[3].starts_with("rpc rater"), "{names:?}");
    assert!(names[4].starts_with("call rater."), "{names:?}");
    assert!(names[5].starts_with("link pricing."), "{names:?}");
    assert!(names[6].starts_with("rpc pricing"), "{names:?}");
    assert!(names[7].starts_with("call pricing."), "{names:?}");
    let chain_hosts: Vec<&str> = chain.iter().rev().map(|s| s.host.as_str()).collect();
    assert_eq!(chain_hosts[0..3], [chain_hosts[0]; 3]);
    assert_eq!(chain_hosts[3..6], [chain_hosts[3]; 3]);
    assert_eq!(chain_hosts[6..8], [chain_hosts[6]; 2]);
}

#[test]
fn on_one_host_local_links_have_spans_sampling_is_kept_and_sigterm_flushes() {
    let collector = Collector::start();
    // The default export period (5 s): what arrives before the host has
    // exited was flushed by its shutdown.
    let host = Host::start_with(&dynamic_links(&insurance_manifest()), &["--otlp", &collector.url()]);
    let unsampled = "11111111111111111111111111111111";
    assert_eq!(quote(host.addr(), Some(&format!("00-{unsampled}-{PARENT}-00"))), 200);
    assert_eq!(quote(host.addr(), Some("00-nonsense-that-is-no-traceparent")), 200);
    assert_eq!(quote(host.addr(), Some(&format!("00-{TRACE}-{PARENT}-01"))), 200);
    assert!(host.signal("TERM").success());

    let spans = collector.spans();
    let summary = spans
        .iter()
        .map(|s| format!("{} {} {} <- {}", s.trace_id, s.name, s.span_id, s.parent))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{} spans:\n{summary}", spans.len());
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled),
        "an unsampled trace was exported:\n{summary}"
    );

    let traced: Vec<Received> = spans.iter().filter(|s| s.trace_id == TRACE).cloned().collect();
    assert!(parents_resolve(&traced, PARENT), "{summary}");
    let ids = by_id(&traced);
    let pricing = traced
        .iter()
        .find(|s| s.name.starts_with("call pricing."))
        .unwrap_or_else(|| panic!("no call of pricing:\n{summary}"));
    let chain: Vec<&str> = std::iter::successors(Some(pricing), |s| ids.get(s.parent.as_str()).copied())
        .map(|s| s.name.as_str())
        .collect();
    let chain: Vec<&str> = chain.into_iter().rev().collect();
    assert_eq!(chain.len(), 6, "{chain:?}");
    assert_eq!(chain[..2], ["http gateway", "call gateway.handle"]);
    assert!(
        chain[2].starts_with("link rater.") && chain[3].starts_with("call rater."),
        "{chain:?}"
    );
    assert!(
        chain[4].starts_with("link pricing.") && chain[5].starts_with("call pricing."),
        "{chain:?}"
    );
    // The rater's log line is an event of its call span.
    let rater = traced
        .iter()
        .find(|s| s.name == "call rater.rate")
        .expect("call rater.rate");
    assert!(
        rater.events.iter().any(|e| e.contains("rated at 936.92 EUR")),
        "{rater:#?}"
    );
    for link in traced.iter().filter(|s| s.name.starts_with("link ")) {
        assert_eq!(link.attribute("membrane.link.mode"), "local", "{link:#?}");
        let (from, to) = (link.attribute("membrane.link.from"), link.attribute("membrane.link.to"));
        assert!(
            matches!((from, to), ("gateway", "rater") | ("rater", "pricing")),
            "{link:#?}"
        );
    }

    // The malformed header started a fresh trace: a root with no parent.
    let fresh: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id != TRACE && s.name == "http gateway")
        .collect();
    assert_eq!(fresh.len(), 1, "{summary}");
    assert_eq!(fresh[0].parent, "", "{summary}");
    assert!(
        spans.iter().filter(|s| s.trace_id == fresh[0].trace_id).count() >= 6,
        "{summary}"
    );
}

#[test]
fn a_failed_call_marks_its_spans_failed() {
    let collector = Collector::start();
    // pricing runs out of memory when rater first calls it.
    let manifest = support::starve_pricing(&insurance_manifest());
    let host = Host::start_with(&manifest, &["--otlp", &collector.url()]);
    assert_eq!(quote(host.addr(), Some(&format!("00-{TRACE}-{PARENT}-01"))), 500);
    assert!(host.signal("TERM").success());
    let spans = collector.spans();
    let failed = |name: &str| {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"));
        span.error
            .clone()
            .unwrap_or_else(|| panic!("{name} is not failed: {span:#?}"))
    };
    assert!(failed("call pricing.table").contains("memory"), "{spans:#?}");
    assert!(failed("link pricing.table").contains("pricing"), "{spans:#?}");
    assert!(failed("http gateway").contains("pricing"), "{spans:#?}");
}

#[test]
fn a_dead_collector_fails_no_call_and_is_warned_about_once() {
    // A port that nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let host = Host::start_env(
        &insurance_manifest(),
        &["--otlp", &format!("http://{dead}")],
        // A queue of 4 spans: 20 calls of 6 spans overflow it.
        &[("OTEL_BSP_SCHEDULE_DELAY", "50"), ("OTEL_BSP_MAX_QUEUE_SIZE", "4")],
    );
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(quote(host.addr(), None), 200);
    }
    host.wait_for_log("otlp: cannot export");
    for _ in 0..10 {
        assert_eq!(quote(host.addr(), None), 200);
    }
    eprintln!("20 calls with a dead collector in {:?}", started.elapsed());
    // The later calls' spans fail to export too (at the latest when the
    // shutdown flushes them), without another warning.
    let stopping = Instant::now();
    let (status, log) = host.stop("TERM");
    eprintln!("stopped in {:?} with a dead collector", stopping.elapsed());
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("otlp: cannot export").count(), 1, "{log}");
    // Spans that found the queue full were dropped, with one warning.
    assert_eq!(log.matches("dropped a Span due to queue full").count(), 1, "{log}");
}

/// A WASI 0.3 handler's spans are a WASI 0.2 handler's: the same names (up
/// to the component's), parents, attribute keys, and a failed call's span
/// failed with its kind.
#[test]
fn a_0_3_handler_has_the_spans_of_a_0_2_one() {
    let collector = Collector::start();
    let manifest = r#"
[app]
name = "versions"

[components.p2]
source = "{wasm:spin_hello}"

[components.p3]
source = "{wasm:hello_p3}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p2"
route = "/p2/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p3"
route = "/p3/..."
"#;
    let host = Host::start_with(manifest, &["--otlp", &collector.url()]);
    let get = |path: &str, trace: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntraceparent: 00-{trace}-{PARENT}-01\r\n\r\n"
        );
        let reply = String::from_utf8_lossy(&support::raw(host.addr(), request.as_bytes())).to_string();
        reply.get(9..12).unwrap_or_default().to_string()
    };
    let (t2, t3, trap) = (
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
        "44444444444444444444444444444444",
    );
    assert_eq!(get("/p2/hello/world", t2), "200");
    assert_eq!(get("/p3/hello", t3), "200");
    assert_eq!(get("/p3/trap", trap), "500");
    assert!(host.signal("TERM").success());
    let spans = collector.spans();

    // Each trace's spans: name (the component's name made neutral), the
    // parent's name or the caller's span, and the attribute keys.
    let shape = |trace: &str, component: &str| {
        let traced: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace).collect();
        let names: BTreeMap<&str, &str> = traced.iter().map(|s| (s.span_id.as_str(), s.name.as_str())).collect();
        let mut shape: Vec<(String, String, Vec<String>)> = traced
            .iter()
            .map(|s| {
                let parent = if s.parent == PARENT {
                    "caller".to_string()
                } else {
                    names
                        .get(s.parent.as_str())
                        .copied()
                        .unwrap_or("?")
                        .replace(component, "C")
                };
                let keys = s.attributes.keys().cloned().collect();
                (s.name.replace(component, "C"), parent, keys)
            })
            .collect();
        shape.sort();
        shape
    };
    let p2 = shape(t2, "p2");
    assert!(!p2.is_empty(), "no spans for the 0.2 call: {spans:#?}");
    assert!(
        p2.iter()
            .any(|(name, parent, _)| name == "http C" && parent == "caller"),
        "{p2:#?}"
    );
    assert_eq!(shape(t3, "p3"), p2, "0.3 and 0.2 spans differ");

    let failed: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == trap && s.error.is_some())
        .collect();
    assert!(
        failed
            .iter()
            .any(|s| s.name == "http p3" && s.error.as_deref().unwrap_or("").contains("trap")),
        "{failed:#?}"
    );
}
