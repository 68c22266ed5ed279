//! The shape every capability has (Spin's factors are the model): check the
//! grants once at load, add host functions to the linker, build per-instance
//! state. A new capability is one module that implements [`Capability`],
//! a field in `Granted` (`mod.rs`) and, if its instances keep state, a field
//! in [`crate::runtime::state::CapabilityStates`].

use crate::manifest::ComponentSpec;
use crate::runtime::state::HostState;
use wasmtime::component::Linker;

/// One host-provided interface.
pub trait Capability {
    /// What it keeps per component version, computed once at load.
    type Prepared: Send + Sync + 'static;
    /// What each instance holds of it.
    type Instance;

    /// Load: checks component `name`'s grants against what it imports
    /// (`imports`, the interface names). Each problem names its manifest field.
    fn prepare(name: &str, spec: &ComponentSpec, imports: &[String]) -> Result<Self::Prepared, Vec<String>>;

    /// Load: adds the host functions the grants allow to the component's linker.
    fn add_to_linker<C: Send + 'static>(
        prepared: &Self::Prepared,
        linker: &mut Linker<HostState<C>>,
    ) -> wasmtime::Result<()>;

    /// Each instance: its state, from what `prepare` kept.
    fn instance(prepared: &Self::Prepared) -> wasmtime::Result<Self::Instance>;
}
