//! The `http` medium: components' `wasi:http/incoming-handler` on a TCP
//! socket, routed Spin-style, over HTTP/1.1 and HTTP/2 (h2c, or either over
//! TLS).
//!
//! This is where an HTTP request enters Membrane. Every http binding of one
//! address is one listener with one route table ([`HttpMedium::serve`]):
//! each request goes to the binding whose `route` matches its path best
//! (exact, else the longest `/...` prefix) among those whose `host` (if
//! any) is the request's. The guest sees the headers Spin sets
//! (`spin-full-url`, `spin-path-info`, ...; a client's own are dropped
//! first), so a Spin component runs unmodified. A route's component runs
//! here ([`Runtime::handle_http`]) when this host has it, else on a host of
//! the lattice that does ([`super::forward`]), under a `binding` span that
//! continues the request's `traceparent`. A failed call becomes a JSON error
//! response whose status follows the fault: 500 for a trap or memory
//! exhaustion, 504 for a deadline, 503 at capacity or when no host runs the
//! component; no matching route is a 404.

use super::forward::Forwarder;
use super::medium::{BindContext, Medium, Service, binding_span, fault_reply, inbound, socket_addr};
use super::serve::{self, Connection, HttpLimits, serve_http};
use super::tls::{self, TlsFiles};
use crate::manifest::{Manifest, RoutePattern};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::trace::{self, TRACEPARENT};
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// `medium = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBinding {
    /// Socket address to listen on; port 0 picks a free port (printed at
    /// start). Several http bindings may share one: one listener, routed by
    /// `route` and `host`.
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// The component whose `wasi:http/incoming-handler` serves requests.
    pub component: String,
    /// The paths it serves, Spin-style: `/a/b` exactly, `/a/...` for `/a`
    /// and everything under it. Default `/...` (every path).
    pub route: Option<String>,
    /// Serve only requests for this host name (the `Host` header or the
    /// HTTP/2 authority, without the port; case-insensitive). Default: any.
    pub host: Option<String>,
    /// Serve HTTPS with this certificate and key. Bindings that share an
    /// address must agree.
    pub tls: Option<TlsFiles>,
    /// Connections served at once; more wait in the kernel's backlog.
    /// Bindings that share an address use the first one's limits.
    #[serde(default = "serve::default_max_connections")]
    pub max_connections: u32,
    /// How long a client may take to send a request's headers (and an
    /// http-rpc body), and an idle keep-alive connection may wait for its
    /// next request, before it is closed.
    #[serde(default = "serve::default_header_timeout_ms")]
    pub header_timeout_ms: u64,
}

