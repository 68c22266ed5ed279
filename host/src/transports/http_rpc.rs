//! The `http-rpc` medium: `POST <path>` with a JSON object of parameters calls
//! one exported function; the reply is the JSON of its result.
//!
//! Bindings on the same address share one server and are routed by path.
//! A body that does not fit the function's types is answered 400 with the
//! path of the bad field; a failed call is answered like the `http` medium.
//! An incoming `traceparent` header continues its trace (the call's
//! `binding` span is its child).

use super::medium::{
    BindContext, Medium, Service, binding_span, call_error_reply, check_function, function_ref, inbound, socket_addr,
};
use super::serve::{self, HttpLimits, serve_http};
use crate::manifest::{Manifest, split_export};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::CallError;
use crate::runtime::trace::{self, TRACEPARENT};
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 4 << 20;

/// `medium = "http-rpc"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRpcBinding {
    /// Socket address; several http-rpc bindings may share one.
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// The component.
    pub component: String,
    /// The function: `pkg:ns/iface@version#function`.
    pub export: String,
    /// The route; default `/rpc/<component>/<function>`.
    pub path: Option<String>,
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

impl HttpRpcBinding {
    /// Its connection limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
        }
    }

    /// The route this binding answers on.
    pub fn route(&self) -> String {
        self.path.clone().unwrap_or_else(|| {
            let function = split_export(&self.export).map_or("", |(_, f)| f);
            format!("/rpc/{}/{function}", self.component)
        })
    }
}

/// An http-rpc server: every http-rpc binding on one address.
pub struct HttpRpcMedium {
    listener: TcpListener,
    local: SocketAddr,
    limits: HttpLimits,
    routes: Arc<HashMap<String, Route>>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
}

/// What one path calls, and its metrics.
struct Route {
    target: FunctionRef,
    calls: Calls,
}

impl Medium for HttpRpcMedium {
    const NAME: &'static str = "http-rpc";
    type Spec = HttpRpcBinding;

    /// Each binding's limits and path, and no path twice on one address.
    fn problems(bindings: &[(usize, &HttpRpcBinding)], _manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        let mut paths: BTreeMap<(SocketAddr, String), usize> = BTreeMap::new();
        for &(i, rpc) in bindings {
            problems.extend(rpc.limits().problems(i));
            let route = rpc.route();
            if !route.starts_with('/') {
                problems.push(format!("bindings[{i}].path: must start with `/`"));
            }
            if let Some(first) = paths.insert((rpc.address, route.clone()), i) {
                problems.push(format!(
                    "bindings[{i}].path: {route} on {} is already routed by bindings[{first}]",
                    rpc.address
                ));
            }
        }
        problems
    }

    fn address(spec: &HttpRpcBinding) -> Option<SocketAddr> {
        Some(spec.address)
    }

    fn shares(spec: &HttpRpcBinding) -> Option<String> {
        Some(format!("http-rpc {}", spec.address))
    }

    fn check(index: usize, spec: &HttpRpcBinding, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
        check_function(index, &spec.export, new, old)
    }

    async fn bind(bindings: &[(usize, &HttpRpcBinding)], cx: &BindContext<'_>) -> anyhow::Result<HttpRpcMedium> {
        let mut routes = HashMap::new();
        for &(i, spec) in bindings {
            let target = function_ref(i, &spec.component, &spec.export)?;
            let calls = Calls::new(cx.app, &spec.component, "http-rpc");
            if routes.insert(spec.route(), Route { target, calls }).is_some() {
                anyhow::bail!(
                    "bindings[{i}].path: {} is already routed on {}",
                    spec.route(),
                    spec.address
                );
            }
        }
        let &(first, spec) = bindings.first().context("no http-rpc binding to serve")?;
        let listener = TcpListener::bind(spec.address)
            .await
            .with_context(|| format!("bindings[{first}]: cannot listen on {}", spec.address))?;
        Ok(HttpRpcMedium {
            local: listener.local_addr()?,
            listener,
            limits: spec.limits(),
            routes: Arc::new(routes),
            app: Arc::from(cx.app),
            runtime: cx.runtime.clone(),
        })
    }
}

impl Service for HttpRpcMedium {
    fn describe(&self) -> String {
        let mut routes: Vec<String> = self
            .routes
            .iter()
            .map(|(path, r)| format!("{path} -> {}:{}", r.target.component, r.target.function))
            .collect();
        routes.sort();
        format!("http-rpc http://{} [{}]", self.local, routes.join(", "))
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        let (runtime, routes, app) = (self.runtime, self.routes, self.app);
        let body_timeout = Duration::from_millis(self.limits.header_timeout_ms);
        Box::pin(serve_http(self.listener, self.limits, None, shutdown, move |request| {
            let (runtime, routes, app) = (runtime.clone(), routes.clone(), app.clone());
            async move { respond(&runtime, &routes, &app, body_timeout, request).await }
        }))
    }
}

async fn respond(
    runtime: &Runtime,
    routes: &HashMap<String, Route>,
    app: &str,
    body_timeout: Duration,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let Some(Route { target, calls }) = routes.get(request.uri().path()) else {
        let mut known: Vec<_> = routes.keys().map(String::as_str).collect();
        known.sort();
        let message = format!("no route {}; routes: {}", request.uri().path(), known.join(", "));
        return json(404, &serde_json::json!({ "error": message, "kind": "not-found" }));
    };
    if request.method() != hyper::Method::POST {
        return json(
            405,
            &serde_json::json!({ "error": "use POST with a JSON object of parameters", "kind": "method" }),
        );
    }
    let span = binding_span(
        "http-rpc",
        app,
        &target.component,
        &format_args!("{}#{}", target.interface, target.function),
    );
    trace::set_attributes(&span, || [("url.path", request.uri().path().to_string().into())]);
    let traceparent = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let cx = inbound(traceparent, &span);
    let body = match tokio::time::timeout(body_timeout, Limited::new(request.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Err(_) => {
            let message = format!("the body did not arrive within {} ms", body_timeout.as_millis());
            return json(408, &serde_json::json!({ "error": message, "kind": "bad-request" }));
        }
        Ok(Err(e)) => {
            return json(
                400,
                &serde_json::json!({ "error": format!("reading body: {e}"), "kind": "bad-request" }),
            );
        }
    };
    let started = std::time::Instant::now();
    let result = runtime.call_json(target, &body, cx).instrument(span.clone()).await;
    calls.record(started, result.as_ref().err().map(CallError::kind_name));
    match result {
        Ok(value) => json(200, &value),
        Err(error) => {
            tracing::debug!("http-rpc {target}: {error}");
            trace::set_failed(&span, &error);
            let (status, body) = call_error_reply(&error);
            json(status, &body)
        }
    }
}

fn json(status: u16, value: &serde_json::Value) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
