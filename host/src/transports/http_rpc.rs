//! The `http-rpc` medium: `POST <path>` with a JSON object of parameters calls
//! one exported function; the reply is the JSON of its result.
//!
//! Bindings on the same address share one server and are routed by path.
//! A body that does not fit the function's types is answered 400 with the
//! path of the bad field; a failed call is answered like the `http` medium.

use super::Medium;
use super::http::serve_http;
use crate::manifest::{BindingSpec, Manifest, split_export};
use crate::runtime::Runtime;
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 4 << 20;

/// One route: a path to an exported function.
struct Route {
    component: Arc<str>,
    interface: String,
    function: String,
}

/// An http-rpc server: every http-rpc binding on one address.
pub struct HttpRpcMedium {
    listener: TcpListener,
    local: SocketAddr,
    routes: Arc<HashMap<String, Route>>,
    runtime: Arc<Runtime>,
}

impl HttpRpcMedium {
    /// Binds one server for the http-rpc bindings numbered `bindings`, which
    /// share one address.
    pub async fn bind(
        manifest: &Manifest,
        bindings: &[usize],
        runtime: &Arc<Runtime>,
    ) -> anyhow::Result<HttpRpcMedium> {
        let mut routes = HashMap::new();
        let mut address = None;
        for &i in bindings {
            let Some(BindingSpec::HttpRpc(spec)) = manifest.bindings.get(i) else {
                continue;
            };
            let Some((interface, function)) = split_export(&spec.export) else {
                continue;
            };
            address.get_or_insert((i, spec.address));
            let route = Route {
                component: Arc::from(spec.component.as_str()),
                interface: interface.to_string(),
                function: function.to_string(),
            };
            if routes.insert(spec.route(), route).is_some() {
                anyhow::bail!(
                    "bindings[{i}].path: {} is already routed on {}",
                    spec.route(),
                    spec.address
                );
            }
        }
        let (first, address) = address.context("no http-rpc binding to serve")?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("bindings[{first}]: cannot listen on {address}"))?;
        Ok(HttpRpcMedium {
            local: listener.local_addr()?,
            listener,
            routes: Arc::new(routes),
            runtime: runtime.clone(),
        })
    }
}

impl Medium for HttpRpcMedium {
    fn describe(&self) -> String {
        let mut routes: Vec<String> = self
            .routes
            .iter()
            .map(|(path, r)| format!("{path} -> {}:{}", r.component, r.function))
            .collect();
        routes.sort();
        format!("http-rpc http://{} [{}]", self.local, routes.join(", "))
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        let (runtime, routes) = (self.runtime, self.routes);
        Box::pin(serve_http(self.listener, shutdown, move |request| {
            let (runtime, routes) = (runtime.clone(), routes.clone());
            async move { respond(&runtime, &routes, request).await }
        }))
    }
}

async fn respond(
    runtime: &Runtime,
    routes: &HashMap<String, Route>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let Some(route) = routes.get(request.uri().path()) else {
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
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return json(
                400,
                &serde_json::json!({ "error": format!("reading body: {e}"), "kind": "bad-request" }),
            );
        }
    };
    match runtime
        .call_json(&route.component, &route.interface, &route.function, &body)
        .await
    {
        Ok(value) => json(200, &value),
        Err(error) => {
            tracing::debug!("http-rpc {}: {error}", route.function);
            let (status, body) = super::call_error_reply(&error);
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
