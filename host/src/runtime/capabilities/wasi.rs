//! WASI basics (cli, clocks, random, filesystem, sockets): always linked, but
//! deny by default. Stdio goes to the host's stdio; files, environment and
//! network only as `[components.<name>.wasi]` grants them.

use super::capability::Capability;
use crate::manifest::{ComponentSpec, WasiGrants};
use crate::runtime::state::HostState;
use wasmtime::component::Linker;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// The WASI capability.
pub struct Wasi;

impl Capability for Wasi {
    type Prepared = WasiGrants;
    type Instance = WasiCtx;

    fn prepare(name: &str, spec: &ComponentSpec, _imports: &[String]) -> Result<WasiGrants, Vec<String>> {
        let problems: Vec<String> = spec
            .wasi
            .dirs
            .iter()
            .filter(|(_, host)| !host.is_dir())
            .map(|(guest, host)| {
                format!(
                    "components.{name}.wasi.dirs.{guest}: {} is not a directory on this host",
                    host.display()
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(spec.wasi.clone())
        } else {
            Err(problems)
        }
    }

    fn add_to_linker<C: Send + 'static>(_: &WasiGrants, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)
    }

    fn instance(grants: &WasiGrants) -> wasmtime::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder.inherit_stdout().inherit_stderr();
        for (key, value) in &grants.env {
            builder.env(key, value.as_config_string());
        }
        for (guest, host) in &grants.dirs {
            builder.preopened_dir(host, guest, FsPerms::ReadWrite)?;
        }
        if grants.network {
            builder.inherit_network().allow_ip_name_lookup(true);
        }
        Ok(builder.build())
    }
}
