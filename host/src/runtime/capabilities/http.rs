//! wasi:http 0.2 and 0.3. The types are always linked (the `http` medium
//! needs them to hand a request to `incoming-handler` or `handler`); the
//! 0.2 `outgoing-handler` only when the component's `allowed_outbound_hosts`
//! lists something, so a 0.2 component that imports it with an empty list
//! fails at load with a message naming the field. The 0.3 `client` is
//! always linked (every 0.3 service imports it) and denies every request
//! when the list is empty. Every outgoing request is checked against the list (scheme, host,
//! port) in [`OutboundHooks::send_request`], before any connection; a refused
//! one fails in the guest with `HTTP-request-denied` and a warning here.

use super::capability::Destinations;
use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::{HostState, HttpState};
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::LinkOptions;
use wasmtime_wasi_http::p2::bindings::http::types;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

/// The wasi:http capability.
pub struct Http;

impl Capability for Http {
    type Prepared = Arc<Destinations>;
    type Instance = HttpState;

    /// Nothing of its own: where requests may go is the outbound capability's.
    fn admit(_: &HostPolicy, _: &Manifest, _: &str, _: &ComponentSpec) -> Vec<String> {
        Vec::new()
    }

    fn prepare(load: &Load) -> Result<Arc<Destinations>, Vec<String>> {
        let name = load.name;
        let problems: Vec<String> = load
            .imports
            .iter()
            .filter(|import| load.outbound.allowed.is_empty() && import.starts_with("wasi:http/outgoing-handler"))
            .map(|import| {
                format!(
                    "components.{name}: imports `{import}`, but `components.{name}.allowed_outbound_hosts` is empty; list the hosts it may call, e.g. [\"https://api.example.com\"]"
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(load.outbound.clone())
        } else {
            Err(problems)
        }
    }

    fn add_to_linker<C: Send + 'static>(
        outbound: &Arc<Destinations>,
        linker: &mut Linker<HostState<C>>,
        concurrent: bool,
    ) -> wasmtime::Result<()> {
        // WASI 0.3: the types and `client` always. Its service world imports
        // `client` whether or not the component sends, so the list is held
        // by the hooks below (every request to a host not listed is denied),
        // not by leaving the import out.
        if concurrent {
            wasmtime_wasi_http::p3::add_to_linker(linker)?;
        }
        if outbound.allowed.is_empty() {
            let options = LinkOptions::default();
            types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(linker, &options.into(), |s| {
                wasmtime_wasi_http::WasiHttpView::http(s)
            })
        } else {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        }
    }

    fn instance(outbound: &Arc<Destinations>) -> wasmtime::Result<HttpState> {
        Ok(HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: Box::new(OutboundHooks(outbound.clone())),
        })
    }
}

/// wasi:http hooks that send a request only if the allow-list lets it go.
pub struct OutboundHooks(Arc<Destinations>);

/// What `send_request` returns: the response and the connection's task.
type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or_default();
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        let allowed = port.is_some_and(|port| self.0.allowed.allows_http(scheme, host, port));
        if !allowed {
            let authority = uri.authority().map_or("", |a| a.as_str());
            tracing::warn!(
                component = &*self.0.component,
                scheme,
                authority,
                "outbound HTTP refused: {scheme}://{authority} is not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
