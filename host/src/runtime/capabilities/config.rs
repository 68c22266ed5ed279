//! wasi:config: the component's `config` table from the manifest, read-only.
//! The values are converted once per version and shared by its instances.

use super::capability::Capability;
use crate::manifest::ComponentSpec;
use crate::runtime::state::HostState;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// The wasi:config capability.
pub struct Config;

impl Capability for Config {
    type Prepared = Arc<WasiConfigVariables>;
    type Instance = Arc<WasiConfigVariables>;

    fn prepare(_name: &str, spec: &ComponentSpec, _imports: &[String]) -> Result<Self::Prepared, Vec<String>> {
        let variables = spec
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.as_config_string()))
            .collect::<WasiConfigVariables>();
        Ok(Arc::new(variables))
    }

    fn add_to_linker<C: Send + 'static>(_: &Self::Prepared, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
        wasmtime_wasi_config::add_to_linker(linker, |s: &mut HostState<C>| WasiConfig::from(&*s.caps.config))
    }

    fn instance(prepared: &Self::Prepared) -> wasmtime::Result<Self::Instance> {
        Ok(prepared.clone())
    }
}
