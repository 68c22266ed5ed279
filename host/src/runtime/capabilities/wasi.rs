//! WASI basics (cli, clocks, random, filesystem, sockets), in their 0.2 and
//! 0.3 versions: always linked, but deny by default. Stdout and stderr go to `tracing` (see [`crate::runtime::output`]);
//! files and environment only as `[components.<name>.wasi]` grants them;
//! sockets only to what `allowed_outbound_hosts` lists.
//!
//! Sockets: a TCP connect or a UDP send is allowed when an entry without a
//! scheme (or with `*`) matches the remote IP (exact, CIDR or `*`) and port;
//! a refused one is logged as a warning. Name lookups are on when the list
//! has any entry. The check sees IPs only, so a name entry never opens a
//! socket. Binding is allowed only to an ephemeral port (port 0, as connect
//! and send do implicitly), and listening never: the list is for outbound
//! traffic. A datagram from an address not on the list is dropped quietly.

use super::capability::Destinations;
use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{AllowedHosts, ComponentSpec, Manifest, WasiGrants};
use crate::runtime::output::{GuestOutput, OutputBudget, Stream};
use crate::runtime::state::HostState;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// The WASI capability.
pub struct Wasi;

/// What one component version's instances share.
pub struct Prepared {
    component: Arc<str>,
    grants: WasiGrants,
    allowed: Arc<Destinations>,
    output: Arc<OutputBudget>,
}

impl Capability for Wasi {
    type Prepared = Prepared;
    type Instance = WasiCtx;

    fn admit(policy: &HostPolicy, _app: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String> {
        let dirs = spec
            .wasi
            .dirs
            .iter()
            .filter(|(_, host)| !policy.allows_dir(host))
            .map(|(guest, host)| {
                format!(
                    "components.{name}.wasi.dirs.{guest}: host directory {} is not under any --allow-dir of this host",
                    host.display()
                )
            });
        let env = spec
            .wasi
            .env
            .keys()
            .filter(|key| !policy.allows_env(key))
            .map(|key| format!("components.{name}.wasi.env.{key}: not allowed by this host (--allow-env {key})"));
        dirs.chain(env).collect()
    }

    fn prepare(load: &Load) -> Result<Prepared, Vec<String>> {
        let name = load.name;
        let problems: Vec<String> = load
            .spec
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
        if !problems.is_empty() {
            return Err(problems);
        }
        let component: Arc<str> = name.into();
        Ok(Prepared {
            output: OutputBudget::new(component.clone()),
            component,
            grants: load.spec.wasi.clone(),
            allowed: load.outbound.clone(),
        })
    }

    /// WASI 0.2 and 0.3 both: a component built for wasm32-wasip2 that
    /// exports a 0.3 handler still imports 0.2 interfaces through its std.
    /// Both read the same context, so the grants and the socket check
    /// mean the same for either.
    fn add_to_linker<C: Send + 'static>(
        _: &Prepared,
        linker: &mut Linker<HostState<C>>,
        concurrent: bool,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)?;
        if concurrent {
            wasmtime_wasi::p3::add_to_linker(linker)?;
        }
        Ok(())
    }

    fn instance(prepared: &Prepared) -> wasmtime::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(GuestOutput::new(prepared.output.clone(), Stream::Stdout))
            .stderr(GuestOutput::new(prepared.output.clone(), Stream::Stderr));
        for (key, value) in &prepared.grants.env {
            builder.env(key, value.as_config_string());
        }
        for (guest, host) in &prepared.grants.dirs {
            builder.preopened_dir(host, guest, FsPerms::ReadWrite)?;
        }
        let component = prepared.component.clone();
        let allowed = prepared.allowed.clone();
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(!allowed.allowed.is_empty())
            .socket_addr_check(move |addr, usage| {
                Box::pin(std::future::ready(socket_allowed(
                    &component,
                    &allowed.allowed,
                    addr,
                    usage,
                )))
            });
        Ok(builder.build())
    }
}

/// Whether component `component` may use `addr` for `usage`; refusals of
/// what the guest asked for are logged.
fn socket_allowed(component: &str, allowed: &AllowedHosts, addr: SocketAddr, usage: SocketAddrUse) -> bool {
    match usage {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            let ephemeral = addr.port() == 0;
            if !ephemeral {
                tracing::warn!(component, %addr, "socket bind refused: only ephemeral ports (0) may be bound");
            }
            ephemeral
        }
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => {
            let ok = allowed.allows_socket(addr);
            if !ok {
                tracing::warn!(
                    component,
                    %addr,
                    ?usage,
                    "outbound socket refused: {addr} is not in allowed_outbound_hosts"
                );
            }
            ok
        }
        // Not logged: any peer could flood the log by sending datagrams.
        SocketAddrUse::UdpReceive => allowed.allows_socket(addr),
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => {
            tracing::warn!(component, %addr, "socket listen refused: components may not accept connections");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_connect_only_where_listed_and_never_listen() {
        let entries = ["127.0.0.1:5432".to_string(), "https://10.0.0.1".to_string()];
        let allowed = AllowedHosts::parse("f", &entries).expect("valid entries");
        let check = |addr: &str, usage| socket_allowed("c", &allowed, addr.parse().expect("address"), usage);
        assert!(check("127.0.0.1:5432", SocketAddrUse::TcpConnect));
        assert!(check("127.0.0.1:5432", SocketAddrUse::UdpSend));
        assert!(check("127.0.0.1:5432", SocketAddrUse::UdpReceive));
        assert!(!check("127.0.0.1:5433", SocketAddrUse::TcpConnect));
        // An https entry is for HTTP requests, not raw sockets.
        assert!(!check("10.0.0.1:443", SocketAddrUse::TcpConnect));
        assert!(check("0.0.0.0:0", SocketAddrUse::TcpBind));
        assert!(check("[::]:0", SocketAddrUse::UdpBind));
        assert!(!check("0.0.0.0:8080", SocketAddrUse::TcpBind));
        assert!(!check("0.0.0.0:0", SocketAddrUse::TcpListen));
        assert!(!check("127.0.0.1:5432", SocketAddrUse::TcpAccept));
    }
}
