//! Per-store state and the capabilities a host gives components.
//!
//! One [`HostState`] lives in each `Store`, i.e. each component instance. It
//! holds one field per capability (WASI, wasi:http, wasi:config, wasi:logging),
//! the instance's limits and deadline, and the instances of linked components
//! it has started during this call. [`add_capabilities`] puts the matching
//! host functions into a linker; what a guest may actually reach (files,
//! sockets, environment) is decided per component by [`wasi_ctx`], deny by default.

use crate::links::Callee;
use crate::manifest::WasiGrants;
use crate::runtime::context::CallContext;
use crate::runtime::fault::MemoryLimitExceeded;
use crate::runtime::{Generation, Loaded};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

mod logging {
    wasmtime::component::bindgen!({
        path: "../wit/insurance/deps/logging",
        world: "wasi:logging/imports",
    });
}
use logging::wasi::logging::logging as wasi_logging;

/// The data of one store: one component instance and its callees.
pub struct HostState {
    /// The component this store runs.
    pub(crate) component: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    config: Arc<WasiConfigVariables>,
    pub(crate) limiter: Limiter,
    /// The call's deadline and trace.
    pub(crate) cx: CallContext,
    /// Instances of linked components started by this instance, one slot per link.
    pub(crate) callees: Vec<Option<Box<Callee>>>,
    /// The generation this call runs in: local links start their targets
    /// from it, so one call sees one consistent set of versions.
    pub(crate) generation: Arc<Generation>,
    /// Resource-table entries when the instance was first parked (`reuse`).
    pub(crate) parked_entries: Option<usize>,
    _permit: OwnedSemaphorePermit,
}

impl HostState {
    /// State for a new instance of `loaded`, from `generation`.
    pub(crate) fn new(
        loaded: &Loaded,
        wasi: WasiCtx,
        cx: CallContext,
        permit: OwnedSemaphorePermit,
        generation: Arc<Generation>,
    ) -> HostState {
        HostState {
            component: loaded.name.clone(),
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            config: loaded.config.clone(),
            limiter: Limiter {
                memory_mib: loaded.memory_mib,
            },
            cx,
            callees: (0..loaded.links).map(|_| None).collect(),
            generation,
            parked_entries: None,
            _permit: permit,
        }
    }

    /// Entries in the resource table (WASI preopens, live handles).
    pub(crate) fn table_entries(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl wasi_logging::Host for HostState {
    fn log(&mut self, level: wasi_logging::Level, context: String, message: String) {
        use wasi_logging::Level;
        let component = &*self.component;
        match level {
            Level::Trace => tracing::trace!(component, context, "{message}"),
            Level::Debug => tracing::debug!(component, context, "{message}"),
            Level::Info => tracing::info!(component, context, "{message}"),
            Level::Warn => tracing::warn!(component, context, "{message}"),
            Level::Error | Level::Critical => tracing::error!(component, context, "{message}"),
        }
    }
}

/// Caps one instance's memory; growth past the cap traps with a typed error.
pub(crate) struct Limiter {
    memory_mib: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        if desired as u64 > self.memory_mib << 20 {
            return Err(MemoryLimitExceeded {
                limit_mib: self.memory_mib,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Adds every capability a component may import to `linker`. Outgoing HTTP
/// is only added when granted, so an ungranted component that imports it fails
/// validation with a message naming the grant.
pub fn add_capabilities(linker: &mut Linker<HostState>, grants: &WasiGrants) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    if grants.outbound_http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    } else {
        let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
        wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(
            linker,
            &options.into(),
            HostState::http,
        )?;
    }
    wasmtime_wasi_config::add_to_linker(linker, |s: &mut HostState| WasiConfig::from(&*s.config))?;
    wasi_logging::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// The WASI context for one instance: stdio goes to the host's stdio; files,
/// sockets and environment only as granted.
pub fn wasi_ctx(grants: &WasiGrants) -> Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdout().inherit_stderr();
    for (key, value) in &grants.env {
        builder.env(key, value);
    }
    for (guest, host) in &grants.dirs {
        builder.preopened_dir(host, guest, FsPerms::ReadWrite)?;
    }
    if grants.network {
        builder.inherit_network().allow_ip_name_lookup(true);
    }
    Ok(builder.build())
}
