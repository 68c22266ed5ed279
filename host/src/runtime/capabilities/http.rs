//! wasi:http: the types are always linked (the `http` medium needs them to
//! hand a request to `incoming-handler`); outgoing requests only when
//! `wasi.outbound_http` grants them, so an ungranted component that imports
//! `outgoing-handler` fails at load with a message naming the grant.

use super::capability::Capability;
use crate::manifest::ComponentSpec;
use crate::runtime::state::HostState;
use wasmtime::component::Linker;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::LinkOptions;
use wasmtime_wasi_http::p2::bindings::http::types;

/// The wasi:http capability; `Prepared` is whether outgoing requests are granted.
pub struct Http;

impl Capability for Http {
    type Prepared = bool;
    type Instance = WasiHttpCtx;

    fn prepare(name: &str, spec: &ComponentSpec, imports: &[String]) -> Result<bool, Vec<String>> {
        let granted = spec.wasi.outbound_http;
        let problems: Vec<String> = imports
            .iter()
            .filter(|import| !granted && import.starts_with("wasi:http/outgoing-handler"))
            .map(|import| format!("components.{name}: imports `{import}`; grant it with `wasi.outbound_http = true`"))
            .collect();
        if problems.is_empty() {
            Ok(granted)
        } else {
            Err(problems)
        }
    }

    fn add_to_linker<C: Send + 'static>(granted: &bool, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
        if *granted {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        } else {
            let options = LinkOptions::default();
            types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(linker, &options.into(), |s| {
                wasmtime_wasi_http::WasiHttpView::http(s)
            })
        }
    }

    fn instance(_: &bool) -> wasmtime::Result<WasiHttpCtx> {
        Ok(WasiHttpCtx::new())
    }
}
