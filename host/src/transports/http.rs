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
use crate::runtime::fault::Fault;
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
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
    pub async fn bind(index: usize, spec: &HttpBinding, runtime: Arc<Runtime>) -> anyhow::Result<HttpMedium> {
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

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        let (runtime, component) = (self.runtime, self.component);
        Box::pin(serve_http(self.listener, shutdown, move |request| {
            let (runtime, component) = (runtime.clone(), component.clone());
            async move { respond(&runtime, &component, request).await }
        }))
    }
}

/// Accepts HTTP/1.1 connections (keep-alive) on `listener` and answers every
/// request with `handler` until `shutdown`; then lets in-flight requests finish.
/// Shared by the `http` and `http-rpc` media.
pub(crate) async fn serve_http<H, F, B>(
    listener: TcpListener,
    shutdown: CancellationToken,
    handler: H,
) -> anyhow::Result<()>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new().keep_alive(true).clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning.
                    tracing::warn!("http {local}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("http connection from {peer}: {e}");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("http {local}: gave up waiting for in-flight requests");
    }
    Ok(())
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
    let (status, body) = super::fault_reply(fault);
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