impl HttpBinding {
    /// Its connection limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
        }
    }

    /// Its route as written, `/...` when it sets none.
    pub fn route_text(&self) -> &str {
        self.route.as_deref().unwrap_or("/...")
    }

    /// Its parsed route; the error says what is wrong with it.
    pub fn route_pattern(&self) -> Result<RoutePattern, String> {
        RoutePattern::parse(self.route_text())
    }

    /// Its host name to match, lower-case.
    pub fn host_name(&self) -> Option<String> {
        self.host.as_ref().map(|h| h.to_ascii_lowercase())
    }
}
use tracing::Instrument as _;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The headers Spin sets on every request it routes (Spin 2 and later: the
/// base path is always `/`). A client's own are removed first.
const SPIN_HEADERS: [&str; 6] = [
    "spin-full-url",
    "spin-path-info",
    "spin-matched-route",
    "spin-raw-component-route",
    "spin-component-route",
    "spin-base-path",
];
/// Spin's header for the client's address (from the connection).
const SPIN_CLIENT_ADDR: &str = "spin-client-addr";
/// Spin's headers for named path segments; never set here, always removed.
const SPIN_PATH_MATCH: &str = "spin-path-match-";

/// The http bindings of one address: one listener, one route table.
pub struct HttpMedium {
    listener: TcpListener,
    local: SocketAddr,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    routes: Arc<Routes>,
}

/// One binding's route.
struct Route {
    pattern: RoutePattern,
    /// The route as written (`spin-matched-route`).
    raw: String,
    /// The host name it is limited to, lower-case.
    host: Option<String>,
    component: Arc<str>,
    /// The component's own deadline, for calls forwarded to another host.
    timeout: Duration,
    calls: Calls,
}

/// Every route of a listener, and where its calls go.
struct Routes {
    routes: Vec<Route>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    /// Calls to components that run on other hosts.
    forward: Option<Forwarder>,
}

/// The route for `path` on `host`, and the rest of the path after its
/// base: an exact route, else the longest prefix; on a tie, the route
/// limited to the host.
fn find<'r, 'p>(routes: &'r [Route], host: Option<&str>, path: &'p str) -> Option<(&'r Route, &'p str)> {
    routes
        .iter()
        .filter(|r| r.host.is_none() || r.host.as_deref() == host)
        .filter_map(|r| r.pattern.matches(path).map(|rest| (r, rest)))
        .max_by_key(|(r, _)| (r.pattern.specificity(), r.host.is_some()))
}

impl HttpMedium {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Medium for HttpMedium {
    const NAME: &'static str = "http";
    type Spec = HttpBinding;

    /// A listener serves routes to components placed elsewhere too.
    const ROUTES_ELSEWHERE: bool = true;

    fn resolve(spec: &mut HttpBinding, base: &Path) {
        if let Some(tls) = &mut spec.tls {
            for path in [&mut tls.cert, &mut tls.key] {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }

    /// Each binding's limits, route and host, and those of one address
    /// together: no route twice (for one host name), one TLS for all.
    fn problems(bindings: &[(usize, &HttpBinding)], manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        let mut routes: BTreeMap<(SocketAddr, Option<String>, RoutePattern), usize> = BTreeMap::new();
        let mut tls: BTreeMap<SocketAddr, (usize, Option<&TlsFiles>)> = BTreeMap::new();
        for &(i, http) in bindings {
            problems.extend(http.limits().problems(i));
            let address = http.address;
            match http.route_pattern() {
                Err(why) => problems.push(format!("bindings[{i}].route: {why}")),
                Ok(pattern) => {
                    let key = (address, http.host_name(), pattern);
                    if let Some(&first) = routes.get(&key) {
                        problems.push(format!(
                            "bindings[{i}].route: `{}`{} on {address} is already routed by bindings[{first}] (component `{}`)",
                            http.route_text(),
                            http.host.as_ref().map(|h| format!(" for host {h}")).unwrap_or_default(),
                            manifest.bindings[first].component()
                        ));
                    } else {
                        routes.insert(key, i);
                    }
                }
            }
            if let Some(host) = &http.host
                && (host.is_empty() || host.contains(['/', ':', ' ']) || !host.is_ascii())
            {
                problems.push(format!(
                    "bindings[{i}].host: {host:?} must be a host name without scheme, port or path"
                ));
            }
            let (first, first_tls) = *tls.entry(address).or_insert((i, http.tls.as_ref()));
            if first_tls != http.tls.as_ref() {
                problems.push(format!(
                    "bindings[{i}].tls: bindings sharing {address} must agree on `tls`, and bindings[{first}] {}",
                    match first_tls {
                        Some(t) => format!("serves it with {}", t.cert.display()),
                        None => "serves it without TLS".to_string(),
                    }
                ));
            }
        }
        problems
    }

    fn address(spec: &HttpBinding) -> Option<SocketAddr> {
        Some(spec.address)
    }

    fn files(spec: &HttpBinding) -> Vec<(&'static str, PathBuf)> {
        spec.tls
            .iter()
            .flat_map(|t| [("tls.cert", t.cert.clone()), ("tls.key", t.key.clone())])
            .collect()
    }

    fn shares(spec: &HttpBinding) -> Option<String> {
        Some(format!("http {}", spec.address))
    }

    fn check(index: usize, spec: &HttpBinding, new: &Loaded, _old: Option<&Loaded>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(files) = &spec.tls
            && let Err(problem) = tls::server_config(files)
        {
            problems.push(format!("bindings[{index}].tls.{problem}"));
        }
        if new.exports_both_http() {
            problems.push(format!(
                "bindings[{index}]: component `{}` exports both `wasi:http/incoming-handler@0.2.x` and `wasi:http/handler@0.3.x`; medium `http` serves a component that exports one of them",
                spec.component
            ));
            return problems;
        }
        if new.is_proxy() {
            return problems;
        }
        let exports: Vec<String> = new
            .component
            .component_type()
            .exports(new.component.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let candidate = exports.iter().find(|e| e.starts_with("wasi:http/handler@0.3.0-"));
        let hint = match candidate {
            Some(rc) => format!(
                "; `{rc}` is a WASI 0.3 release candidate, and this host serves 0.3.0 final: rebuild it with spin-sdk 7 or wasip3 0.7 or later"
            ),
            None => String::new(),
        };
        problems.push(format!(
            "bindings[{index}]: medium `http` needs component `{}` to export `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`; it exports: {}{hint}",
            spec.component,
            exports.join(", ")
        ));
        problems
    }

    async fn bind(bindings: &[(usize, &HttpBinding)], cx: &BindContext<'_>) -> anyhow::Result<HttpMedium> {
        let &(first, spec) = bindings.first().context("no http binding to serve")?;
        let mut routes = Vec::new();
        for &(i, spec) in bindings {
            let pattern = spec
                .route_pattern()
                .map_err(|why| anyhow::anyhow!("bindings[{i}].route: {why}"))?;
            let timeout = cx
                .manifest
                .components
                .get(&spec.component)
                .map_or(crate::manifest::DEFAULT_TIMEOUT_MS, |c| c.limits.timeout_ms);
            routes.push(Route {
                pattern,
                raw: spec.route_text().to_string(),
                host: spec.host_name(),
                component: Arc::from(spec.component.as_str()),
                timeout: Duration::from_millis(timeout),
                calls: Calls::new(cx.app, &spec.component, "http"),
            });
        }
        let tls = match &spec.tls {
            Some(files) => Some(TlsAcceptor::from(Arc::new(
                tls::server_config(files).map_err(|e| anyhow::anyhow!("bindings[{first}].tls.{e}"))?,
            ))),
            None => None,
        };
        let listener = TcpListener::bind(spec.address)
            .await
            .with_context(|| format!("bindings[{first}]: cannot listen on {}", spec.address))?;
        Ok(HttpMedium {
            local: listener.local_addr()?,
            listener,
            limits: spec.limits(),
            tls,
            routes: Arc::new(Routes {
                routes,
                app: Arc::from(cx.app),
                runtime: cx.runtime.clone(),
                forward: cx.lattice.map(|l| Forwarder::new(l.clone(), cx.app)),
            }),
        })
    }
}

impl Service for HttpMedium {
    fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let routes: Vec<String> = match self.routes.routes.as_slice() {
            [only] if only.raw == "/..." && only.host.is_none() => vec![only.component.to_string()],
            routes => routes
                .iter()
                .map(|r| match &r.host {
                    Some(host) => format!("{} {} (host {host})", r.component, r.raw),
                    None => format!("{} {}", r.component, r.raw),
                })
                .collect(),
        };
        format!("{scheme}://{} -> {}", self.local, routes.join(", "))
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        let routes = self.routes;
        Box::pin(serve_http(
            self.listener,
            self.limits,
            self.tls,
            shutdown,
            move |request| {
                let routes = routes.clone();
                async move { respond(&routes, request).await }
            },
        ))
    }
}

async fn respond(
    routes: &Routes,
    mut request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let connection = request.extensions_mut().remove::<Connection>();
    let tls = connection.as_ref().is_some_and(|c| c.tls);
    strip_spin_headers(request.headers_mut());
    let authority = authority(&request);
    let host = authority.as_deref().map(host_name);
    let path = request.uri().path().to_string();
    let Some((route, rest)) = find(&routes.routes, host.as_deref(), &path) else {
        tracing::debug!("http: no route for {} {path} (host {host:?})", request.method());
        return json_response(
            404,
            &serde_json::json!({
                "error": format!("no route matches {} {path}", request.method()),
                "kind": "not-found",
            }),
        );
    };
    let rest = rest.to_string();
    let full_url = format!(
        "{}://{}{}",
        if tls { "https" } else { "http" },
        authority.as_deref().unwrap_or("localhost"),
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let values = [
        full_url.as_str(),
        &rest,
        &route.raw,
        &route.raw,
        route.pattern.base(),
        "/",
    ];
    let headers = request.headers_mut();
    for (name, value) in SPIN_HEADERS.iter().zip(values) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Some(client) = connection.and_then(|c| c.client) {
        headers.insert(HeaderName::from_static(SPIN_CLIENT_ADDR), client);
    }
    call(routes, route, request, tls).await
}

/// Calls `route`'s component with `request`, here or on another host.
async fn call(
    routes: &Routes,
    route: &Route,
    request: hyper::Request<hyper::body::Incoming>,
    tls: bool,
) -> hyper::Response<HyperOutgoingBody> {
    let component = &route.component;
    let span = binding_span("http", &routes.app, component, &"wasi:http/incoming-handler");
    trace::set_attributes(&span, || {
        [
            ("http.request.method", request.method().to_string().into()),
            ("url.path", request.uri().path().to_string().into()),
            ("http.route", route.raw.clone().into()),
        ]
    });
    let traceparent = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let cx = inbound(traceparent, &span);
    let started = Instant::now();
    let result = if routes.runtime.get(component).is_some() {
        routes
            .runtime
            .handle_http(component, request, tls, cx)
            .instrument(span.clone())
            .await
    } else if let Some(forward) = &routes.forward {
        forward
            .call(component, request, tls, cx.until(started + route.timeout))
            .instrument(span.clone())
            .await
    } else {
        Err(Fault::new(component.clone(), FaultKind::NotRunning))
    };
    route
        .calls
        .record(started, result.as_ref().err().map(|f| f.kind.name()));
    let response = match result {
        Ok(response) => response,
        Err(fault) => {
            tracing::warn!("{fault}");
            trace::set_failed(&span, &fault);
            fault_response(&fault)
        }
    };
    trace::set_attributes(&span, || {
        [(
            "http.response.status_code",
            i64::from(response.status().as_u16()).into(),
        )]
    });
    response
}

/// Removes the Spin headers a client sent: only the host sets them.
fn strip_spin_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            SPIN_HEADERS.contains(&name) || name == SPIN_CLIENT_ADDR || name.starts_with(SPIN_PATH_MATCH)
        })
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// The request's authority: the URI's (HTTP/2), else its `Host` header.
fn authority<B>(request: &hyper::Request<B>) -> Option<String> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_string()),
        None => request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
    }
}

