//! The `http` medium: a component's `wasi:http/incoming-handler` on a TCP
//! socket, HTTP/1.1 with keep-alive, on hyper.
//!
//! This is where an HTTP request enters Membrane: [`HttpMedium::serve`] accepts
//! connections, and each request goes to [`Runtime::handle_http`]. A failed
//! call becomes a JSON error response whose status follows the fault: 500 for
//! a trap or memory exhaustion, 504 for a deadline, 503 at capacity.

use super::Medium;
use crate::manifest::HttpBinding;
use crate::runtime::Runtime;
use crate::runtime::fault::{Fault, FaultKind};
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long shutdown waits for in-flight requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound `http` binding.
pub struct HttpMedium {
    listener: TcpListener,
    local: SocketAddr,
    component: Arc<str>,
    runtime: Arc<Runtime>,
}

impl HttpMedium {
    /// Binds the socket of binding number `index`.
    pub async fn bind(
        index: usize,
        spec: &HttpBinding,
        runtime: Arc<Runtime>,
    ) -> anyhow::Result<HttpMedium> {
        let listener = TcpListener::bind(spec.address)
            .await
            .with_context(|| format!("bindings[{index}]: cannot listen on {}", spec.address))?;
        let local = listener.local_addr()?;
        Ok(HttpMedium {
            listener,
            local,
            component: Arc::from(spec.component.as_str()),
            runtime,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Medium for HttpMedium {
    fn describe(&self) -> String {
        format!("http://{} -> {}", self.local, self.component)
    }

    fn serve(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let graceful = GracefulShutdown::new();
            let http = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .clone();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = self.listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Usually fd exhaustion: back off instead of spinning.
                            tracing::warn!("http {}: accept failed: {e}", self.local);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => break,
                };
                let _ = stream.set_nodelay(true);
                let (runtime, component) = (self.runtime.clone(), self.component.clone());
                let service = hyper::service::service_fn(move |request| {
                    let (runtime, component) = (runtime.clone(), component.clone());
                    async move { Ok::<_, Infallible>(respond(&runtime, &component, request).await) }
                });
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("http connection from {peer}: {e}");
                    }
                });
            }
            if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(
                    "http {}: gave up waiting for in-flight requests",
                    self.local
                );
            }
            Ok(())
        })
    }
}

async fn respond(
    runtime: &Runtime,
    component: &str,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    match runtime.handle_http(component, request).await {
        Ok(response) => response,
        Err(fault) => {
            tracing::warn!("{fault}");
            fault_response(&fault)
        }
    }
}

/// The HTTP form of a fault: a status that follows its kind and a JSON body
/// naming the component and the cause.
pub fn fault_response(fault: &Fault) -> hyper::Response<HyperOutgoingBody> {
    let (status, kind) = match fault.kind {
        FaultKind::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
        FaultKind::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
        FaultKind::MemoryExhausted { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "memory"),
        FaultKind::AtCapacity { .. } => (StatusCode::SERVICE_UNAVAILABLE, "capacity"),
        FaultKind::Host(_) => (StatusCode::INTERNAL_SERVER_ERROR, "host"),
    };
    let body = serde_json::json!({
        "error": fault.to_string(),
        "component": &*fault.component,
        "kind": kind,
    });
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
