//! wasi:config: the component's `config` table from the manifest, read-only,
//! served under every version of the interface that current SDKs import
//! ([`INTERFACES`]): Spin and wasmCloud components built against an older
//! draft link as well as ours. The versions differ only in names (the
//! interface was `runtime` before it was `store`, its error `config-error`
//! before `error`); their types are the same, so one pair of host functions
//! serves them all. The values are converted once per version of the
//! component and shared by its instances.

use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::{ConfigValues, HostState};
use std::sync::Arc;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Linker, Lower};

/// The interface names served, oldest first: `runtime@0.2.0-draft` (wasmCloud
/// 1.x components), `store@0.2.0-draft` and `store@0.2.0-draft-2024-09-27`
/// (Spin 3 and wasmCloud SDKs), and `store@0.2.0-rc.1`.
pub const INTERFACES: [&str; 4] = [
    "wasi:config/runtime@0.2.0-draft",
    "wasi:config/store@0.2.0-draft",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasi:config/store@0.2.0-rc.1",
];

/// The interfaces' error variant (`error` or `config-error`, same cases).
/// The manifest's table cannot fail to read, so the host never returns it;
/// it is here because the functions' types name it.
#[derive(ComponentType, Lower)]
#[component(variant)]
enum ConfigError {
    /// A failure of an upstream config source.
    #[component(name = "upstream")]
    #[allow(dead_code)]
    Upstream(String),
    /// An I/O failure.
    #[component(name = "io")]
    #[allow(dead_code)]
    Io(String),
}

/// `get: func(key: string) -> result<option<string>, error>`.
type GetResult = (Result<Option<String>, ConfigError>,);
/// `get-all: func() -> result<list<tuple<string, string>>, error>`.
type GetAllResult = (Result<Vec<(String, String)>, ConfigError>,);

/// The wasi:config capability.
pub struct Config;

impl Capability for Config {
    type Prepared = ConfigValues;
    type Instance = ConfigValues;

    /// Nothing: config values are the app's own data, no reach into the host.
    fn admit(_: &HostPolicy, _: &Manifest, _: &str, _: &ComponentSpec) -> Vec<String> {
        Vec::new()
    }

    fn prepare(load: &Load) -> Result<Self::Prepared, Vec<String>> {
        let values = load
            .spec
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.as_config_string()))
            .collect();
        Ok(Arc::new(values))
    }

    fn add_to_linker<C: Send + 'static>(_: &Self::Prepared, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
        for name in INTERFACES {
            let mut interface = linker.instance(name)?;
            interface.func_wrap(
                "get",
                |store: StoreContextMut<'_, HostState<C>>, (key,): (String,)| -> wasmtime::Result<GetResult> {
                    Ok((Ok(store.data().caps.config.get(&key).cloned()),))
                },
            )?;
            interface.func_wrap(
                "get-all",
                |store: StoreContextMut<'_, HostState<C>>, (): ()| -> wasmtime::Result<GetAllResult> {
                    let all = store.data().caps.config.iter();
                    Ok((Ok(all.map(|(k, v)| (k.clone(), v.clone())).collect()),))
                },
            )?;
        }
        Ok(())
    }

    fn instance(prepared: &Self::Prepared) -> wasmtime::Result<Self::Instance> {
        Ok(prepared.clone())
    }
}
