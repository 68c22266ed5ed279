//! The `http` medium: a component's `wasi:http/incoming-handler` on a TCP
//! socket, HTTP/1.1 with keep-alive, on hyper.
//!
//! This is where an HTTP request enters Membrane: [`HttpMedium::serve`] accepts
//! connections, and each request goes to [`Runtime::handle_http`], under a
//! `binding` span that continues the request's `traceparent`. A failed
//! call becomes a JSON error response whose status follows the fault: 500 for
//! a trap or memory exhaustion, 504 for a deadline, 503 at capacity.

use super::medium::{BindContext, Medium, Service, binding_span, fault_reply, inbound};
use super::serve::serve_http;
use crate::manifest::{BindingSpec, HttpBinding, HttpLimits};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::fault::Fault;
use crate::runtime::trace::{self, TRACEPARENT};
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A bound `http` binding.
pub struct HttpMedium {
    listener: TcpListener,
    local: SocketAddr,
    limits: HttpLimits,
    app: Arc<str>,
    component: Arc<str>,
    runtime: Arc<Runtime>,
    calls: Calls,
}

impl HttpMedium {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Medium for HttpMedium {
    type Spec = HttpBinding;

    fn spec(binding: &BindingSpec) -> Option<&HttpBinding> {
        match binding {
            BindingSpec::Http(spec) => Some(spec),
            _ => None,
        }
    }

    fn check(index: usize, spec: &HttpBinding, new: &Loaded, _old: Option<&Loaded>) -> Vec<String> {
        if new.is_proxy() {
            return Vec::new();
        }
        let exports: Vec<String> = new
            .component
            .component_type()
            .exports(new.component.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        vec![format!(
            "bindings[{index}]: medium `http` needs component `{}` to export `wasi:http/incoming-handler@0.2.x`; it exports: {}",
            spec.component,
            exports.join(", ")
        )]
    }

    async fn bind(bindings: &[(usize, &HttpBinding)], cx: &BindContext<'_>) -> anyhow::Result<HttpMedium> {
        let &[(index, spec)] = bindings else {
            anyhow::bail!("an http binding is bound alone");
        };
        let listener = TcpListener::bind(spec.address)
            .await
            .with_context(|| format!("bindings[{index}]: cannot listen on {}", spec.address))?;
        Ok(HttpMedium {
            local: listener.local_addr()?,
            listener,
            limits: spec.limits(),
            app: Arc::from(cx.app),
            component: Arc::from(spec.component.as_str()),
            runtime: cx.runtime.clone(),
            calls: Calls::new(cx.app, &spec.component, "http"),
        })
    }
}

impl Service for HttpMedium {
    fn describe(&self) -> String {
        format!("http://{} -> {}", self.local, self.component)
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        let (runtime, app, component, calls) = (self.runtime, self.app, self.component, self.calls);
        Box::pin(serve_http(self.listener, self.limits, shutdown, move |request| {
            let (runtime, app, component, calls) = (runtime.clone(), app.clone(), component.clone(), calls.clone());
            async move { respond(&runtime, &app, &component, &calls, request).await }
        }))
    }
}

async fn respond(
    runtime: &Runtime,
    app: &str,
    component: &str,
    calls: &Calls,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let span = binding_span("http", app, component, &"wasi:http/incoming-handler");
    trace::set_attributes(&span, || {
        [
            ("http.request.method", request.method().to_string().into()),
            ("url.path", request.uri().path().to_string().into()),
        ]
    });
    let traceparent = request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let cx = inbound(traceparent, &span);
    let started = std::time::Instant::now();
    let result = runtime
        .handle_http(component, request, cx)
        .instrument(span.clone())
        .await;
    calls.record(started, result.as_ref().err().map(|f| f.kind.name()));
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

/// The HTTP form of a fault: a status that follows its kind and a JSON body
/// naming the component and the cause.
pub fn fault_response(fault: &Fault) -> hyper::Response<HyperOutgoingBody> {
    let (status, body) = fault_reply(fault);
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
