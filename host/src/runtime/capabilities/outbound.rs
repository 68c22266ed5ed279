//! Outbound networking: where a component may connect, from its
//! `allowed_outbound_hosts`. Parsed once per component version; WASI
//! sockets (`wasi.rs`) and wasi:http (`http.rs`) both read it, so the list
//! has one meaning and its problems are reported once. It adds no host
//! functions of its own.

use super::capability::{Capability, Destinations, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::HostState;
use std::sync::Arc;
use wasmtime::component::Linker;

/// The outbound-networking capability.
pub struct Outbound;

impl Capability for Outbound {
    type Prepared = Arc<Destinations>;
    type Instance = ();

    fn admit(policy: &HostPolicy, _app: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String> {
        match spec.outbound_hosts(name) {
            Ok(wanted) => policy
                .uncovered_outbound(&wanted)
                .into_iter()
                .map(|entry| {
                    format!(
                        "components.{name}.allowed_outbound_hosts: {entry} is not allowed by this host \
                         (--allow-outbound, --allow-network)"
                    )
                })
                .collect(),
            Err(bad) => bad,
        }
    }

    fn prepare(load: &Load) -> Result<Arc<Destinations>, Vec<String>> {
        Ok(Arc::new(Destinations {
            component: load.name.into(),
            allowed: load.spec.outbound_hosts(load.name)?,
        }))
    }

    fn add_to_linker<C: Send + 'static>(
        _: &Arc<Destinations>,
        _: &mut Linker<HostState<C>>,
        _: bool,
    ) -> wasmtime::Result<()> {
        Ok(())
    }

    fn instance(_: &Arc<Destinations>) -> wasmtime::Result<()> {
        Ok(())
    }
}
