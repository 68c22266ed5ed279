//! wasi:logging: a guest's log lines become the host's `tracing` events,
//! tagged with the component, inside the span of the call (so they carry its
//! trace id). Always linked; it keeps no per-instance state.

use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::HostState;
use wasmtime::component::{HasSelf, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/logging",
        world: "wasi:logging/imports",
    });
}
use bindings::wasi::logging::logging as wasi_logging;

/// The wasi:logging capability.
pub struct Logging;

impl Capability for Logging {
    type Prepared = ();
    type Instance = ();

    /// Nothing: log lines are rate-limited and escaped for every app alike.
    fn admit(_: &HostPolicy, _: &Manifest, _: &str, _: &ComponentSpec) -> Vec<String> {
        Vec::new()
    }

    fn prepare(_: &Load) -> Result<(), Vec<String>> {
        Ok(())
    }

    fn add_to_linker<C: Send + 'static>(_: &(), linker: &mut Linker<HostState<C>>, _: bool) -> wasmtime::Result<()> {
        wasi_logging::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)
    }

    fn instance(_: &()) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl<C: Send> wasi_logging::Host for HostState<C> {
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
