//! wasi:config: the component's `config` table from the manifest, read-only,
//! served under every version of the interface that current SDKs import
//! ([`INTERFACES`]): Spin and wasmCloud components built against an older
//! draft link as well as ours. The versions differ only in names (the
//! interface was `runtime` before it was `store`, its error `config-error`
//! before `error`); their types are the same, so one pair of host functions
//! serves them all. The values are converted once per version of the
//! component and shared by its instances.
//!
//! Spin's `variables` interfaces read the same table ([`SPIN_VARIABLES`]):
//! a Spin component's `variables` become its `config` (a `spin.toml` is
//! translated so), and Spin serves them through both.

use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::{ConfigValues, HostState};
use std::sync::Arc;
use wasmtime::StoreContextMut;
use wasmtime::component::{Accessor, ComponentType, Linker, Lower};

/// The interface names served, oldest first: `runtime@0.2.0-draft` (wasmCloud
/// 1.x components), `store@0.2.0-draft` and `store@0.2.0-draft-2024-09-27`
/// (Spin 3 and wasmCloud SDKs), and `store@0.2.0-rc.1`.
pub const INTERFACES: [&str; 4] = [
    "wasi:config/runtime@0.2.0-draft",
    "wasi:config/store@0.2.0-draft",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasi:config/store@0.2.0-rc.1",
];

/// Spin's variables interfaces: `fermyon:spin/variables@2.0.0` (spin-sdk 2
/// to 5) and `spin:variables/variables@3.0.0` (spin-sdk 6 and 7, where
/// `get` is an async function; the host answers at once).
pub const SPIN_VARIABLES: [&str; 2] = ["fermyon:spin/variables@2.0.0", "spin:variables/variables@3.0.0"];

/// Spin's variables error variant (the same cases in both versions).
#[derive(Debug, PartialEq, ComponentType, Lower)]
#[component(variant)]
enum VariablesError {
    /// The name is not a variable name.
    #[component(name = "invalid-name")]
    InvalidName(String),
    /// The component has no such variable.
    #[component(name = "undefined")]
    Undefined(String),
    /// A provider failed (never: the values are the manifest's).
    #[component(name = "provider")]
    #[allow(dead_code)]
    Provider(String),
    /// Anything else (never).
    #[component(name = "other")]
    #[allow(dead_code)]
    Other(String),
}

/// `get: func(name: string) -> result<string, error>`.
type VariableResult = (Result<String, VariablesError>,);

/// Spin's answer for variable `name` from `values`: names are lower-case
/// letters, digits and `_`, starting with a letter.
fn variable(values: &std::collections::BTreeMap<String, String>, name: &str) -> Result<String, VariablesError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(VariablesError::InvalidName(format!(
            "{name:?}: a variable name is lower-case letters, digits and `_`, starting with a letter"
        )));
    }
    values
        .get(name)
        .cloned()
        .ok_or_else(|| VariablesError::Undefined(format!("no variable {name:?} for this component")))
}

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

/// Defines `get` and `get-all` of a wasi:config interface in `instance`,
/// answering from `values` rather than the store's own: what a member of a
/// composed component whose config differs from its root's gets
/// (`plug.rs`).
pub(crate) fn serve_values<T: 'static>(
    instance: &mut wasmtime::component::LinkerInstance<'_, T>,
    values: ConfigValues,
) -> wasmtime::Result<()> {
    let all = values.clone();
    instance.func_wrap(
        "get",
        move |_: StoreContextMut<'_, T>, (key,): (String,)| -> wasmtime::Result<GetResult> {
            Ok((Ok(values.get(&key).cloned()),))
        },
    )?;
    instance.func_wrap(
        "get-all",
        move |_: StoreContextMut<'_, T>, (): ()| -> wasmtime::Result<GetAllResult> {
            Ok((Ok(all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),))
        },
    )?;
    Ok(())
}

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

    fn add_to_linker<C: Send + 'static>(
        _: &Self::Prepared,
        linker: &mut Linker<HostState<C>>,
        concurrent: bool,
    ) -> wasmtime::Result<()> {
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
        let [v2, v3] = SPIN_VARIABLES;
        linker.instance(v2)?.func_wrap(
            "get",
            |store: StoreContextMut<'_, HostState<C>>, (name,): (String,)| -> wasmtime::Result<VariableResult> {
                Ok((variable(&store.data().caps.config, &name),))
            },
        )?;
        // An `async func` in 3.0.0: defined as one, answered at once.
        if !concurrent {
            return Ok(());
        }
        linker
            .instance(v3)?
            .func_wrap_concurrent("get", |guest: &Accessor<HostState<C>>, (name,): (String,)| {
                let answer = guest.with(|mut store| variable(&store.data_mut().caps.config, &name));
                Box::pin(std::future::ready(Ok((answer,))))
            })?;
        Ok(())
    }

    fn instance(prepared: &Self::Prepared) -> wasmtime::Result<Self::Instance> {
        Ok(prepared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_variables_answer_as_spin_does() {
        let values = [("greeting".to_string(), "Hello".to_string())].into();
        assert_eq!(variable(&values, "greeting"), Ok("Hello".to_string()));
        assert!(matches!(variable(&values, "nope"), Err(VariablesError::Undefined(_))));
        for bad in ["Greeting", "1st", "", "a-b"] {
            assert!(
                matches!(variable(&values, bad), Err(VariablesError::InvalidName(_))),
                "{bad}"
            );
        }
    }
}
