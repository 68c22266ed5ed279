//! Capabilities: the host-provided interfaces a component may import. Each
//! is one module with the same three phases ([`Capability`]); [`Granted`]
//! runs every one of them for one component version.

pub mod capability;
pub mod config;
pub mod http;
pub mod keyvalue;
pub mod logging;
pub mod output;
pub mod wasi;

pub use capability::Capability;

use crate::manifest::ComponentSpec;
use crate::runtime::keyvalue::Opened;
use crate::runtime::state::{CapabilityStates, HostState};
use wasmtime::component::Linker;

/// Every capability's load-time share for one component version.
pub struct Granted {
    wasi: <wasi::Wasi as Capability>::Prepared,
    http: <http::Http as Capability>::Prepared,
    config: <config::Config as Capability>::Prepared,
    logging: <logging::Logging as Capability>::Prepared,
    keyvalue: <keyvalue::KeyValue as Capability>::Prepared,
}

/// Runs one phase's `prepare`, gathering its problems.
fn prepare<K: Capability>(
    name: &str,
    spec: &ComponentSpec,
    imports: &[String],
    problems: &mut Vec<String>,
) -> Option<K::Prepared> {
    K::prepare(name, spec, imports).map_err(|p| problems.extend(p)).ok()
}

impl Granted {
    /// Checks component `name`'s grants against its `imports`: every
    /// capability's problems together. `opened` holds the app's buckets,
    /// which the key-value grant may reach.
    pub fn prepare(
        name: &str,
        spec: &ComponentSpec,
        imports: &[String],
        opened: &Opened,
    ) -> Result<Granted, Vec<String>> {
        let mut problems = Vec::new();
        let wasi = prepare::<wasi::Wasi>(name, spec, imports, &mut problems);
        let http = prepare::<http::Http>(name, spec, imports, &mut problems);
        let config = prepare::<config::Config>(name, spec, imports, &mut problems);
        let logging = prepare::<logging::Logging>(name, spec, imports, &mut problems);
        let keyvalue = prepare::<keyvalue::KeyValue>(name, spec, imports, &mut problems).map(|g| g.attach(opened));
        match (wasi, http, config, logging, keyvalue) {
            (Some(wasi), Some(http), Some(config), Some(logging), Some(keyvalue)) if problems.is_empty() => {
                Ok(Granted {
                    wasi,
                    http,
                    config,
                    logging,
                    keyvalue,
                })
            }
            _ => {
                // Capabilities that read the same field report its problems once.
                let mut seen = std::collections::HashSet::new();
                problems.retain(|p| seen.insert(p.clone()));
                Err(problems)
            }
        }
    }

    /// Adds every capability's host functions to `linker`.
    pub fn add_to_linker<C: Send + 'static>(&self, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
        wasi::Wasi::add_to_linker(&self.wasi, linker)?;
        http::Http::add_to_linker(&self.http, linker)?;
        config::Config::add_to_linker(&self.config, linker)?;
        keyvalue::KeyValue::add_to_linker(&self.keyvalue, linker)?;
        logging::Logging::add_to_linker(&self.logging, linker)
    }

    /// The capabilities' state for one new instance.
    pub fn instance(&self) -> wasmtime::Result<CapabilityStates> {
        logging::Logging::instance(&self.logging)?;
        Ok(CapabilityStates {
            wasi: wasi::Wasi::instance(&self.wasi)?,
            http: http::Http::instance(&self.http)?,
            config: config::Config::instance(&self.config)?,
            keyvalue: keyvalue::KeyValue::instance(&self.keyvalue)?,
        })
    }
}