/// The host name of an authority, without port, lower-case.
fn host_name(authority: &str) -> String {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.to_ascii_lowercase()
}

/// The HTTP form of a fault: a status that follows its kind and a JSON body
/// naming the component and the cause.
pub fn fault_response(fault: &Fault) -> hyper::Response<HyperOutgoingBody> {
    let (status, body) = fault_reply(fault);
    json_response(status, &body)
}

fn json_response(status: u16, body: &serde_json::Value) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(component: &str, pattern: &str, host: Option<&str>) -> Route {
        Route {
            pattern: RoutePattern::parse(pattern).unwrap(),
            raw: pattern.to_string(),
            host: host.map(str::to_string),
            component: Arc::from(component),
            timeout: Duration::from_secs(1),
            calls: Calls::new("test", component, "http"),
        }
    }

    #[test]
    fn the_most_specific_route_wins_and_a_host_breaks_ties() {
        let routes = [
            route("all", "/...", None),
            route("api", "/api/...", None),
            route("v1", "/api/v1/...", None),
            route("exact", "/api/v1", None),
            route("mine", "/api/...", Some("mine.example")),
        ];
        let pick = |host, path| find(&routes, host, path).map(|(r, rest)| (&*r.component, rest));
        assert_eq!(pick(None, "/api/v1"), Some(("exact", "")));
        assert_eq!(pick(None, "/api/v1/x"), Some(("v1", "/x")));
        assert_eq!(pick(None, "/api/v2"), Some(("api", "/v2")));
        assert_eq!(pick(Some("mine.example"), "/api/v2"), Some(("mine", "/v2")));
        assert_eq!(pick(Some("mine.example"), "/api/v1/x"), Some(("v1", "/x")));
        assert_eq!(pick(None, "/apix"), Some(("all", "/apix")));
        assert_eq!(find(&routes[1..], None, "/other").map(|(r, _)| &*r.component), None);
    }

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(host_name("Example.COM:8443"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "::1");
    }

    #[test]
    fn forged_spin_headers_are_dropped_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("spin-path-info", HeaderValue::from_static("/etc/passwd"));
        headers.insert("spin-path-match-id", HeaderValue::from_static("1"));
        headers.insert("spin-custom", HeaderValue::from_static("kept"));
        strip_spin_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("spin-custom"));
    }
}
