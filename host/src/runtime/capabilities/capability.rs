//! The shape every capability has (Spin's factors are the model). Per app,
//! the host opens what the app shares ([`AppShare`]: its key-value buckets);
//! per component version, each capability checks its grants once
//! ([`Capability::prepare`]) and adds host functions to the linker; per
//! instance, it builds state. Before any of that, for an app that arrives
//! from the lattice, each capability says what the host policy must allow
//! ([`Capability::admit`]): the method is required, so a capability that
//! forgets the policy does not compile.
//!
//! A new capability is one module that implements [`Capability`] and one
//! entry in the list in `mod.rs`; its instance state is a field of
//! [`crate::runtime::state::CapabilityStates`] (`()` if it keeps none).

use super::policy::HostPolicy;
use crate::manifest::{AllowedHosts, ComponentSpec, Manifest};
use crate::runtime::keyvalue::Opened;
use crate::runtime::state::HostState;
use std::sync::Arc;
use wasmtime::component::Linker;

/// What the app phase opened, shared by every component of one app.
pub type AppShare = Opened;

/// Where one component version may connect.
#[derive(Debug)]
pub struct Destinations {
    /// The component, for the warnings of refused connections.
    pub component: Arc<str>,
    /// The parsed list; empty allows nothing.
    pub allowed: AllowedHosts,
}

impl Destinations {
    /// Nowhere, for component `name`.
    pub fn none(name: &str) -> Arc<Destinations> {
        Arc::new(Destinations {
            component: name.into(),
            allowed: AllowedHosts::default(),
        })
    }
}

/// What a capability sees of one component version at load.
pub struct Load<'a> {
    /// The app's share (its name, its open buckets).
    pub app: &'a AppShare,
    /// The component's name in the manifest.
    pub name: &'a str,
    /// Its grants (secrets resolved).
    pub spec: &'a ComponentSpec,
    /// The interfaces it imports.
    pub imports: &'a [String],
    /// Where it may connect, parsed once for WASI sockets and wasi:http.
    pub outbound: &'a Arc<Destinations>,
}

/// One host-provided interface.
pub trait Capability {
    /// What it keeps per component version, computed once at load.
    type Prepared: Send + Sync + 'static;
    /// What each instance holds of it.
    type Instance;

    /// Policy: what component `name` of `app` asks of this capability that
    /// `policy` does not allow, each problem naming its manifest field.
    /// Decided from the manifest alone, before anything is loaded.
    fn admit(policy: &HostPolicy, app: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String>;

    /// Load: checks the component's grants against what it imports. Each
    /// problem names its manifest field.
    fn prepare(load: &Load) -> Result<Self::Prepared, Vec<String>>;

    /// Load: adds the host functions the grants allow to the component's
    /// linker. `concurrent` says whether the linker's engine has concurrency
    /// support: only then may WASI 0.3 and other async host functions be
    /// added (wasmtime refuses them otherwise).
    fn add_to_linker<C: Send + 'static>(
        prepared: &Self::Prepared,
        linker: &mut Linker<HostState<C>>,
        concurrent: bool,
    ) -> wasmtime::Result<()>;

    /// Each instance: its state, from what `prepare` kept.
    fn instance(prepared: &Self::Prepared) -> wasmtime::Result<Self::Instance>;
}
